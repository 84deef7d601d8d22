"""The batched guidance and expert routing against the plain loop it stands for: one row, one forward at a time."""

import pytest
import torch
from conftest import tiny_transformer

from wan_t2i.guidance import Experts, Row, guided_model_fn, run_transformer

BOUNDARY = 0.875


def reference_model_fn(experts, cond, uncond, guidance):
    """Per row: pick the expert for its t, run the conditional and the unconditional forwards separately, combine."""

    def model_fn(x, t, row_models):
        rows = []
        for r, model in enumerate(row_models):
            e = experts[model]
            low_noise = e.low is not None and t[r].item() < BOUNDARY * 1000
            module, g = (e.low, guidance[1]) if low_noise else (e.high, guidance[0])
            x_r, t_r = x[r : r + 1], t[r : r + 1]
            pred = run_transformer(module, x_r, t_r, cond)
            if g != 1:
                pred_uncond = run_transformer(module, x_r, t_r, uncond)
                pred = pred_uncond + g * (pred - pred_uncond)
            rows.append(pred)
        return torch.cat(rows)

    return model_fn


def counted(module, calls):
    original = module.forward

    def forward(*args, **kwargs):
        calls.append(kwargs["hidden_states"].shape[0])
        return original(*args, **kwargs)

    module.forward = forward
    return module


@pytest.fixture(scope="module")
def experts():
    return {
        "student": Experts(tiny_transformer(1).eval()),
        "teacher": Experts(tiny_transformer(2).eval()),
        "wan22": Experts(tiny_transformer(3).eval(), tiny_transformer(4).eval(), BOUNDARY),
    }


@pytest.mark.parametrize("guidance", [(1.0, 1.0), (4.0, 4.0), (4.0, 1.0), (1.0, 3.0)])
@pytest.mark.parametrize(
    "rows",
    [
        ["student"],
        ["student", "student", "student"],
        ["teacher", "student", "teacher"],  # student and teacher rows mixed
        ["wan22", "student", "wan22", "teacher"],  # a two-expert model beside one-expert ones
    ],
)
def test_batched_guidance_equals_the_per_row_loop(experts, rows, guidance):
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, 12, 32, generator=generator), torch.randn(1, 12, 32, generator=generator)
    x = torch.randn(len(rows), 16, 1, 4, 6, generator=generator)
    batched, plain = (
        guided_model_fn(experts, cond, uncond, guidance),
        reference_model_fn(experts, cond, uncond, guidance),
    )
    for t_value in (999, 900, 875, 874, 300):  # either side of the boundary, and on it
        t = torch.full((len(rows),), t_value, dtype=torch.long)
        with torch.no_grad():
            torch.testing.assert_close(batched(x, t, rows), plain(x, t, rows), atol=2e-5, rtol=1e-4)
    mixed_t = torch.tensor([999, 500, 874, 875][: len(rows)])  # rows of one step at different t (e.g. a sweep)
    with torch.no_grad():
        torch.testing.assert_close(batched(x, mixed_t, rows), plain(x, mixed_t, rows), atol=2e-5, rtol=1e-4)


def test_one_forward_per_module_per_step_and_no_unconditional_rows_without_guidance():
    student_calls, high_calls, low_calls = [], [], []
    experts = {
        "student": Experts(counted(tiny_transformer(1).eval(), student_calls)),
        "wan22": Experts(
            counted(tiny_transformer(3).eval(), high_calls), counted(tiny_transformer(4).eval(), low_calls), BOUNDARY
        ),
    }
    cond, uncond = torch.randn(1, 12, 32), torch.randn(1, 12, 32)
    x = torch.randn(3, 16, 1, 4, 6)
    with torch.no_grad():
        guided_model_fn(experts, cond, uncond, (4.0, 1.0))(
            x, torch.tensor([999, 999, 500]), ["student"] * 2 + ["wan22"]
        )
        # student: 2 conditional + 2 unconditional rows in one forward; wan22 at t = 500: the low-noise expert,
        # guidance 1 there, so one row and no unconditional twin.
        assert student_calls == [4] and high_calls == [] and low_calls == [1]
        guided_model_fn(experts, cond, None, (1.0, 1.0))(x, torch.tensor([999] * 3), ["wan22"] * 3)
        assert high_calls == [3]


def test_rows_with_their_own_guidance_equal_separate_batches(experts):
    """A sweep's batch: rows keyed by Row(model, guidance) each get their own scales, in one forward per module."""
    generator = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 12, 32, generator=generator), torch.randn(1, 12, 32, generator=generator)
    keys = [Row("student", (1.0, 1.0)), Row("student", (4.0, 4.0)), Row("wan22", (2.0, 6.0)), "student"]
    x = torch.randn(len(keys), 16, 1, 4, 6, generator=generator)
    t = torch.tensor([999, 500, 300, 700])
    calls = []
    counted(experts["student"].high, calls)
    try:
        with torch.no_grad():
            batched = guided_model_fn(experts, cond, uncond, (3.0, 3.0))(x, t, keys)
            batched_calls = list(calls)
            for r, key in enumerate(keys):
                model, guidance = (key.model, key.guidance) if isinstance(key, Row) else (key, (3.0, 3.0))
                alone = reference_model_fn(experts, cond, uncond, guidance)(x[r : r + 1], t[r : r + 1], [model])
                torch.testing.assert_close(batched[r : r + 1], alone, atol=2e-5, rtol=1e-4)
    finally:
        del experts["student"].high.forward  # back to the class's forward
    # the student's three rows and the unconditional twins of its two guided ones: one forward of five rows
    assert batched_calls == [5]
