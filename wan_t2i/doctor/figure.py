"""The report's figure, drawn with PIL (matplotlib is only a training dependency), four panels: per sigma, each
candidate's cosine similarity and relative error (what the model predicts), the student's error against its teacher,
and the width of each sampler's final latents.

`figure_series` returns the numbers each panel plots, so that what is drawn can be checked without reading pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from wan_t2i.diagnostics import HEALTHY_STD_RATIO
from wan_t2i.doctor.probe import PARAMETERIZATIONS, TIMESTEP_SCALES, CandidateFit, ParameterizationReport
from wan_t2i.doctor.report import DoctorReport

PANEL = (560, 340)  # width, height of one panel in pixels
TITLE_HEIGHT = 30
MARGIN = (58, 34, 16, 58)  # left, top, right, bottom: room for ticks, title and legend
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
GRID, AXIS, TEXT, BAND = "#dddddd", "#444444", "#222222", "#e6f4e6"
PANELS = ("cosine", "relative_error", "teacher", "samplers")  # row by row, two per row
Y_RANGES = {"cosine": (-1.0, 1.0), "relative_error": (0.0, 2.0), "samplers": (-2.0, 2.0)}  # samplers: log10 std
SIGMA_TICKS = (0, 0.25, 0.5, 0.75, 1)

Series = tuple[str, Sequence[float], Sequence[float]]  # label, xs, ys


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


class Axes:
    """Data -> pixel mapping of one panel of the figure."""

    def __init__(self, panel: str, x_range: tuple[float, float], y_range: tuple[float, float]):
        index = PANELS.index(panel)
        origin = (PANEL[0] * (index % 2), TITLE_HEIGHT + PANEL[1] * (index // 2))
        left, top = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
        self.box = (left, top, origin[0] + PANEL[0] - MARGIN[2], origin[1] + PANEL[1] - MARGIN[3])
        self.x_range, self.y_range = x_range, y_range

    def point(self, x: float, y: float) -> tuple[float, float]:
        """The pixel of (x, y); y is clipped to the panel."""
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        left, top, right, bottom = self.box
        y = min(max(y, y0), y1)
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)


def shown_fits(probe: ParameterizationReport) -> list[CandidateFit]:
    """The candidates drawn: each target with the sign that fits it best (the probe's order), on the scale of the
    best fit, then the best target on the other timestep scale."""
    best = probe.best
    shown = [
        next(f for f in probe.fits if (f.parameterization, f.timestep_scale) == (p, best.timestep_scale))
        for p in PARAMETERIZATIONS
    ]
    shown.sort(key=lambda f: f is not best)  # the best first: it gets the first colour
    other = probe.fit(best.parameterization, best.sign, next(s for s in TIMESTEP_SCALES if s != best.timestep_scale))
    return shown + [other]


def figure_series(report: DoctorReport) -> dict[str, list[Series]]:
    """What the cosine, relative-error and teacher panels plot, per panel (empty where not measured)."""
    series: dict[str, list[Series]] = {"cosine": [], "relative_error": [], "teacher": []}
    probe = report.parameterization
    if probe is not None:
        for fit in shown_fits(probe):
            series["cosine"].append((fit.name, probe.sigmas, fit.cosine))
            series["relative_error"].append((fit.name, probe.sigmas, fit.relative_error))
    comparison = report.teacher
    if comparison is not None:
        grid = f"sampling grid: {comparison.steps} steps, shift {comparison.shift:g}"
        series["teacher"] = [
            (grid, comparison.sigmas, comparison.relative_error),
            ("dense sigmas", comparison.dense_sigmas, comparison.dense_relative_error),
        ]
    return series


def axes_of(panel: str, report: DoctorReport) -> Axes:
    """The axes of one panel: sigma in [0, 1] across (sampler slots for "samplers"), its y range up the side."""
    if panel == "teacher":
        errors = [y for _, _, ys in figure_series(report)["teacher"] for y in ys if math.isfinite(y)]
        top = min(2.0, max(0.2, math.ceil(1.1 * max(errors) / 0.2) * 0.2)) if errors else 1.0  # ticks of 0.05 up
        return Axes(panel, (0.0, 1.0), (0.0, top))
    return Axes(panel, (0.0, 1.0), Y_RANGES[panel])


def _frame(draw: ImageDraw.ImageDraw, axes: Axes, title: str, x_ticks, y_ticks, y_format: str = "{:g}") -> None:
    left, top, right, bottom = axes.box
    draw.text((left, top - 26), title, fill=TEXT, font=_font(15))
    for y in y_ticks:
        _, py = axes.point(axes.x_range[0], y)
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((left - 6, py), y_format.format(y), fill=TEXT, font=_font(11), anchor="rm")
    for x in x_ticks:
        px, _ = axes.point(x, axes.y_range[0])
        draw.line([(px, top), (px, bottom)], fill=GRID)
        draw.text((px, bottom + 4), f"{x:g}", fill=TEXT, font=_font(11), anchor="ma")
    draw.rectangle(axes.box, outline=AXIS)


def _lines(draw: ImageDraw.ImageDraw, axes: Axes, series: Sequence[Series]) -> None:
    """Each series as a line with dots, in COLORS order; the legend below the panel."""
    left, _, _, bottom = axes.box
    for i, (label, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        draw.text((left + 8 + 240 * (i % 2), bottom + 20 + 13 * (i // 2)), label, fill=color, font=_font(11))
        points = [axes.point(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
    draw.text((left - 6, bottom + 9), "sigma", fill=TEXT, font=_font(11), anchor="ra")


def _note(draw: ImageDraw.ImageDraw, axes: Axes, text: str) -> None:
    left, top, right, bottom = axes.box
    draw.text(((left + right) / 2, (top + bottom) / 2), text, fill=AXIS, font=_font(13), anchor="mm")


def _curve_panel(draw: ImageDraw.ImageDraw, panel: str, report: DoctorReport) -> None:
    titles = {
        "cosine": "What the model predicts: cosine similarity per sigma",
        "relative_error": "What the model predicts: relative error per sigma",
        "teacher": "Student vs teacher: relative error per sigma",
    }
    axes = axes_of(panel, report)
    low, high = axes.y_range
    _frame(draw, axes, titles[panel], SIGMA_TICKS, [round(low + (high - low) * k / 4, 2) for k in range(5)])
    series = figure_series(report)[panel]
    if not series:
        skipped = [c.lines[0] for c in report.checks if c.name == panel and c.status == "skipped"]
        _note(draw, axes, f"not measured: {(skipped or ['no probe'])[0]}")
        return
    _lines(draw, axes, series)


def _sampler_panel(draw: ImageDraw.ImageDraw, report: DoctorReport) -> None:
    """Final latent std per sampler on a log scale, against the band the VAE decodes cleanly."""
    axes = axes_of("samplers", report)
    _frame(draw, axes, "Samplers: final latent std / VAE's", [], [-2, -1, 0, 1, 2], "1e{:+.0f}")
    if not report.samplers:
        _note(draw, axes, "not measured")
        return
    low, high = (math.log10(r) for r in HEALTHY_STD_RATIO)
    (x0, y_high), (x1, y_low) = axes.point(0, high), axes.point(1, low)
    draw.rectangle([x0 + 1, y_high, x1 - 1, y_low], fill=BAND)
    width = 1.0 / len(report.samplers)
    for i, outcome in enumerate(report.samplers.values()):
        ratio = outcome.final_std if math.isfinite(outcome.final_std) and outcome.final_std > 0 else 1e3
        (bx0, by), (bx1, base) = axes.point(width * (i + 0.2), math.log10(ratio)), axes.point(width * (i + 0.8), 0)
        color = COLORS[0] if HEALTHY_STD_RATIO[0] <= ratio <= HEALTHY_STD_RATIO[1] else COLORS[1]
        draw.rectangle([bx0, min(by, base), bx1, max(by, base)], fill=color)
        draw.text(((bx0 + bx1) / 2, axes.box[3] + 4), outcome.sampler, fill=TEXT, font=_font(10), anchor="ma")
        draw.text(((bx0 + bx1) / 2, min(by, base) - 2), f"{ratio:.2g}x", fill=TEXT, font=_font(10), anchor="md")


def render_figure(report: DoctorReport) -> Image.Image:
    """The report's figure as an RGB PIL image: the panels of PANELS, two per row."""
    rows = math.ceil(len(PANELS) / 2)
    image = Image.new("RGB", (PANEL[0] * 2, TITLE_HEIGHT + PANEL[1] * rows), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), f"Checkpoint doctor: {report.model}", fill=TEXT, font=_font(16))
    for panel in PANELS:
        if panel == "samplers":
            _sampler_panel(draw, report)
        else:
            _curve_panel(draw, panel, report)
    return image
