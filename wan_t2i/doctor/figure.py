"""The report's figure, drawn with PIL (matplotlib is only a training dependency): the fit of each candidate per
sigma, the student's error against its teacher per sigma, and the width of each sampler's final latents."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from wan_t2i.diagnostics import HEALTHY_STD_RATIO
from wan_t2i.doctor.report import DoctorReport

PANEL = (520, 340)  # width, height of one panel in pixels
MARGIN = (58, 34, 16, 44)  # left, top, right, bottom: room for ticks, title and legend
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
GRID, AXIS, TEXT, BAND = "#dddddd", "#444444", "#222222", "#e6f4e6"
SKILL_RANGE = (-1.0, 1.0)  # skill below -1 is off the chart: it only says "much worse than a scaled copy of x_t"

Series = tuple[str, Sequence[float], Sequence[float]]  # label, xs, ys


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


class _Axes:
    """Data -> pixel mapping of one panel."""

    def __init__(self, origin: tuple[int, int], x_range: tuple[float, float], y_range: tuple[float, float]):
        left, top = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
        self.box = (left, top, origin[0] + PANEL[0] - MARGIN[2], origin[1] + PANEL[1] - MARGIN[3])
        self.x_range, self.y_range = x_range, y_range

    def point(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        left, top, right, bottom = self.box
        y = min(max(y, y0), y1)  # clipped to the panel
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)


def _frame(draw: ImageDraw.ImageDraw, axes: _Axes, title: str, x_ticks, y_ticks, y_format: str = "{:g}") -> None:
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


def _lines(draw: ImageDraw.ImageDraw, axes: _Axes, series: Sequence[Series], x_label: str) -> None:
    left, _, _, bottom = axes.box
    for i, (label, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        points = [axes.point(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
        draw.text((left + 8 + 225 * (i % 2), bottom + 18 + 13 * (i // 2)), label, fill=color, font=_font(11))
    draw.text((axes.box[2], bottom + 4), x_label, fill=TEXT, font=_font(11), anchor="ra")


def _note(draw: ImageDraw.ImageDraw, axes: _Axes, text: str) -> None:
    left, top, right, bottom = axes.box
    draw.text(((left + right) / 2, (top + bottom) / 2), text, fill=AXIS, font=_font(13), anchor="mm")


def _skill_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], report: DoctorReport) -> None:
    axes = _Axes(origin, (0.0, 1.0), SKILL_RANGE)
    _frame(draw, axes, "What the model predicts: skill per sigma", [0, 0.25, 0.5, 0.75, 1], [-1, -0.5, 0, 0.5, 1])
    probe = report.parameterization
    if probe is None:
        _note(draw, axes, "not measured")
        return
    scale = probe.best.timestep_scale
    shown = [probe.fit(name, 1, scale) for name in ("flow_velocity", "epsilon", "x0")]
    if probe.best not in shown:
        shown.append(probe.best)
    series = [(f"{fit.name}, miscal. {fit.miscalibration:.2f}", probe.sigmas, fit.skill) for fit in shown]
    _lines(draw, axes, series, "sigma")
    _, zero = axes.point(0, 0)
    draw.text((axes.box[0] + 4, zero - 14), "0 = a scaled copy of x_t", fill=AXIS, font=_font(10))


def _teacher_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], report: DoctorReport) -> None:
    comparison = report.teacher
    top = 1.0
    if comparison is not None:
        top = max(0.1, min(2.0, 1.1 * max(comparison.relative_error + comparison.dense_relative_error)))
    axes = _Axes(origin, (0.0, 1.0), (0.0, top))
    ticks = [round(top * k / 4, 2) for k in range(5)]
    _frame(draw, axes, "Student vs teacher: relative error per sigma", [0, 0.25, 0.5, 0.75, 1], ticks)
    if comparison is None:
        _note(draw, axes, "not measured (load the teacher's transformer: --with_teacher)")
        return
    series = [
        (f"grid of {comparison.steps} steps, shift {comparison.shift:g}", comparison.sigmas, comparison.relative_error),
        ("dense", comparison.dense_sigmas, comparison.dense_relative_error),
    ]
    _lines(draw, axes, series, "sigma")


def _sampler_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], report: DoctorReport) -> None:
    """Final latent std per sampler on a log scale, against the band the VAE decodes cleanly."""
    axes = _Axes(origin, (0.0, 1.0), (-2.0, 2.0))  # log10 of the std ratio
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
    """The report's figure as an RGB PIL image: three panels side by side."""
    panels = (_skill_panel, _teacher_panel, _sampler_panel)
    image = Image.new("RGB", (PANEL[0] * len(panels), PANEL[1] + 30), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), f"Checkpoint doctor: {report.model}", fill=TEXT, font=_font(16))
    for i, panel in enumerate(panels):
        panel(draw, (PANEL[0] * i, 30), report)
    return image
