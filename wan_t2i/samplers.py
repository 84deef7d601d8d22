"""Samplers for Wan flow-matching models, and the legacy DDIM loop that broke the original student.

Every sampler is a small solver with a timestep grid and a `step`; all of them run through one loop
(`sample_many`), so an A/B comparison differs in exactly one thing: the update rule.

Conventions (Wan's): latents `x`, noise level `sigma` in [0, 1] with `x_sigma = (1 - sigma) x0 + sigma eps`, model
timesteps `t = sigma * 1000` on the 0-1000 training scale, model prediction `v = eps - x0` (flow prediction).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler

from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.values import is_finite_number, is_integer

SAMPLERS = ("flow_unipc", "flow_euler", "legacy_ddim")
MAX_STEPS = NUM_TRAIN_TIMESTEPS

# wan/utils/fm_solvers_unipc.py computes its unshifted grid's first sigma as `float32(1 - 1/1000).item()`;
# starting from this exact float (not 0.999 in float64) reproduces Wan's sigmas bit for bit.
WAN_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchModelFn = Callable[[torch.Tensor, torch.Tensor, list[Hashable]], torch.Tensor]  # (x, t, model of each row)
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def check_sampler(sampler: str) -> None:
    """Raise ValueError for a sampler name that is not one of `SAMPLERS`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def validate_sampling_args(sampler: str, steps: int, shift: float) -> None:
    """Raise ValueError naming the bad value and the allowed range."""
    check_sampler(sampler)
    if not is_integer(steps) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    if not is_finite_number(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Wan's timestep shift sigma' = shift sigma / (1 + (shift - 1) sigma) (SD3, Esser et al. 2024, eq. 23)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's flow UniPC grid: integer timesteps (steps,) and sigmas (steps + 1,) ending at 0, shift applied once.

    The unshifted grid is linspace(0.999, 0, steps + 1) without its 0 (wan/utils/fm_solvers_unipc.py), computed in
    float64 and truncated to integer timesteps exactly as diffusers' UniPCMultistepScheduler.set_timesteps does, so
    that the model sees the timesteps Wan passes (tested against Wan's own schedules).
    """
    sigmas = shift_sigmas(np.linspace(WAN_SIGMA_MAX, 0.0, steps + 1)[:-1], shift)
    if abs(sigmas[0] - 1) < 1e-6:  # diffusers keeps sigma < 1 so that log(alpha) stays finite in UniPC's update
        sigmas[0] -= 1e-6
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    return timesteps, torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))


def legacy_ddim_timesteps(steps: int) -> torch.Tensor:
    """The original run_inference.py grid: `torch.linspace(999, 0, N).long()`, ending at t = 0."""
    return torch.linspace(NUM_TRAIN_TIMESTEPS - 1, 0, steps, dtype=torch.long)


def wan_unipc_scheduler(steps: int, shift: float) -> UniPCMultistepScheduler:
    """diffusers' UniPC set up as Wan's FlowUniPCMultistepScheduler (order 2, bh2, flow prediction, final sigma 0).

    diffusers' own flow grid starts at sigma 1.0; Wan's starts at 0.999, so the unshifted grid is passed in.
    """
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        solver_order=2,
        solver_type="bh2",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(sigmas=np.linspace(WAN_SIGMA_MAX, 0.0, steps + 1)[:-1])
    return scheduler


class Solver(Protocol):
    timesteps: torch.Tensor  # (steps,) int64, what the model is given at each step

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance `x` by step `i` given the model's prediction; return (next x, predicted clean x0)."""
        ...

    def uses_prediction(self, i: int) -> bool:
        """False where step `i` gives the same result whatever the (finite) prediction, so the model need not run."""
        ...


class FlowUniPCSolver:
    """Wan's sampler: UniPC multistep (Zhao et al. 2023, bh2, order 2) on the shifted flow grid, as diffusers runs it.

    Every UniPC update is linear in the starting noise and the model's predictions, with weights that depend on the
    grid alone. They are traced once per (steps, shift), by running diffusers' UniPCMultistepScheduler on basis
    vectors in float64 (`unipc_weights`), and each step is then one weighted sum on the device. diffusers' own `step`
    copies scalars to the device and solves a small linear system there, which makes the host wait for the GPU
    several times per step (measured: 33 ms per 20 steps on an H100, 6% of a 1.3B image); this solver never does.
    Each `step(i, x, pred)` must get the `x` that step i - 1 returned (the noise at i = 0), as `sample_many` does.
    """

    def __init__(self, steps: int, shift: float):
        self.timesteps, self.sigmas = flow_schedule(steps, shift)
        self.weights = unipc_weights(steps, float(shift))  # (steps, steps + 1): x_{i+1} over (x_0, v_0 .. v_{n-1})
        self._inputs: torch.Tensor | None = None  # x_0 and the predictions so far, stacked on the device
        self._device_weights: torch.Tensor | None = None

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0_pred = x - self.sigmas[i] * pred
        if i == 0:
            self._inputs = x.new_empty((len(self.timesteps) + 1, *x.shape))
            self._inputs[0] = x
            self._device_weights = self.weights.to(x.device, x.dtype)
        self._inputs[i + 1] = pred
        return torch.tensordot(self._device_weights[i, : i + 2], self._inputs[: i + 2], dims=1), x0_pred

    def uses_prediction(self, i: int) -> bool:
        return True


@functools.lru_cache(maxsize=64)
def unipc_weights(steps: int, shift: float) -> torch.Tensor:
    """The weights of Wan's flow UniPC: row i gives x_{i+1} as a combination of (x_0, v_0, ..., v_{steps-1}).

    Traced through diffusers' scheduler itself, so its predictor, corrector, order warm-up and final step are
    reproduced exactly; the scheduler's sigma arithmetic stays in its own float32, the combination runs in float64.
    """
    scheduler = wan_unipc_scheduler(steps, shift)
    # Steps in order, not looked up by timestep value: where a grid's first integer timesteps repeat (shift 5 with
    # 251+ steps, shift 20 with 60), diffusers' and Wan's lookup both pick the second copy and run off the end.
    # Where no timestep repeats, the order is the one the lookup finds, so the weights are unchanged.
    scheduler.set_begin_index(0)
    basis = torch.eye(steps + 1, dtype=torch.float64).unsqueeze(-1)  # sample (n, 1): one row per input
    x, rows = basis[:, 0], []
    for i in range(steps):
        x = scheduler.step(basis[:, i + 1], scheduler.timesteps[i], x, return_dict=False)[0]
        rows.append(x[:, 0])
    return torch.stack(rows)


class FlowEulerSolver:
    """First-order Euler on the same shifted grid as flow_unipc: x <- x + (sigma_next - sigma) v."""

    def __init__(self, steps: int, shift: float):
        self.timesteps, self.sigmas = flow_schedule(steps, shift)

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0_pred = x - self.sigmas[i] * pred
        return x + (self.sigmas[i + 1] - self.sigmas[i]) * pred, x0_pred

    def uses_prediction(self, i: int) -> bool:
        return True


class LegacyDDIMSolver:
    """The ORIGINAL, WRONG loop, kept to show the failure: DDIM (Song et al. 2021) with alpha_t = 1 - t/1000.

    It reads the flow model's velocity as the noise eps and assumes a variance-preserving path, so every step
    rescales x0 by 1/sqrt(alpha_t) (about 32x at t = 999) and the latents leave the VAE's distribution.
    """

    def __init__(self, steps: int, shift: float):
        del shift  # the original loop had no shift; accepted so that every solver is built the same way
        self.timesteps = legacy_ddim_timesteps(steps)
        alphas = 1.0 - self.timesteps.double() / NUM_TRAIN_TIMESTEPS
        self.alphas = torch.cat([alphas, alphas.new_ones(1)]).float()  # alpha after the last step is 1 (t = 0)

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, alpha_prev = self.alphas[i], self.alphas[i + 1]
        eps = pred
        x0_pred = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        return alpha_prev.sqrt() * x0_pred + (1 - alpha_prev).sqrt() * eps, x0_pred

    def uses_prediction(self, i: int) -> bool:
        # The last step of linspace(999, 0, N) is at t = 0, where alpha = alpha_prev = 1: eps is weighted by 0 and
        # the step returns x itself, so the original loop's forward there changed nothing.
        return bool(self.alphas[i] < 1)


SOLVERS: dict[str, type[FlowUniPCSolver] | type[FlowEulerSolver] | type[LegacyDDIMSolver]] = {
    "flow_unipc": FlowUniPCSolver,
    "flow_euler": FlowEulerSolver,
    "legacy_ddim": LegacyDDIMSolver,
}


def make_solver(sampler: str, steps: int, shift: float) -> Solver:
    """The solver of a sampler name, for arguments already validated (`validate_sampling_args`)."""
    return SOLVERS[sampler](int(steps), float(shift))


def sample_many(
    model_fn: BatchModelFn,
    noises: Sequence[torch.Tensor],
    *,
    samplers: Sequence[str],
    steps: int,
    shift: float,
    models: Sequence[Hashable] | None = None,
    callback: Callable[[int, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]], None] | None = None,
) -> list[torch.Tensor]:
    """Run several samplers in lock-step from their own starting noise, at most one `model_fn` call per step.

    A step evaluates the model once for all samplers together, and only where the result can matter: samplers on the
    same model whose x and t coincide (the first step, from one noise tensor: every grid here starts at t = 999)
    share one evaluation, and a sampler whose step ignores its prediction (`legacy_ddim` at t = 0) gets none.

    Args:
        model_fn: `(x, t, row_models) -> prediction`, x (B, C, F, H, W), t (B,) int64 on the 0-1000 scale, and the
            `models` entry of the sampler each row belongs to (a list of B).
        noises: one starting tensor (b_k, C, F, H, W) per sampler; they may be the same tensor.
        samplers: names from `SAMPLERS`, one per noise.
        steps, shift: the grid; every sampler takes the same number of steps.
        models: which model each sampler runs on (any hashable; default: one model for all).
        callback: called after each step with (i, t per sampler, x per sampler, x0_pred per sampler).

    Returns:
        The final latents per sampler, float32.
    """
    if len(noises) != len(samplers) or not samplers:
        raise ValueError(f"need one noise tensor per sampler, got {len(noises)} noises for {len(samplers)} samplers")
    models = [None] * len(samplers) if models is None else list(models)
    if len(models) != len(samplers):
        raise ValueError(f"need one model per sampler, got {len(models)} models for {len(samplers)} samplers")
    for name in dict.fromkeys(samplers):
        validate_sampling_args(name, steps, shift)
    solvers = [make_solver(name, steps, shift) for name in samplers]
    floats = {id(noise): noise.float() for noise in noises}  # one tensor per distinct noise: shared x stays shared
    xs = [floats[id(noise)] for noise in noises]
    # Every step's timesteps go to the device at once: a copy per step would make the host wait for the GPU.
    grid = torch.stack([solver.timesteps for solver in solvers]).to(xs[0].device)  # (samplers, steps)
    for i in range(steps):
        evaluations: dict[tuple, int] = {}  # (model, x, t) -> the first sampler with them: its rows are evaluated
        source = {}  # sampler -> the sampler whose evaluation it takes
        for k, solver in enumerate(solvers):
            if solver.uses_prediction(i):
                source[k] = evaluations.setdefault((models[k], id(xs[k]), int(solver.timesteps[i])), k)
        evaluated = list(evaluations.values())
        preds = {}
        if evaluated:
            sizes = [len(xs[k]) for k in evaluated]
            x = torch.cat([xs[k] for k in evaluated])
            t = torch.cat([grid[k, i].expand(size) for k, size in zip(evaluated, sizes, strict=True)])  # (B,)
            row_models = [models[k] for k, size in zip(evaluated, sizes, strict=True) for _ in range(size)]
            preds = dict(zip(evaluated, model_fn(x, t, row_models).float().split(sizes), strict=True))
        x0_preds = []
        for k, solver in enumerate(solvers):
            pred = preds[source[k]] if k in source else torch.zeros_like(xs[k])
            xs[k], x0_pred = solver.step(i, xs[k], pred)
            x0_preds.append(x0_pred)
        if callback is not None:
            callback(i, list(grid[:, i]), xs, x0_preds)
    return xs


def sample(
    model_fn: ModelFn,
    noise: torch.Tensor,
    *,
    sampler: str,
    steps: int,
    shift: float,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample with one sampler from `noise` (B, C, F, H, W); `callback(i, t, x, x0_pred)` runs after each step.

    `model_fn(x, t)` receives the latents and the timesteps, shape (B,), on Wan's 0-1000 scale (integer-valued,
    as Wan passes them) and returns the model's prediction (a velocity for flow models).
    Raises ValueError for an unknown sampler, steps outside 1..1000 or shift <= 0.
    """

    def each_step(i: int, ts: list, xs: list, x0s: list) -> None:
        callback(i, ts[0], xs[0], x0s[0])

    return sample_many(
        lambda x, t, row_models: model_fn(x, t),
        [noise],
        samplers=[sampler],
        steps=steps,
        shift=shift,
        callback=each_step if callback else None,
    )[0]
