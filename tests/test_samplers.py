"""Samplers: Wan schedule parity, analytic ODE solutions, the legacy loop as it was, argument checks."""

import json
import math
from pathlib import Path

import pytest
import torch
from analytic import FIELDS, exact_endpoint, gaussian_velocity

from wan_t2i import choices
from wan_t2i.constants import BOUNDARY_RATIO, NUM_TRAIN_TIMESTEPS, PATCH_SIZE, TEXT_LEN, VAE_STRIDE
from wan_t2i.loading import ModelDefaults
from wan_t2i.samplers import (
    SAMPLERS,
    SOLVERS,
    FlowUniPCSolver,
    LegacyDDIMSolver,
    flow_schedule,
    legacy_ddim_timesteps,
    sample,
    sample_many,
    wan_unipc_scheduler,
)

# Timesteps and sigmas of Wan's official FlowUniPCMultistepScheduler (wan/utils/fm_solvers_unipc.py), copied from the
# project's shared/reference/ so that the tests stand alone; the copy is checked against shared/ wherever it exists.
REFERENCE = Path(__file__).parent / "data" / "wan_flow_unipc_schedules.json"
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / REFERENCE.name


def load_reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_reference_copy_matches_shared():
    if not SHARED_REFERENCE.exists():
        pytest.skip(f"no shared/ folder beside the checkout ({SHARED_REFERENCE.parent}) to compare the copy with")
    assert json.loads(SHARED_REFERENCE.read_text()) == load_reference()


@pytest.mark.parametrize("name", ["shift5_steps20", "shift3_steps50", "shift12_steps40", "shift5_steps50"])
def test_flow_schedule_matches_wan_bit_for_bit(name):
    reference = load_reference()["schedules"][name]
    shift = float(name.split("_")[0].removeprefix("shift"))
    steps = int(name.split("_")[1].removeprefix("steps"))
    timesteps, sigmas = flow_schedule(steps, shift)
    assert timesteps.dtype == torch.int64
    assert timesteps.tolist() == reference["timesteps"]
    assert torch.equal(sigmas, torch.tensor(reference["sigmas"], dtype=torch.float32))


# Final latents of Wan's own FlowUniPCMultistepScheduler in Wan's loop on the analytic fields: produced by
# tests/data/make_wan_unipc_reference.py, which runs wan/utils/fm_solvers_unipc.py from a Wan checkout.
UNIPC_RUNS = json.loads((Path(__file__).parent / "data" / "wan_unipc_reference.json").read_text())


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("name", list(UNIPC_RUNS["runs"]))
def test_final_latents_match_wans_own_unipc_scheduler(name, field):
    run, seen = UNIPC_RUNS["runs"][name], []
    noise = torch.tensor(UNIPC_RUNS["noise"]).view(1, *UNIPC_RUNS["latent_shape"])  # (B, C, F, H, W)

    def model_fn(x, t):
        seen.append(int(t[0]))
        return FIELDS[field](x, t)

    result = sample(model_fn, noise, sampler="flow_unipc", steps=run["steps"], shift=run["shift"])
    assert seen == run["timesteps"]  # Wan's integer timesteps, one model call per step
    expected = torch.tensor(run[f"final_{field}"]).view_as(result)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)  # measured: at most 8.3e-7 (50 steps, shift 1)


def test_constants_and_defaults_are_the_ones_wan_ships():
    """The numbers taken from Wan (constants.py, ModelDefaults) are those recorded beside its schedules."""
    wan = load_reference()["wan_defaults"]
    shared, wan22 = wan["shared"], wan["Wan2.2 t2v-A14B (wan/configs/wan_t2v_A14B.py)"]
    assert NUM_TRAIN_TIMESTEPS == shared["num_train_timesteps"] and TEXT_LEN == shared["text_len"]
    assert list(VAE_STRIDE) == shared["vae_stride"] and list(PATCH_SIZE) == shared["patch_size"]
    assert BOUNDARY_RATIO == wan22["boundary"]
    wan21, defaults = wan["Wan2.1 t2i-14B (generate.py)"], ModelDefaults()
    assert [defaults.steps, defaults.shift, defaults.guidance_scale] == [
        wan21[k] for k in ("steps", "shift", "guide_scale")
    ]


def test_legacy_grid_is_the_original_linspace():
    assert legacy_ddim_timesteps(5).tolist() == [999, 749, 499, 249, 0]
    assert torch.equal(legacy_ddim_timesteps(20), torch.linspace(999, 0, 20).long())


# Data scales near the normalised latents' std of 1; far smaller scales bend the trajectory sharply near
# sigma = s^2 / (1 + s^2), which the coarse final steps of a shift-5 grid cannot follow with a solver of this order.
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
@pytest.mark.parametrize(("sampler", "steps", "tolerance"), [("flow_unipc", 50, 0.01), ("flow_euler", 200, 0.03)])
def test_flow_samplers_land_on_the_exact_ode_solution(sampler, steps, tolerance, scale):
    noise = torch.randn(4, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    _, sigmas = flow_schedule(steps, 5.0)
    expected = exact_endpoint(noise, float(sigmas[0]), scale)
    result = sample(gaussian_velocity(scale), noise, sampler=sampler, steps=steps, shift=5.0)
    relative_error = (result - expected).norm() / expected.norm()
    assert relative_error < tolerance


def test_unipc_is_more_accurate_than_euler_at_few_steps():
    noise = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, sigmas = flow_schedule(20, 5.0)
    expected = exact_endpoint(noise, float(sigmas[0]), 1.0)
    errors = {
        name: ((sample(gaussian_velocity(1.0), noise, sampler=name, steps=20, shift=5.0) - expected).norm()).item()
        for name in ("flow_unipc", "flow_euler")
    }
    assert errors["flow_unipc"] < errors["flow_euler"] / 4  # second order: about 1% against 12% at these settings


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_legacy_ddim_misses_the_solution_and_leaves_the_distribution(steps):
    """Even fed the exact velocity of unit-variance data, the DDIM reading lands 2-3x too wide."""
    noise = torch.randn(4, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = exact_endpoint(noise, 0.9998, 1.0)
    result = sample(gaussian_velocity(1.0), noise, sampler="legacy_ddim", steps=steps, shift=5.0)
    assert (result - expected).norm() / expected.norm() > 1.0
    assert result.std() > 2 * expected.std()


def test_legacy_ddim_step_is_the_original_update():
    """One step by hand: x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), x = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps."""
    noise = torch.randn(1, 2, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    eps = torch.full_like(noise, 0.3)
    seen = []
    result = sample(
        lambda x, t: (seen.append(t.clone()), eps)[1],
        noise,
        sampler="legacy_ddim",
        steps=2,
        shift=5.0,
    )
    assert [t.tolist() for t in seen] == [[999]]  # the model is not run at t = 0, where eps is weighted by 0
    a_t, a_prev = 1 - 999 / 1000, 1 - 0 / 1000
    x0 = (noise - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    x1 = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    torch.testing.assert_close(result, x1)  # the final t = 0 step has a_t = 1 and leaves x unchanged


def test_model_receives_integer_wan_timesteps_of_shape_batch():
    seen = []

    def model_fn(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    sample(model_fn, torch.randn(3, 4, 1, 2, 2), sampler="flow_unipc", steps=20, shift=5.0)
    reference = load_reference()["schedules"]["shift5_steps20"]["timesteps"]
    assert all(t.shape == (3,) and t.dtype == torch.int64 for t in seen)
    assert [int(t[0]) for t in seen] == reference


def test_callback_gets_step_t_latents_and_x0_prediction():
    calls = []
    noise = torch.randn(1, 4, 1, 2, 2)
    sample(
        lambda x, t: torch.ones_like(x),
        noise,
        sampler="flow_euler",
        steps=4,
        shift=1.0,
        callback=lambda i, t, x, x0: calls.append((i, int(t), x.clone(), x0.clone())),
    )
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    _, sigmas = flow_schedule(4, 1.0)
    torch.testing.assert_close(calls[0][3], noise - sigmas[0] * torch.ones_like(noise))
    torch.testing.assert_close(calls[-1][2], noise - sigmas[0])  # constant v: x moves by -(sigma_0 - 0) in total


GRID_999_SAMPLERS = ("flow_unipc", "flow_euler", "legacy_ddim")  # the samplers whose grids start at t = 999


def counting(model_fn, calls: list):
    """A `sample_many` model that records (batch size, timesteps, row models) of each call."""

    def batch_model_fn(x, t, row_models):
        calls.append((len(x), t.tolist(), row_models))
        return model_fn(x, t)

    return batch_model_fn


def test_sample_many_equals_separate_runs_with_one_model_call_per_step():
    noise = torch.randn(2, 4, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    model_fn, calls = gaussian_velocity(0.7), []
    together = sample_many(counting(model_fn, calls), [noise] * 3, samplers=list(GRID_999_SAMPLERS), steps=8, shift=5.0)
    # Step 0: all three grids start at t = 999 from the same noise, one evaluation (2 rows) serves them all.
    # Step 7: legacy_ddim is at t = 0, where its update ignores the prediction: only the two flow samplers run.
    assert [batch for batch, _, _ in calls] == [2] + [6] * 6 + [4]
    assert calls[0][1] == [999, 999] and 0 not in calls[-1][1]
    for name, result in zip(GRID_999_SAMPLERS, together, strict=True):
        torch.testing.assert_close(result, sample(model_fn, noise, sampler=name, steps=8, shift=5.0), rtol=0, atol=0)


def test_samplers_share_an_evaluation_only_on_the_same_model_and_the_same_noise():
    noise = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    velocity, calls = gaussian_velocity(0.7), []
    samplers = ["flow_unipc", "flow_euler"]
    sample_many(counting(velocity, calls), [noise] * 2, samplers=samplers, models=["a", "b"], steps=3, shift=5.0)
    assert [(batch, models) for batch, _, models in calls] == [(2, ["a", "b"])] * 3  # two models: nothing shared
    calls.clear()
    sample_many(counting(velocity, calls), [noise, noise.clone()], samplers=samplers, steps=3, shift=5.0)
    assert [batch for batch, _, _ in calls] == [2] * 3  # equal values in two tensors are two inputs, not one
    calls.clear()
    sample_many(counting(velocity, calls), [noise] * 2, samplers=samplers, models=["a", "a"], steps=3, shift=5.0)
    assert [(batch, models) for batch, _, models in calls] == [(1, ["a"]), (2, ["a", "a"]), (2, ["a", "a"])]


@pytest.mark.parametrize("steps", [2, 5, 20])
def test_legacy_last_step_is_the_same_whatever_the_prediction(steps):
    """At t = 0 the original loop ran the model and weighted its output by sqrt(1 - 1) = 0: skipping it is exact."""
    solver = LegacyDDIMSolver(steps, 5.0)
    last = steps - 1
    assert solver.timesteps[last] == 0 and not solver.uses_prediction(last)
    assert all(solver.uses_prediction(i) for i in range(last))
    x = torch.randn(2, 4, 1, 4, 4, generator=torch.Generator().manual_seed(steps))
    for pred in (torch.zeros_like(x), 1e6 * torch.randn_like(x)):
        x_next, x0_pred = solver.step(last, x, pred)
        assert torch.equal(x_next, x) and torch.equal(x0_pred, x)
    assert LegacyDDIMSolver(1, 5.0).uses_prediction(0)  # one step: t = 999, the prediction is all there is


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"sampler": "ddpm"},
            "unknown sampler 'ddpm'; choose one of flow_unipc, flow_dpmpp, flow_euler, flow_lcm, legacy_ddim",
        ),
        ({"steps": 0}, "steps must be an integer from 1 to 1000, got 0"),
        ({"steps": 1001}, "steps must be an integer from 1 to 1000, got 1001"),
        ({"steps": 2.5}, "steps must be an integer from 1 to 1000, got 2.5"),
        ({"shift": 0}, "shift must be a finite number > 0, got 0"),
        ({"shift": -1.0}, "shift must be a finite number > 0, got -1.0"),
        ({"shift": float("nan")}, "shift must be a finite number > 0, got nan"),
    ],
)
def test_bad_arguments_raise_actionable_errors(kwargs, message):
    args = {"sampler": "flow_unipc", "steps": 4, "shift": 5.0} | kwargs
    with pytest.raises(ValueError) as error:
        sample(lambda x, t: x, torch.zeros(1, 1, 1, 1, 1), **args)
    assert str(error.value) == message


def test_every_name_the_cli_and_app_offer_has_a_solver_and_a_note():
    """The names live in wan_t2i.choices (no torch); the solvers here must cover exactly those names."""
    assert SAMPLERS is choices.SAMPLERS and list(SOLVERS) == list(SAMPLERS) == list(choices.SAMPLER_NOTES)
    assert all(choices.SAMPLER_NOTES[name].strip() and "\n" not in choices.SAMPLER_NOTES[name] for name in SAMPLERS)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_every_sampler_runs_at_few_steps_and_ends_finite(sampler, steps):
    result = sample(gaussian_velocity(0.5), torch.randn(1, 4, 1, 4, 4), sampler=sampler, steps=steps, shift=5.0)
    assert torch.isfinite(result).all()


@pytest.mark.parametrize("steps", [1, 2, 3, 20, 50])
@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
def test_traced_unipc_equals_diffusers_step_by_step(steps, shift):
    """flow_unipc replays weights traced from diffusers' scheduler; running the scheduler itself gives the same x."""
    generator = torch.Generator().manual_seed(steps)
    x = torch.randn(2, 16, 1, 8, 8, generator=generator)
    preds = [torch.randn(2, 16, 1, 8, 8, generator=generator) for _ in range(steps)]
    scheduler, solver = wan_unipc_scheduler(steps, shift), FlowUniPCSolver(steps, shift)
    expected, got = x.clone(), x.clone()
    for i, pred in enumerate(preds):
        expected = scheduler.step(pred, scheduler.timesteps[i], expected, return_dict=False)[0]
        got, _ = solver.step(i, got, pred)
        assert (got - expected).norm() <= 1e-6 * expected.norm(), f"step {i}"
