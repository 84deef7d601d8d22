"""Samplers for Wan flow-matching models, and the legacy DDIM loop that broke the original student.

Every sampler is a small solver with a timestep grid and a `step`; all of them run through one loop
(`sample_many`), so an A/B comparison differs in exactly one thing: the update rule.

Conventions (Wan's): latents `x`, noise level `sigma` in [0, 1] with `x_sigma = (1 - sigma) x0 + sigma eps`, model
timesteps `t = sigma * 1000` on the 0-1000 training scale, model prediction `v = eps - x0` (flow prediction).
The grids themselves are in `wan_t2i.schedules`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from wan_t2i.choices import SAMPLERS  # the names: defined once, where the CLI reads them without torch
from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.schedules import (
    MAX_STEPS,
    WAN_SIGMA_MAX,
    check_timesteps,
    flow_schedule,
    legacy_ddim_timesteps,
    sampling_schedule,
    timesteps_schedule,
)
from wan_t2i.values import is_finite_number, is_integer

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchModelFn = Callable[[torch.Tensor, torch.Tensor, list[Hashable]], torch.Tensor]  # (x, t, model of each row)
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
Timesteps = Sequence[int] | None  # explicit model timesteps, or None for a sampler's own grid of (steps, shift)


def check_sampler(sampler: str) -> None:
    """Raise ValueError for a sampler name that is not one of `SAMPLERS`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def validate_sampling_args(sampler: str, steps: int, shift: float, timesteps: Timesteps = None) -> None:
    """Raise ValueError naming the bad value and the allowed range."""
    check_sampler(sampler)
    if not is_integer(steps) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    if not is_finite_number(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    if timesteps is not None:
        check_timesteps(timesteps)


# diffusers' schedulers set up as Wan's, to trace weights from ---------------------------------------------------------
def wan_unipc_scheduler(steps: int, shift: float, timesteps: Timesteps = None) -> UniPCMultistepScheduler:
    """diffusers' UniPC set up as Wan's FlowUniPCMultistepScheduler (order 2, bh2, flow prediction, final sigma 0).

    diffusers' own flow grid starts at sigma 1.0; Wan's starts at 0.999, so the unshifted grid is passed in.
    Explicit `timesteps` are passed as sigmas t / 1000, unshifted; diffusers moves a first sigma of 1.0 to 1 - 1e-6.
    """
    if timesteps is not None:
        sigmas, shift = np.asarray(timesteps, dtype=np.float64) / NUM_TRAIN_TIMESTEPS, 1.0
    else:
        sigmas = np.linspace(WAN_SIGMA_MAX, 0.0, steps + 1)[:-1]
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
    scheduler.set_timesteps(sigmas=sigmas)
    if timesteps is not None:  # as given: diffusers would truncate t / 1000 * 1000 (749.99.. -> 749, 1 - 1e-6 -> 999)
        scheduler.timesteps = torch.tensor(timesteps, dtype=torch.int64)
    return scheduler


def wan_dpmpp_scheduler(steps: int, shift: float, timesteps: Timesteps = None) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++ set up as Wan's `--sample_solver dpm++` (FlowDPMSolverMultistepScheduler, order 2,
    dpmsolver++, midpoint, flow prediction, final sigma 0), on Wan's grid.

    Where it differs from Wan's wan/utils/fm_solvers.py (a copy of this scheduler converted to flow matching, with
    the same updates): diffusers' flow grid is 1 - linspace(1, 1/1000, steps + 1), starting at sigma 0.999 shifted,
    while Wan's `get_sampling_sigmas` starts at 1.0 (t = 1000), and diffusers' set_timesteps takes no sigmas. So the
    scheduler is built for `steps` and Wan's grid written into it; log(alpha) = -inf at sigma 1 is as in Wan's own
    run: its first update is DDIM's and its first second-order correction is weighted by 0.
    """
    grid = timesteps_schedule(timesteps) if timesteps is not None else sampling_schedule(steps, shift)
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    with warnings.catch_warnings():  # its unused VP sigmas go through np.array(tensor), which numpy 2 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(len(grid[0]))
    scheduler.timesteps, scheduler.sigmas = grid
    return scheduler


SCHEDULERS = {"flow_unipc": wan_unipc_scheduler, "flow_dpmpp": wan_dpmpp_scheduler}


@functools.lru_cache(maxsize=64)
def traced_weights(
    sampler: str, steps: int, shift: float, timesteps: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multistep sampler's weights (n, n + 1): row i gives x_{i+1} as a combination of (x_0, v_0, ..., v_{n-1});
    with its scheduler's timesteps (n,) and sigmas (n + 1,).

    Traced through diffusers' scheduler itself, so its predictor, corrector, order warm-up and final step are
    reproduced exactly; the scheduler's sigma arithmetic stays in its own float32, the combination runs in float64
    (DPM-Solver++ rounds its current sample to float32 on each step, as it does on latents).
    """
    scheduler = SCHEDULERS[sampler](steps, shift, timesteps)
    n = len(scheduler.timesteps)
    # Steps in order, not looked up by timestep value: where a grid's first integer timesteps repeat (shift 5 with
    # 251+ steps, shift 20 with 60), diffusers' and Wan's lookup both pick the second copy and run off the end.
    # Where no timestep repeats, the order is the one the lookup finds, so the weights are unchanged.
    scheduler.set_begin_index(0)
    basis = torch.eye(n + 1, dtype=torch.float64).unsqueeze(-1)  # sample (n + 1, 1): one row per input
    x, rows = basis[:, 0], []
    for i in range(n):
        x = scheduler.step(basis[:, i + 1], scheduler.timesteps[i], x, return_dict=False)[0]
        rows.append(x[:, 0])
    return torch.stack(rows), scheduler.timesteps.clone(), scheduler.sigmas.clone()


# Solvers --------------------------------------------------------------------------------------------------------------
class Solver(Protocol):
    timesteps: torch.Tensor  # (steps,) int64, what the model is given at each step

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance `x` by step `i` given the model's prediction; return (next x, predicted clean x0)."""
        ...

    def uses_prediction(self, i: int) -> bool:
        """False where step `i` gives the same result whatever the (finite) prediction, so the model need not run."""
        ...


class TracedSolver:
    """A multistep solver replayed from weights traced through diffusers (`traced_weights`).

    Every UniPC and DPM-Solver++ update is linear in the starting noise and the model's predictions, with weights
    that depend on the grid alone, so each step is one weighted sum on the device. diffusers' own `step` copies
    scalars to the device (and UniPC solves a small linear system there), which makes the host wait for the GPU
    several times per step (measured for UniPC: 33 ms per 20 steps on an H100, 6% of a 1.3B image); this never does.
    Each `step(i, x, pred)` must get the `x` that step i - 1 returned (the noise at i = 0), as `sample_many` does.
    """

    sampler = ""  # its scheduler's key in SCHEDULERS

    def __init__(self, steps: int, shift: float, timesteps: Timesteps = None):
        key = tuple(timesteps) if timesteps is not None else None
        self.weights, self.timesteps, self.sigmas = traced_weights(self.sampler, int(steps), float(shift), key)
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
        # v_i enters x_{i+1} and, through the solver's history, later steps: unused only if its whole column is 0.
        return bool(self.weights[:, i + 1].any())


class FlowUniPCSolver(TracedSolver):
    """Wan's sampler: UniPC multistep (Zhao et al. 2023, bh2, order 2) on Wan's shifted flow grid from sigma 0.999,
    as diffusers runs it (`wan_unipc_scheduler`)."""

    sampler = "flow_unipc"


class FlowDPMSolver(TracedSolver):
    """Wan's second solver, `--sample_solver dpm++`: DPM-Solver++ (Lu et al. 2022, 2M, midpoint) on Wan's
    `get_sampling_sigmas` grid from sigma 1.0, as diffusers runs it (`wan_dpmpp_scheduler`)."""

    sampler = "flow_dpmpp"


class FlowEulerSolver:
    """First-order Euler on the same shifted grid as flow_unipc: x <- x + (sigma_next - sigma) v."""

    def __init__(self, steps: int, shift: float, timesteps: Timesteps = None):
        self.timesteps, self.sigmas = (
            flow_schedule(steps, shift) if timesteps is None else timesteps_schedule(timesteps)
        )

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0_pred = x - self.sigmas[i] * pred
        return x + (self.sigmas[i + 1] - self.sigmas[i]) * pred, x0_pred

    def uses_prediction(self, i: int) -> bool:
        return True


class FlowLCMSolver:
    """Few-step students' sampler (LCM, Luo et al. 2023; LightX2V's Wan step-distill scheduler): x0 = x - sigma v,
    then, except at the last step, re-noise it to the next sigma with fresh noise: x = (1 - sigma') x0 + sigma' eps.

    The default grid is Wan's dpm++ one from sigma 1.0 (4 steps at shift 5: sigmas 1, 0.9375, 0.833, 0.625, those of
    LightX2V's [1000, 750, 500, 250] at shift 5). The fresh noise eps of step i is the i-th draw of x's shape from
    `generator` on the CPU (torch's global generator when None), all drawn at the first step and moved to x's device
    in one copy, so the loop never waits for the GPU.
    """

    def __init__(self, steps: int, shift: float, timesteps: Timesteps = None, generator: torch.Generator | None = None):
        self.timesteps, self.sigmas = (
            sampling_schedule(steps, shift) if timesteps is None else timesteps_schedule(timesteps)
        )
        self.generator = generator
        self._noise: torch.Tensor | None = None  # (steps - 1, *x.shape) on x's device

    def step(self, i: int, x: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0_pred = x - self.sigmas[i] * pred
        if i == len(self.timesteps) - 1:
            return x0_pred, x0_pred
        if self._noise is None:
            draws = [torch.randn(x.shape, generator=self.generator) for _ in range(len(self.timesteps) - 1)]
            self._noise = torch.stack(draws).to(x.device, x.dtype)
        sigma_next = self.sigmas[i + 1]
        return (1 - sigma_next) * x0_pred + sigma_next * self._noise[i], x0_pred

    def uses_prediction(self, i: int) -> bool:
        return True


class LegacyDDIMSolver:
    """The ORIGINAL, WRONG loop, kept to show the failure: DDIM (Song et al. 2021) with alpha_t = 1 - t/1000.

    It reads the flow model's velocity as the noise eps and assumes a variance-preserving path, so every step
    rescales x0 by 1/sqrt(alpha_t) (about 32x at t = 999) and the latents leave the VAE's distribution.
    """

    def __init__(self, steps: int, shift: float, timesteps: Timesteps = None):
        # The original loop had no shift and no timesteps of its own choosing: given explicit timesteps it takes as
        # many steps on its own grid. Both are accepted so that every solver is built the same way.
        del shift
        self.timesteps = legacy_ddim_timesteps(steps if timesteps is None else len(timesteps))
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


SOLVERS: dict[str, Callable[..., Solver]] = {
    "flow_unipc": FlowUniPCSolver,
    "flow_dpmpp": FlowDPMSolver,
    "flow_euler": FlowEulerSolver,
    "flow_lcm": FlowLCMSolver,
    "legacy_ddim": LegacyDDIMSolver,
}


def make_solver(
    sampler: str, steps: int, shift: float, timesteps: Timesteps = None, generator: torch.Generator | None = None
) -> Solver:
    """The solver of a sampler name, for arguments already validated (`validate_sampling_args`).

    Only flow_lcm draws noise; it gets a generator of its own that starts from `generator`'s state.
    """
    if sampler == "flow_lcm":
        return FlowLCMSolver(int(steps), float(shift), timesteps, generator=copy_generator(generator))
    return SOLVERS[sampler](int(steps), float(shift), timesteps)


def copy_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator in `generator`'s current state (None stays None: torch's global generator)."""
    if generator is None:
        return None
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator, got one on {generator.device}: flow_lcm draws its noise on "
            "the CPU so that a seed gives the same image on every device"
        )
    copy = torch.Generator("cpu")
    copy.set_state(generator.get_state())
    return copy


# The loop -------------------------------------------------------------------------------------------------------------
def sample_many(
    model_fn: BatchModelFn,
    noises: Sequence[torch.Tensor],
    *,
    samplers: Sequence[str],
    steps: int | Sequence[int],
    shift: float | Sequence[float],
    timesteps: Sequence[Timesteps] | None = None,
    models: Sequence[Hashable] | None = None,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
    callback: Callable[[int, list, list, list], None] | None = None,
) -> list[torch.Tensor]:
    """Run several samplers in lock-step from their own starting noise, at most one `model_fn` call per step.

    A step evaluates the model once for all samplers together, and only where the result can matter: samplers on the
    same model whose x and t coincide share one evaluation (the first step, from one noise tensor: flow_unipc,
    flow_euler and legacy_ddim start at t = 999, flow_dpmpp and flow_lcm at t = 1000, and all flow samplers at
    the first of explicit timesteps), and a sampler whose step ignores its prediction (`legacy_ddim` at t = 0) gets
    none. Any mix runs in this one loop: samplers with the same number of steps move in lock-step; one with fewer
    (explicit timesteps of another length) drops out after its last step and the others carry on, so no sampler
    ever waits for a second pass. Every branch of a GenerationRequest has the same number of steps.

    Args:
        model_fn: `(x, t, row_models) -> prediction`, x (B, C, F, H, W), t (B,) int64 on the 0-1000 scale, and the
            `models` entry of the sampler each row belongs to (a list of B).
        noises: one starting tensor (b_k, C, F, H, W) per sampler; they may be the same tensor.
        samplers: names from `SAMPLERS`, one per noise.
        steps, shift: the grid of every sampler not given explicit timesteps; one value for all, or one per sampler
            (a sweep's cells).
        timesteps: per sampler, explicit model timesteps (strictly decreasing, in 1..1000) that replace its grid of
            `steps` and `shift`, or None; legacy_ddim takes as many steps on its own grid.
        models: which model each sampler runs on (any hashable; default: one model for all).
        generator: a CPU generator for flow_lcm's fresh noise. Each flow_lcm sampler draws from its own copy of its
            state, so it gives the same result alone or beside others; `generator` itself is left as it was. One per
            sampler where samplers start from different seeds.
        callback: called after each step with (i, t per sampler, x per sampler, x0_pred per sampler); the entries of a
            sampler that has finished are None.

    Returns:
        The final latents per sampler, float32.
    """
    if len(noises) != len(samplers) or not samplers:
        raise ValueError(f"need one noise tensor per sampler, got {len(noises)} noises for {len(samplers)} samplers")
    models = [None] * len(samplers) if models is None else list(models)
    if len(models) != len(samplers):
        raise ValueError(f"need one model per sampler, got {len(models)} models for {len(samplers)} samplers")
    timesteps = [None] * len(samplers) if timesteps is None else list(timesteps)
    if len(timesteps) != len(samplers):
        raise ValueError(f"need timesteps (or None) per sampler, got {len(timesteps)} for {len(samplers)} samplers")
    steps, shift, generators = (
        _per_sampler(value, len(samplers), what)
        for value, what in ((steps, "steps"), (shift, "shift"), (generator, "generator"))
    )
    branches = list(zip(samplers, steps, shift, timesteps, generators, strict=True))
    for name, n, s, ts, _ in branches:
        validate_sampling_args(name, n, s, ts)
    solvers = [make_solver(name, n, s, ts, g) for name, n, s, ts, g in branches]
    floats = {id(noise): noise.float() for noise in noises}  # one tensor per distinct noise: shared x stays shared
    xs = [floats[id(noise)] for noise in noises]
    # Every step's timesteps go to the device at once: a copy per step would make the host wait for the GPU.
    counts = [len(solver.timesteps) for solver in solvers]
    grid = torch.zeros((len(solvers), max(counts)), dtype=torch.int64)  # (samplers, steps), 0 past a sampler's end
    for k, solver in enumerate(solvers):
        grid[k, : counts[k]] = solver.timesteps
    grid = grid.to(xs[0].device)
    for i in range(max(counts)):
        running = [k for k in range(len(solvers)) if i < counts[k]]
        evaluations: dict[tuple, int] = {}  # (model, x, t) -> the first sampler with them: its rows are evaluated
        source = {}  # sampler -> the sampler whose evaluation it takes
        for k in running:
            if solvers[k].uses_prediction(i):
                source[k] = evaluations.setdefault((models[k], id(xs[k]), int(solvers[k].timesteps[i])), k)
        evaluated = list(evaluations.values())
        preds = {}
        if evaluated:
            sizes = [len(xs[k]) for k in evaluated]
            x = torch.cat([xs[k] for k in evaluated])
            t = torch.cat([grid[k, i].expand(size) for k, size in zip(evaluated, sizes, strict=True)])  # (B,)
            row_models = [models[k] for k, size in zip(evaluated, sizes, strict=True) for _ in range(size)]
            preds = dict(zip(evaluated, model_fn(x, t, row_models).float().split(sizes), strict=True))
        x0_preds: list[torch.Tensor | None] = [None] * len(solvers)
        for k in running:
            pred = preds[source[k]] if k in source else torch.zeros_like(xs[k])
            xs[k], x0_preds[k] = solvers[k].step(i, xs[k], pred)
        if callback is not None:
            on = [x0 is not None for x0 in x0_preds]
            callback(
                i,
                [grid[k, i] if on[k] else None for k in range(len(solvers))],
                [xs[k] if on[k] else None for k in range(len(solvers))],
                x0_preds,
            )
    return xs


def _per_sampler(value: Any, count: int, what: str) -> list:
    """`value` for each of `count` samplers: a list or tuple of `count` values as it is, anything else repeated."""
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise ValueError(f"need one {what} per sampler, got {len(value)} for {count} samplers")
        return list(value)
    return [value] * count


def sample(
    model_fn: ModelFn,
    noise: torch.Tensor,
    *,
    sampler: str,
    steps: int,
    shift: float,
    timesteps: Timesteps = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample with one sampler from `noise` (B, C, F, H, W); `callback(i, t, x, x0_pred)` runs after each step.

    `model_fn(x, t)` receives the latents and the timesteps, shape (B,), on Wan's 0-1000 scale (integer-valued,
    as Wan passes them) and returns the model's prediction (a velocity for flow models). `timesteps` (strictly
    decreasing, in 1..1000) replace the grid of `steps` and `shift`; `generator` (CPU) seeds flow_lcm's fresh noise
    and is not advanced. Raises ValueError for an unknown sampler, steps outside 1..1000, shift <= 0 or bad timesteps.
    """

    def each_step(i: int, ts: list, xs: list, x0s: list) -> None:
        callback(i, ts[0], xs[0], x0s[0])

    return sample_many(
        lambda x, t, row_models: model_fn(x, t),
        [noise],
        samplers=[sampler],
        steps=steps,
        shift=shift,
        timesteps=[timesteps],
        generator=generator,
        callback=each_step if callback else None,
    )[0]
