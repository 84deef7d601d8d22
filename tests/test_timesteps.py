"""Explicit timesteps for every flow sampler, any mix of samplers in one loop, and oracle endpoints for all of them."""

import pytest
import torch
from analytic import gaussian_velocity, point_mass_velocity

from wan_t2i.samplers import SAMPLERS, sample, sample_many

FLOW_SAMPLERS = [name for name in SAMPLERS if name.startswith("flow_")]
LIST = [1000, 750, 500, 250]


def recording(model_fn, calls: list):
    """A `sample_many` model that records (batch size, timesteps) of each call."""

    def batch_model_fn(x, t, row_models):
        calls.append((len(x), t.tolist()))
        return model_fn(x, t)

    return batch_model_fn


@pytest.mark.parametrize("sampler", FLOW_SAMPLERS)
def test_every_flow_sampler_gives_the_model_exactly_the_explicit_timesteps(sampler):
    seen = []
    sample(lambda x, t: seen.append(t.tolist()) or torch.zeros_like(x), torch.randn(2, 4, 1, 2, 2),
           sampler=sampler, steps=20, shift=3.0, timesteps=[999, 937, 750, 333, 1])  # fmt: skip
    assert seen == [[t, t] for t in (999, 937, 750, 333, 1)]  # the step count and shift are replaced


def test_legacy_ddim_takes_as_many_steps_on_its_own_grid():
    seen = []
    sample(lambda x, t: seen.append(int(t[0])) or torch.zeros_like(x), torch.randn(1, 4, 1, 2, 2),
           sampler="legacy_ddim", steps=20, shift=3.0, timesteps=LIST)  # fmt: skip
    assert seen == [999, 666, 333]  # linspace(999, 0, 4).long(); its t = 0 step ignores the prediction


@pytest.mark.parametrize("sampler", FLOW_SAMPLERS)
def test_with_an_oracle_every_flow_sampler_lands_on_the_data_and_legacy_ddim_does_not(sampler):
    """All data at one point x0: the flow ODE runs straight to it, and every prediction is x0 itself."""
    x0 = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model_fn = point_mass_velocity(x0)
    result = sample(model_fn, noise, sampler=sampler, steps=4, shift=5.0, timesteps=LIST,
                    generator=torch.Generator().manual_seed(2))  # fmt: skip
    # UniPC's first sigma is 1 - 1e-6 where the oracle's is t / 1000 = 1: an error of about 1e-6 x |noise - x0|.
    torch.testing.assert_close(result, x0.expand_as(result), atol=2e-5, rtol=0)
    legacy = sample(model_fn, noise, sampler="legacy_ddim", steps=4, shift=5.0, timesteps=LIST)
    assert (legacy - x0).norm() > x0.norm()


def test_all_flow_samplers_share_the_first_step_on_one_list():
    noise = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    velocity, calls = gaussian_velocity(0.7), []
    n = len(FLOW_SAMPLERS)
    together = sample_many(recording(velocity, calls), [noise] * n, samplers=FLOW_SAMPLERS, steps=4, shift=5.0,
                           timesteps=[LIST] * n, generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert calls == [(1, [1000])] + [(n, [t] * n) for t in LIST[1:]]
    for name, result in zip(FLOW_SAMPLERS, together, strict=True):
        alone = sample(velocity, noise, sampler=name, steps=4, shift=5.0, timesteps=LIST,
                       generator=torch.Generator().manual_seed(3))  # fmt: skip
        torch.testing.assert_close(result, alone, rtol=0, atol=0)


def test_default_grids_share_where_they_start_together():
    """flow_unipc, flow_euler and legacy_ddim start at t = 999; flow_dpmpp and flow_lcm at 1000 (Wan's dpm++ grid)."""
    noise = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    calls = []
    sample_many(recording(gaussian_velocity(0.7), calls), [noise] * len(SAMPLERS), samplers=SAMPLERS, steps=6,
                shift=5.0)  # fmt: skip
    assert sorted(calls[0][1]) == [999, 1000]  # two evaluations of one row at the first step, not five
    assert [batch for batch, _ in calls] == [2] + [5] * 4 + [4]  # legacy_ddim's t = 0 step runs no model


def test_samplers_with_different_step_counts_run_in_one_loop_and_drop_out_when_done():
    noise = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    velocity, calls, seen = gaussian_velocity(0.7), [], []
    samplers, timesteps = ["flow_unipc", "flow_lcm", "flow_dpmpp"], [None, LIST, [1000, 500]]
    together = sample_many(
        recording(velocity, calls), [noise] * 3, samplers=samplers, steps=6, shift=5.0, timesteps=timesteps,
        generator=torch.Generator().manual_seed(1),
        callback=lambda i, ts, xs, x0s: seen.append([x is not None for x in xs]),
    )  # fmt: skip
    # Step 0: lcm and dpmpp share t = 1000; dpmpp ends after 2 steps, lcm after 4, unipc runs all 6.
    assert [batch for batch, _ in calls] == [2, 3, 2, 2, 1, 1]
    assert seen == [[True] * 3] * 2 + [[True, True, False]] * 2 + [[True, False, False]] * 2
    for name, ts, result in zip(samplers, timesteps, together, strict=True):
        alone = sample(velocity, noise, sampler=name, steps=6, shift=5.0, timesteps=ts,
                       generator=torch.Generator().manual_seed(1))  # fmt: skip
        torch.testing.assert_close(result, alone, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ([], "timesteps must list 1 to 1000 model timesteps, got 0"),
        (list(range(1001, 0, -1)), "timesteps must list 1 to 1000 model timesteps, got 1001"),
        ([1000, 750, 750], "timesteps must be strictly decreasing, got 750 then 750"),
        ([250, 500], "timesteps must be strictly decreasing, got 250 then 500"),
        ([1001, 500], r"timesteps must be integers from 1 to 1000 \(sampling ends at t = 0 by itself\), got 1001"),
        ([500, 0], "timesteps must be integers from 1 to 1000 .*got 0"),
        ([937.5, 500], "timesteps must be integers from 1 to 1000 .*got 937.5"),
        (1000, "timesteps must be a list of integers such as 1000, 750, 500, 250, got 1000"),
    ],
)
def test_bad_timesteps_raise_actionable_errors(timesteps, message):
    with pytest.raises(ValueError, match=message):
        sample(lambda x, t: x, torch.zeros(1, 1, 1, 1, 1), sampler="flow_euler", steps=4, shift=5.0,
               timesteps=timesteps)  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to make a generator off the CPU")
def test_flow_lcm_refuses_a_generator_off_the_cpu():
    generator = torch.Generator(device="cuda")
    with pytest.raises(ValueError, match="generator must be a CPU torch.Generator, got one on cuda"):
        sample(lambda x, t: x, torch.zeros(1, 1, 1, 1, 1), sampler="flow_lcm", steps=2, shift=5.0, generator=generator)
