"""Timestep grids: which noise levels a sampler visits, and the integer timesteps the model is given at each.

A grid is a pair (timesteps (n,) int64, sigmas (n + 1,) float32 ending at 0): step i gives the model t = timesteps[i]
and moves x from sigmas[i] to sigmas[i + 1]. Plain maths on linspace, each grid traced to the Wan file it reproduces.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.values import is_integer

MAX_STEPS = NUM_TRAIN_TIMESTEPS

# wan/utils/fm_solvers_unipc.py computes its unshifted grid's first sigma as `float32(1 - 1/1000).item()`;
# starting from this exact float (not 0.999 in float64) reproduces Wan's sigmas bit for bit.
WAN_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))


def check_timesteps(timesteps: Any) -> tuple[int, ...]:
    """Explicit model timesteps as a tuple of ints; ValueError unless 1 to 1000 of them, strictly decreasing, each in
    1..1000.

    t = 0 is refused: it is the clean image, where every grid ends by itself (a step from sigma 0 to 0 has no
    log-SNR step for UniPC or DPM++ to take).
    """
    try:
        values = tuple(timesteps)
    except TypeError:
        raise ValueError(
            f"timesteps must be a list of integers such as 1000, 750, 500, 250, got {timesteps!r}"
        ) from None
    if not 1 <= len(values) <= MAX_STEPS:
        raise ValueError(f"timesteps must list 1 to {MAX_STEPS} model timesteps, got {len(values)}")
    for t in values:
        if not is_integer(t) or not 1 <= t <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(
                f"timesteps must be integers from 1 to {NUM_TRAIN_TIMESTEPS} (sampling ends at t = 0 by itself), "
                f"got {t!r}"
            )
    for t, t_next in pairwise(values):
        if t_next >= t:
            raise ValueError(f"timesteps must be strictly decreasing, got {t} then {t_next}")
    return tuple(int(t) for t in values)


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Wan's timestep shift sigma' = shift sigma / (1 + (shift - 1) sigma) (SD3, Esser et al. 2024, eq. 23)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def grid_of_sigmas(sigmas: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 sigmas (n,) -> timesteps truncated from sigma * 1000 (as Wan's and diffusers' set_timesteps make
    them) and float32 sigmas with the final 0 appended."""
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    return timesteps, torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))


def flow_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's flow UniPC grid: integer timesteps (steps,) and sigmas (steps + 1,) ending at 0, shift applied once.

    The unshifted grid is linspace(0.999, 0, steps + 1) without its 0 (wan/utils/fm_solvers_unipc.py), computed in
    float64 and truncated to integer timesteps exactly as diffusers' UniPCMultistepScheduler.set_timesteps does, so
    that the model sees the timesteps Wan passes (tested against Wan's own schedules).
    """
    sigmas = shift_sigmas(np.linspace(WAN_SIGMA_MAX, 0.0, steps + 1)[:-1], shift)
    if abs(sigmas[0] - 1) < 1e-6:  # diffusers keeps sigma < 1 so that log(alpha) stays finite in UniPC's update
        sigmas[0] -= 1e-6
    return grid_of_sigmas(sigmas)


def sampling_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's dpm++ grid, `get_sampling_sigmas(steps, shift)` (wan/utils/fm_solvers.py): linspace(1, 0, steps + 1)
    without its 0, shifted once; it starts at sigma 1.0 and t = 1000, where UniPC's starts at 999."""
    return grid_of_sigmas(shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:steps], shift))


def timesteps_schedule(timesteps: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit model timesteps (already checked), given to the model as they are, at sigma = t / 1000."""
    sigmas = np.asarray(timesteps, dtype=np.float64) / NUM_TRAIN_TIMESTEPS
    return torch.tensor(timesteps, dtype=torch.int64), torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))


def legacy_ddim_timesteps(steps: int) -> torch.Tensor:
    """The original run_inference.py grid: `torch.linspace(999, 0, N).long()`, ending at t = 0."""
    return torch.linspace(NUM_TRAIN_TIMESTEPS - 1, 0, steps, dtype=torch.long)
