"""flow_dpmpp against Wan's own `--sample_solver dpm++`: its grid, the timesteps the model sees, the final latents.

The reference numbers were produced by running Wan's FlowDPMSolverMultistepScheduler (wan/utils/fm_solvers.py, loaded
from a Wan checkout, never copied here) in Wan's loop on the analytic fields of tests/analytic.py:
tests/data/make_wan_dpmpp_reference.py, whose command, Wan commit and library versions are in the data file.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import FIELDS, exact_endpoint, gaussian_velocity
from diffusers import DPMSolverMultistepScheduler

from wan_t2i.samplers import FlowDPMSolver, sample, wan_dpmpp_scheduler

REFERENCE = json.loads((Path(__file__).parent / "data" / "wan_dpmpp_reference.json").read_text())
RUNS = REFERENCE["runs"]
NOISE = torch.tensor(REFERENCE["noise"]).view(1, *REFERENCE["latent_shape"])  # (B, C, F, H, W)
TOLERANCE = 1e-5  # on final latents of std about 1; measured: at most 1e-6 (float32 rounding, 50 steps)


def run_flow_dpmpp(field: str, steps: int, shift: float, seen: list | None = None) -> torch.Tensor:
    def model_fn(x, t):
        if seen is not None:
            seen.append(t.tolist())
        return FIELDS[field](x, t)

    return sample(model_fn, NOISE, sampler="flow_dpmpp", steps=steps, shift=shift)


def test_reference_covers_few_steps_shift_one_and_wans_video_and_image_settings():
    settings = {(run["steps"], run["shift"]) for run in RUNS.values()}
    assert {(1, 5.0), (4, 1.0), (4, 5.0), (4, 12.0), (20, 5.0), (40, 12.0), (50, 5.0), (50, 1.0)} <= settings
    assert "wan_commit" in REFERENCE["produced"] and REFERENCE["fields"] == list(FIELDS)


@pytest.mark.parametrize("name", list(RUNS))
def test_grid_is_wans_from_sigma_one_bit_for_bit(name):
    run = RUNS[name]
    solver = FlowDPMSolver(run["steps"], run["shift"])
    assert solver.timesteps.dtype == torch.int64 and solver.timesteps.tolist() == run["timesteps"]
    assert torch.equal(solver.sigmas, torch.tensor(run["sigmas"], dtype=torch.float32))
    assert run["timesteps"][0] == 1000 and run["sigmas"][0] == 1.0  # UniPC's grid starts at 999 instead


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("name", list(RUNS))
def test_final_latents_match_wans_own_scheduler(name, field):
    run, seen = RUNS[name], []
    result = run_flow_dpmpp(field, run["steps"], run["shift"], seen)
    assert [t[0] for t in seen] == run["timesteps"]  # the model is given Wan's integer timesteps, one per step
    expected = torch.tensor(run[f"final_{field}"]).view_as(result)
    torch.testing.assert_close(result, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["steps4_shift5", "steps20_shift5", "steps50_shift1"])
def test_the_comparison_can_fail_on_diffusers_own_flow_grid(name):
    """Stock DPMSolverMultistepScheduler on its own flow grid (from sigma 0.999) misses Wan's latents by far more
    than the tolerance: the grid written into it is what makes flow_dpmpp Wan's."""
    run = RUNS[name]
    scheduler = DPMSolverMultistepScheduler(
        solver_order=2,
        algorithm_type="dpmsolver++",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=run["shift"],
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(run["steps"])
    x = NOISE.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(FIELDS["wavy"](x, t.expand(1)), t, x, return_dict=False)[0]
    expected = torch.tensor(run["final_wavy"]).view_as(x)
    assert (x - expected).abs().max() > 10 * TOLERANCE  # measured: 5e-4 to 2e-3


@pytest.mark.parametrize("timesteps", [None, (1000, 750, 500, 250), (999, 900, 640, 20)])
@pytest.mark.parametrize(("steps", "shift"), [(1, 5.0), (2, 5.0), (3, 1.0), (20, 5.0), (50, 12.0)])
def test_traced_dpmpp_equals_diffusers_step_by_step(steps, shift, timesteps):
    """flow_dpmpp replays weights traced from diffusers' scheduler; running the scheduler itself gives the same x."""
    scheduler, solver = wan_dpmpp_scheduler(steps, shift, timesteps), FlowDPMSolver(steps, shift, timesteps)
    n = len(solver.timesteps)
    generator = torch.Generator().manual_seed(n)
    x = torch.randn(2, 16, 1, 8, 8, generator=generator)
    preds = [torch.randn(2, 16, 1, 8, 8, generator=generator) for _ in range(n)]
    expected, got = x.clone(), x.clone()
    for i, pred in enumerate(preds):
        expected = scheduler.step(pred, scheduler.timesteps[i], expected, return_dict=False)[0]
        got, _ = solver.step(i, got, pred)
        assert (got - expected).norm() <= 1e-6 * expected.norm(), f"step {i}"


def test_first_step_from_pure_noise_is_ddims_and_the_last_lands_on_the_prediction():
    """At sigma 1, log(alpha) = -inf: x1 = sigma_1 x + (1 - sigma_1) x0_pred exactly, and at sigma 0 x = x0_pred."""
    solver = FlowDPMSolver(4, 5.0)
    sigma_1 = float(solver.sigmas[1])
    np.testing.assert_allclose(solver.weights[0, :2].tolist(), [1.0, -(1 - sigma_1)], rtol=1e-6)  # x0_pred = x - v
    x = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    v = torch.randn_like(x)
    for i in range(3):
        x, _ = solver.step(i, x, torch.randn_like(x))
    final, x0_pred = solver.step(3, x, v)
    torch.testing.assert_close(final, x0_pred)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_lands_on_the_exact_ode_solution(scale):
    noise = torch.randn(4, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = exact_endpoint(noise, 1.0, scale)  # the grid starts at sigma 1: x(0) = noise * scale
    result = sample(gaussian_velocity(scale), noise, sampler="flow_dpmpp", steps=50, shift=5.0)
    assert (result - expected).norm() / expected.norm() < 0.015  # measured: 0.2%, 1.0%, 0.6%


def test_second_order_beats_euler_at_few_steps():
    noise = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = exact_endpoint(noise, 1.0, 1.0)
    dpmpp = sample(gaussian_velocity(1.0), noise, sampler="flow_dpmpp", steps=20, shift=5.0)
    euler = sample(gaussian_velocity(1.0), noise, sampler="flow_euler", steps=20, shift=5.0)
    euler_expected = exact_endpoint(noise, 0.9998, 1.0)  # flow_euler's grid starts at UniPC's sigma 0.9998
    assert (dpmpp - expected).norm() < (euler - euler_expected).norm() / 4  # measured: about 1% against 12%
