"""flow_unipc over the app's steps x shift slider range and up to 1000 steps: it never crashes, an oracle velocity
lands on its x0, and it equals diffusers' scheduler (the one Wan runs) wherever that scheduler runs. Checked at the
issue's examples, on a coarse grid, on both sides of where repeats begin for every slider shift, at every step count
of the first and last repeating shift, and at 250 to 1000 steps (the whole grid would take about 20 minutes).

Where a grid's first integer timesteps repeat (shift 5 with 251+ steps, shift 12 with 92+, shift 20 with 54+), the
stock scheduler looks its first step up by timestep value, picks the second copy and runs off the end of the grid;
`traced_weights` runs the steps in order there (`set_begin_index(0)`), see docs/reliability.md.
"""

from __future__ import annotations

import pytest
import torch

from wan_t2i.samplers import sample, traced_weights, wan_unipc_scheduler
from wan_t2i.schedules import flow_schedule

SLIDER_STEPS = range(1, 101)  # wan_t2i.app: the Steps slider, 1..100 by 1
SLIDER_SHIFTS = [round(k * 0.1, 1) for k in range(1, 201)]  # the Shift slider, 0.1..20 by 0.1
COARSE_STEPS = (1, 2, 3, 5, 10, 20, 50, 100)
COARSE_SHIFTS = (0.1, 1.0, 3.0, 5.0, 12.0, 20.0)


def first_timestep_repeats(steps: int, shift: float) -> bool:
    """Whether the grid's first two integer timesteps are equal: where diffusers' and Wan's lookup fail."""
    timesteps, _ = flow_schedule(steps, shift)
    return len(timesteps) > 1 and bool(timesteps[0] == timesteps[1])


def stock_weights(steps: int, shift: float) -> torch.Tensor:
    """The weights traced as `traced_weights` traces them, but with the scheduler finding its first step by timestep
    value, as diffusers (and Wan's FlowUniPCMultistepScheduler) do when nothing sets the begin index."""
    scheduler = wan_unipc_scheduler(steps, shift)
    basis = torch.eye(steps + 1, dtype=torch.float64).unsqueeze(-1)
    x, rows = basis[:, 0], []
    for i in range(steps):
        x = scheduler.step(basis[:, i + 1], scheduler.timesteps[i], x, return_dict=False)[0]
        rows.append(x[:, 0])
    return torch.stack(rows)


def lands_on_x0(steps: int, shift: float) -> float:
    """Sample with the exact velocity of a point mass at x0 (v = (x - x0) / sigma); returns the largest error."""
    _, _, sigmas = traced_weights("flow_unipc", steps, shift, None)
    x0 = torch.linspace(-1.5, 1.5, 8).reshape(1, 2, 1, 2, 2)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(steps))
    calls = iter(range(steps))

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - x0) / sigmas[next(calls)].double()

    x = sample(oracle, noise, sampler="flow_unipc", steps=steps, shift=shift)
    assert torch.isfinite(x).all(), f"steps {steps}, shift {shift}: non-finite latents"
    return float((x - x0).abs().max())


def check_grid_point(steps: int, shift: float) -> None:
    """No crash, finite weights, the oracle lands on x0, and bit-equality with the stock scheduler where it runs."""
    weights, timesteps, _ = traced_weights("flow_unipc", steps, shift, None)
    assert weights.shape == (steps, steps + 1) and torch.isfinite(weights).all()
    assert torch.equal(timesteps, flow_schedule(steps, shift)[0])  # the timesteps the model is given are Wan's
    assert lands_on_x0(steps, shift) < 1e-4, f"steps {steps}, shift {shift}"
    if first_timestep_repeats(steps, shift):
        with pytest.raises((AssertionError, IndexError)):  # where Wan itself fails: we run the steps in order
            stock_weights(steps, shift)
    else:
        assert torch.equal(weights, stock_weights(steps, shift)), f"steps {steps}, shift {shift}"


def test_the_issue_examples_repeat_and_now_run() -> None:
    """The settings the issue found crashing (shift 5 with 251 steps, 12 with 100, 20 with 60), and shift 5 with 250
    steps, which never repeated and stays bit-equal to the stock scheduler."""
    for steps, shift in ((251, 5.0), (100, 12.0), (60, 20.0)):
        assert first_timestep_repeats(steps, shift)
        check_grid_point(steps, shift)
    assert not first_timestep_repeats(250, 5.0)
    check_grid_point(250, 5.0)


def test_a_coarse_grid_over_the_sliders() -> None:
    for steps in COARSE_STEPS:
        for shift in COARSE_SHIFTS:
            check_grid_point(steps, shift)


@pytest.mark.slow
def test_every_step_count_where_repeats_begin() -> None:
    """For every shift of the slider whose grid repeats (11.2 and up), the first step count that repeats and the one
    before it (the boundary, on both sides); and every step count 1..100 at the first such shift and at the last."""
    repeating = [
        (steps, shift) for steps in SLIDER_STEPS for shift in SLIDER_SHIFTS if first_timestep_repeats(steps, shift)
    ]
    assert 0.12 < len(repeating) / (len(SLIDER_STEPS) * len(SLIDER_SHIFTS)) < 0.13  # the issue's 12.8%
    first = {}
    for steps, shift in repeating:
        first[shift] = min(first.get(shift, steps), steps)
    for shift, steps in sorted(first.items()):
        check_grid_point(steps, shift)
        check_grid_point(steps - 1, shift)
        assert not first_timestep_repeats(steps - 1, shift)
    for shift in (min(first), max(first)):
        for steps in SLIDER_STEPS:
            check_grid_point(steps, shift)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [250, 251, 500, 999, 1000])
def test_up_to_1000_steps(steps: int) -> None:
    for shift in (1.0, 5.0, 20.0):
        check_grid_point(steps, shift)
