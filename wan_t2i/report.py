"""What a generation shows beside its images: the latent-health plot's rows, a Markdown summary, the API's JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from wan_t2i.diagnostics import HEALTHY_STD_RATIO
from wan_t2i.pipeline import Generation


def latent_health(generation: Generation, names: Sequence[str]) -> pd.DataFrame:
    """Latent std per step for each branch, plus the band the VAE decodes cleanly, as rows for `gr.LinePlot`."""
    rows = []
    for name, result in zip(names, generation.results.values(), strict=True):
        d = result.diagnostics
        steps = enumerate(zip(d.t, d.latent_std, strict=True))
        rows += [{"step": i + 1, "t": t, "latent std": std, "series": name} for i, (t, std) in steps]
    first = next(iter(generation.results.values())).diagnostics
    for label, value in latent_health_bands(generation).items():
        rows += [{"step": i + 1, "t": t, "latent std": value, "series": label} for i, t in enumerate(first.t)]
    return pd.DataFrame(rows, columns=["step", "t", "latent std", "series"])


def latent_health_bands(generation: Generation) -> dict[str, float]:
    """The edges of the std band the VAE decodes cleanly (`HEALTHY_STD_RATIO` x the expected std), by series name."""
    expected = next(iter(generation.results.values())).diagnostics.expected_std
    low, high = (ratio * expected for ratio in HEALTHY_STD_RATIO)
    return {f"VAE band low ({low:g})": low, f"VAE band high ({high:g})": high}


def summary(generation: Generation, names: Sequence[str]) -> str:
    """Markdown: each branch's time and verdict, then the seed and the stage timings."""
    lines = []
    for name, result in zip(names, generation.results.values(), strict=True):
        d = result.diagnostics
        lines.append(
            f"- **{name}** · {result.seconds:.2f} s · final latent std {d.final_std:.2f} "
            f"(VAE expects {d.expected_std:.2f}): {d.verdict}"
        )
    t = generation.timings
    lines.append(
        f"\nSeed **{generation.seed}** · encode {t['encode']:.2f} s · denoise {t['denoise']:.2f} s · "
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
