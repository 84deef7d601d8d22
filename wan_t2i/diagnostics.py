"""What happened to the latents: per-step statistics and a plain-words verdict against what the VAE expects."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Normalised latents (z - latents_mean) / latents_std are what the VAE was fitted to decode: about N(0, 1) per
# channel. Outside this band of std ratios the decoded image degrades visibly (measured on the demo model).
HEALTHY_STD_RATIO = (0.6, 1.6)


@dataclass
class Diagnostics:
    """Latent statistics of one sampler's run, in the VAE's normalised latent space."""

    t: list[int] = field(default_factory=list)  # model timestep per step
    latent_mean: list[float] = field(default_factory=list)  # of x after each step
    latent_std: list[float] = field(default_factory=list)
    x0_std: list[float] = field(default_factory=list)  # of the predicted clean latents at each step
    final_mean: float = math.nan
    final_std: float = math.nan
    expected_std: float = 1.0
    std_ratio: float = math.nan
    verdict: str = ""
    expert_handover: int | None = None  # two-expert models: the first step on the low-noise expert (= steps: none)
    _steps: list[torch.Tensor] = field(default_factory=list, repr=False)

    def record_step(self, t: torch.Tensor, x: torch.Tensor, x0_pred: torch.Tensor) -> None:
        """Keep this step's statistics; they stay tensors until `finish` so that a GPU run never waits on them."""
        self._steps.append(torch.stack([t.float().reshape(()), x.mean(), x.std(), x0_pred.std()]))

    def std_so_far(self) -> list[float]:
        """The latent std after each step taken so far; it waits for the device, so a live plot reads it every few
        steps, not every step."""
        if not self._steps:
            return list(self.latent_std)
        return torch.stack(self._steps)[:, 2].cpu().tolist()

    def finish(self, latents: torch.Tensor) -> Diagnostics:
        """Score the final latents (B, C, F, H, W) and write the verdict."""
        if self._steps:
            t, mean, std, x0_std = torch.stack(self._steps).cpu().T.tolist()
            self.t, self.latent_mean, self.latent_std, self.x0_std = [int(v) for v in t], mean, std, x0_std
            self._steps = []
        self.final_mean, self.final_std = latents.mean().item(), latents.std().item()
        self.std_ratio = self.final_std / self.expected_std
        self.verdict = verdict(self.final_mean, self.final_std, self.expected_std)
        return self

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}


def verdict(mean: float, std: float, expected_std: float = 1.0) -> str:
    """One line, in plain words, on whether latents with this mean and std will decode to an image."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return "latents contain NaN or infinity: the sampler diverged and the image will be blank or noise"
    ratio = std / expected_std
    low, high = HEALTHY_STD_RATIO
    if ratio > high:
        return (
            f"latents are {ratio:.1f}x wider than the VAE expects: the decoded image will be garbage (noise or smears)"
        )
    if ratio < low:
        return f"latents are only {ratio:.2f}x as wide as the VAE expects: the image will be flat and washed out"
    if abs(mean) > 0.5 * expected_std:
        return f"latents are offset by {mean:+.2f} (VAE expects about 0): expect a colour cast"
    return f"latents match what the VAE expects (std {ratio:.2f}x): the image should decode cleanly"
