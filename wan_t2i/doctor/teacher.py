"""Student against teacher: how far the student's prediction is from its teacher's at each sigma of the sampling grid,
and which shift would put the steps where the two agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.doctor.probe import ModelFn
from wan_t2i.schedules import flow_schedule

# Besides the sampling grid, a fixed set of sigmas covers [0, 1] so that other shifts' grids can be scored from it.
DENSE_SIGMAS = tuple(np.round(np.linspace(0.05, 0.95, 10), 3))
OTHER_SHIFTS = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0)
GOOD_AGREEMENT = 0.1  # relative error at or below which the student follows its teacher closely
POOR_AGREEMENT = 0.5  # above it the student's prediction is mostly its own


@dataclass
class TeacherComparison:
    """Relative error |student - teacher| / |teacher| of the predictions, at the same x and t."""

    steps: int
    shift: float
    timesteps: list[int]  # the sampling grid's, one per step
    sigmas: list[float]
    relative_error: list[float]  # per step of the grid
    dense_sigmas: list[float]
    dense_relative_error: list[float]
    mean_error_by_shift: dict[str, float]  # shift -> mean error over that shift's grid (interpolated), same steps
    best_shift: float
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _relative_error(student_fn: ModelFn, teacher_fn: ModelFn, x: torch.Tensor, t: torch.Tensor) -> float:
    student, teacher = student_fn(x, t).double(), teacher_fn(x, t).double()
    return float((student - teacher).norm() / teacher.norm().clamp_min(1e-30))


def _grid(steps: int, shift: float) -> tuple[list[int], list[float]]:
    timesteps, sigmas = flow_schedule(steps, shift)
    return timesteps.tolist(), sigmas[:-1].tolist()  # the last sigma is the final 0, where no model runs


def compare_with_teacher(
    student_fn: ModelFn,
    teacher_fn: ModelFn,
    clean_latents: torch.Tensor,
    *,
    steps: int,
    shift: float,
    seed: int = 0,
    other_shifts: Sequence[float] = OTHER_SHIFTS,
) -> TeacherComparison:
    """Measure the student's error against the teacher at every step of the flow grid for `steps` and `shift`.

    Args:
        student_fn, teacher_fn: `(x, t) -> prediction`, t (B,) on Wan's 0-1000 scale (a two-expert teacher routes
            by t itself).
        clean_latents: (B, C, 1, h, w) normalised clean latents; x = (1 - sigma) z0 + sigma eps with seeded eps.
        steps, shift: the sampling grid (`wan_t2i.samplers.flow_schedule`).
        other_shifts: shifts whose grids of the same length are scored from the measured curve (interpolated).

    Returns:
        A TeacherComparison, with the per-step errors and the mean error each shift's grid would see.
    """
    clean = clean_latents.float()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).to(clean.device)

    def error_at(sigma: float, t: float) -> float:
        x = (1 - sigma) * clean + sigma * noise
        return _relative_error(student_fn, teacher_fn, x, torch.full((len(x),), t, device=x.device))

    timesteps, sigmas = _grid(steps, shift)
    errors = [error_at(s, t) for s, t in zip(sigmas, timesteps, strict=True)]
    dense = [error_at(s, s * NUM_TRAIN_TIMESTEPS) for s in DENSE_SIGMAS]
    curve_sigmas, curve_errors = zip(
        *sorted(zip(sigmas + list(DENSE_SIGMAS), errors + dense, strict=True)), strict=True
    )
    by_shift = {}
    for other in sorted({float(shift), *map(float, other_shifts)}):
        grid = _grid(steps, other)[1]
        by_shift[f"{other:g}"] = float(np.mean(np.interp(grid, curve_sigmas, curve_errors)))
    best = min(by_shift, key=by_shift.get)
    mean = float(np.mean(errors))
    worst = int(np.argmax(errors))
    verdict = (
        f"student vs teacher: relative error {mean:.2f} on average over the {steps} steps of shift {shift:g} "
        f"(from {errors[0]:.2f} at t={timesteps[0]} to {errors[-1]:.2f} at t={timesteps[-1]}; "
        f"worst {errors[worst]:.2f} at t={timesteps[worst]})"
    )
    if mean <= GOOD_AGREEMENT:
        verdict += ": the student follows its teacher closely"
    elif mean > POOR_AGREEMENT:
        verdict += ": the student's predictions are mostly its own, not its teacher's"
    if float(best) != float(shift) and by_shift[best] < 0.9 * by_shift[f"{float(shift):g}"]:
        verdict += (
            f"; shift {best} would put the steps where the student is closer to the teacher (mean {by_shift[best]:.2f} "
            f"against {by_shift[f'{float(shift):g}']:.2f}, interpolated)"
        )
    return TeacherComparison(
        steps=steps,
        shift=float(shift),
        timesteps=timesteps,
        sigmas=sigmas,
        relative_error=errors,
        dense_sigmas=[float(s) for s in DENSE_SIGMAS],
        dense_relative_error=dense,
        mean_error_by_shift=by_shift,
        best_shift=float(best),
        verdict=verdict,
    )
