"""What a generation shows beside its images: the latent-health figure, a verdict badge per image, a Markdown
summary, the API's JSON."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from wan_t2i.diagnostics import HEALTHY_STD_RATIO, Diagnostics
from wan_t2i.pipeline import Generation

SERIES_COLORS = ("#dc2626", "#2563eb")  # the first branch red, the second blue; one branch alone is blue
BAND_COLOR = "#16a34a"
FEW_STEPS = 8  # below this many steps a flow sampler's image is a blurry average even when its latents are in range


def ratio_text(ratio: float) -> str:
    """A std ratio as people read it: "46x", "1.6x", "0.12x"."""
    if not math.isfinite(ratio):
        return "NaN"
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x" if ratio < 1 else f"{ratio:.1f}x"


def latent_health_figure(generation: Generation, names: Sequence[str]) -> Figure:
    """The latent std per step over the expected std, for each branch of a finished generation (`health_figure`)."""
    results = list(generation.results.values())
    series = [
        (name, std_ratios(r.diagnostics.latent_std, r.diagnostics.expected_std))
        for name, r in zip(names, results, strict=True)
    ]
    return health_figure(series, max((len(r.diagnostics.latent_std) for r in results), default=1))


def std_ratios(latent_std: Sequence[float], expected_std: float = 1.0) -> list[float]:
    """Each step's latent std over what the VAE expects; NaN where a step diverged."""
    return [std / expected_std if math.isfinite(std) else math.nan for std in latent_std]


def health_figure(series: Sequence[tuple[str, Sequence[float]]], steps: int) -> Figure:
    """The latent std ratio per step, on a log axis, against the shaded band the VAE decodes cleanly.

    One line with markers per (name, ratios) of `series`, in its fixed colour (`SERIES_COLORS`, by position), labelled
    at its end with its name and last ratio ("legacy_ddim: 46x"); the x axis runs from noise (step 1) to image (step
    `steps`), so that a render's live figure fills in from the left as its steps arrive.
    """
    figure = Figure(figsize=(5.6, 3.6), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    low, high = HEALTHY_STD_RATIO
    ax.axhspan(low, high, color=BAND_COLOR, alpha=0.15, lw=0)
    ax.text(0.01, high, " VAE decodes cleanly", transform=ax.get_yaxis_transform(),
            va="top", ha="left", color=BAND_COLOR, fontsize=11, fontweight="bold")  # fmt: skip
    colors = SERIES_COLORS[-len(series) :] if series else ()
    ratios = []
    for (name, y), color in zip(series, colors, strict=True):
        x = list(range(1, len(y) + 1))
        ax.plot(x, y, color=color, marker="o", markersize=4, lw=2, label=name)
        ratios += [v for v in y if math.isfinite(v) and v > 0]
        if y and math.isfinite(y[-1]) and y[-1] > 0:
            ax.annotate(f"{name}: {ratio_text(y[-1])}", (x[-1], y[-1]), xytext=(-4, 6), textcoords="offset points",
                        ha="right", va="bottom", color=color, fontsize=11, fontweight="bold")  # fmt: skip
    ax.set_yscale("log")
    bottom, top = min([low, *ratios]) / 1.5, max([high, *ratios]) * 2
    ax.set_ylim(bottom, top)
    ax.set_xlim(0.5, max(steps, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ratio_text(v)))  # 1x, 10x, not 10^1
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step (noise → image)", fontsize=11)
    ax.set_ylabel("latent std / what the VAE expects", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.grid(True, which="major", alpha=0.3)  # no legend: each line carries its name at its end
    return figure


def badge(diagnostics: Diagnostics) -> str:
    """HTML: a red or green verdict for one image ("latents 46x too wide: the VAE cannot decode this")."""
    d = diagnostics
    low, high = HEALTHY_STD_RATIO
    ratio = d.std_ratio
    if not (math.isfinite(d.final_mean) and math.isfinite(ratio)):
        kind, text = "bad", "latents diverged (NaN or infinity): nothing to decode"
    elif ratio > high:
        kind, text = "bad", f"latents {ratio_text(ratio)} too wide: the VAE cannot decode this"
    elif ratio < low:
        kind, text = "bad", f"latents only {ratio_text(ratio)} as wide as expected: flat and washed out"
    elif abs(d.final_mean) > 0.5 * d.expected_std:
        kind, text = "warn", f"latents offset by {d.final_mean:+.2f}: expect a colour cast"
    else:
        kind, text = "good", f"latents in range ({ratio_text(ratio)}): the VAE can decode this"
    mark = {"bad": "✗", "warn": "!", "good": "✓"}[kind]
    return f'<div class="verdict verdict-{kind}" role="status">{mark} {html.escape(text)}</div>'


def summary(generation: Generation, names: Sequence[str]) -> str:
    """Markdown: each branch's verdict, what the verdict measures, then the seed and one set of stage timings.

    The branches render in one batch, so there is one time for all of them, not one each.
    """
    lines = []
    for name, result in zip(names, generation.results.values(), strict=True):
        d = result.diagnostics
        lines.append(
            f"- **{name}** · final latent std {d.final_std:.2f} (VAE expects {d.expected_std:.2f}): {d.verdict}"
        )
    lines.append("\nThe verdict measures the latents' range, not the image's quality.")
    steps = max(len(r.diagnostics.latent_std) for r in generation.results.values())
    if steps < FEW_STEPS:
        lines[-1] += f" With {steps} step{'s' * (steps != 1)}, expect a blurry average even in range: try 20."
    t = generation.timings
    lines.append(
        f"\nSeed **{generation.seed}** · one batch: encode {t['encode']:.2f} s · denoise {t['denoise']:.2f} s · "
        f"decode {t['decode']:.2f} s · total {t['total']:.2f} s"
    )
    return "\n".join(lines)


def details(generation: Generation) -> dict[str, Any]:
    """What the API returns beside the images: seed, timings, and per branch its parameters and diagnostics."""
    results = {}
    for label, r in generation.results.items():
        d = r.diagnostics
        results[label] = {
            "sampler": r.sampler,
            "model": r.model,
            "seconds": r.seconds,
            "verdict": d.verdict,
            "final_mean": _finite(d.final_mean),
            "final_std": _finite(d.final_std),
            "expected_std": d.expected_std,
            "std_ratio": _finite(d.std_ratio),
            "t": d.t,
            "latent_std": [_finite(v) for v in d.latent_std],
            "parameters": r.parameters,
        }
    return {"seed": generation.seed, "timings": generation.timings, "results": results}


def _finite(value: Any) -> Any:
    """NaN and infinity are not JSON: None instead."""
    return value if not isinstance(value, float) or math.isfinite(value) else None
