"""Which Wan 2.2 expert is which, told by behaviour: the high-noise expert is the better predictor above the
boundary (t >= 875), the low-noise expert below it. Folder names can be swapped by a conversion script; this cannot."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from wan_t2i.constants import BOUNDARY_RATIO
from wan_t2i.doctor.probe import ModelFn, probe_parameterization

# Sigmas on both sides of Wan 2.2's boundary (sigma 0.875): four below, three above.
EXPERT_SIGMAS = (0.2, 0.4, 0.6, 0.8, 0.9, 0.94, 0.98)
MIN_ADVANTAGE = 0.05  # of mean skill, high side minus low side, for either expert to be named


@dataclass
class ExpertReport:
    """Per-sigma skill of each expert (as a flow-velocity predictor, t on 0-1000) and which one is the high-noise."""

    names: tuple[str, str]  # the two experts' folder names, in the order given (diffusers: transformer, transformer_2)
    sigmas: list[float]
    skill: tuple[list[float], list[float]]  # per expert, per sigma
    boundary_ratio: float
    high_noise: str | None  # the name of the expert that behaves as the high-noise one; None when it cannot be told
    as_named: bool | None  # True when the first name is the high-noise one, as diffusers and Wan load them
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def identify_experts(
    first_fn: ModelFn,
    second_fn: ModelFn,
    clean_latents: torch.Tensor,
    *,
    names: tuple[str, str] = ("transformer", "transformer_2"),
    boundary_ratio: float = BOUNDARY_RATIO,
    seed: int = 0,
) -> ExpertReport:
    """Tell which of two experts is the high-noise one by how well each predicts above and below the boundary.

    Args:
        first_fn, second_fn: `(x, t) -> velocity` of each expert alone, as `probe_parameterization` takes them.
        clean_latents: (B, C, 1, h, w) normalised clean latents.
        names: what the two are called where they were loaded from; the first should be the high-noise expert.
        boundary_ratio: the high-noise expert runs while sigma >= this (Wan 2.2 A14B: 0.875).

    Returns:
        An ExpertReport; `high_noise` is None when the skill difference flips sides by less than MIN_ADVANTAGE.
    """
    skills = []
    for fn in (first_fn, second_fn):
        report = probe_parameterization(fn, clean_latents, sigmas=EXPERT_SIGMAS, seed=seed, tracking_sigmas=())
        skills.append(report.fit("flow_velocity").skill)
    high = [i for i, s in enumerate(EXPERT_SIGMAS) if s >= boundary_ratio]
    low = [i for i, s in enumerate(EXPERT_SIGMAS) if s < boundary_ratio]

    def advantage(indices: list[int]) -> float:
        """Mean skill of the first expert over the second's at these sigmas."""
        return sum(skills[0][i] - skills[1][i] for i in indices) / len(indices)

    # The first is the high-noise expert when it is relatively better above the boundary than below it.
    lead = advantage(high) - advantage(low)
    numbers = (
        f"{names[0]} - {names[1]} skill: {advantage(high):+.2f} at sigma >= {boundary_ratio:g}, "
        f"{advantage(low):+.2f} below"
    )
    if lead >= MIN_ADVANTAGE:
        high_noise, as_named = names[0], True
        verdict = (
            f"{names[0]} behaves as the high-noise expert and {names[1]} as the low-noise one, as named ({numbers})"
        )
    elif lead <= -MIN_ADVANTAGE:
        high_noise, as_named = names[1], False
        verdict = (
            f"the experts are swapped: {names[1]} behaves as the high-noise expert ({numbers}); it is the one that "
            f"must run while t >= {boundary_ratio * 1000:g}"
        )
    else:
        high_noise = as_named = None
        verdict = f"cannot tell the experts apart by behaviour ({numbers})"
    return ExpertReport(
        names=names,
        sigmas=list(EXPERT_SIGMAS),
        skill=(skills[0], skills[1]),
        boundary_ratio=boundary_ratio,
        high_noise=high_noise,
        as_named=as_named,
        verdict=verdict,
    )
