"""What each sampler does with this model, measured: a short seeded run per sampler from the same noise, and the
final latents' width against what the VAE decodes (`wan_t2i.diagnostics.verdict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from wan_t2i.diagnostics import verdict
from wan_t2i.doctor.probe import ModelFn
from wan_t2i.samplers import SAMPLERS, sample


@dataclass
class SamplerOutcome:
    sampler: str
    final_std: float  # of the final normalised latents; the VAE expects about 1
    final_mean: float
    verdict: str  # wan_t2i.diagnostics.verdict of those latents

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def try_samplers(
    model_fn: ModelFn,
    noise: torch.Tensor,
    *,
    steps: int,
    shift: float,
    seed: int = 0,
    samplers: tuple[str, ...] = SAMPLERS,
) -> dict[str, SamplerOutcome]:
    """Sample `model_fn` (unguided) with each sampler from `noise` (B, C, 1, h, w) and score the final latents."""
    outcomes = {}
    for name in samplers:
        generator = torch.Generator().manual_seed(seed)  # flow_lcm's fresh noise at each step
        latents = sample(model_fn, noise, sampler=name, steps=steps, shift=shift, generator=generator)
        mean, std = latents.mean().item(), latents.std().item()
        outcomes[name] = SamplerOutcome(name, final_std=std, final_mean=mean, verdict=verdict(mean, std))
    return outcomes
