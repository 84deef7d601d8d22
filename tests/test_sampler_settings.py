"""The samplers in the product: timesteps and the default sampler in requests, PNGs, model defaults, the CLI, and the
expert handover of two-expert models."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_DEFAULTS, save_tiny_wan, tiny_transformer

from wan_t2i.cli import main
from wan_t2i.images import save_png
from wan_t2i.loading import ModelDefaults
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.request import GenerationRequest, ModelSpec

LIST = (1000, 750, 500, 250)


def count_timesteps(module, monkeypatch) -> list:
    """The timesteps of every forward of `module`."""
    calls, original = [], module.forward
    monkeypatch.setattr(module, "forward", lambda *a, **k: calls.append(k["timestep"].tolist()) or original(*a, **k))
    return calls


def with_defaults(tiny_wan_dir, tmp_path, **defaults):
    """A copy of the tiny model whose wan_t2i.json adds `defaults`."""
    bundle = shutil.copytree(tiny_wan_dir, tmp_path / "bundle")
    (bundle / "wan_t2i.json").write_text(json.dumps(TINY_DEFAULTS | defaults))
    return bundle


@pytest.mark.parametrize("value", ["1000,750,500,250", " 1000, 750 500,250 ", [1000, 750, 500, 250], LIST])
def test_request_reads_timesteps_as_text_or_list_and_takes_their_count_as_steps(value):
    request = GenerationRequest(prompt="a lake", negative_prompt="", timesteps=value, steps=20)
    assert request.timesteps == LIST and request.steps == 4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1000,750.5", "timesteps must be whole numbers separated by commas, such as 1000,750,500,250, got"),
        ("250,500", "timesteps must be strictly decreasing, got 250 then 500"),
        ("1000,0", "timesteps must be integers from 1 to 1000"),
    ],
)
def test_request_refuses_bad_timesteps(value, message):
    with pytest.raises(ValueError, match=message):
        GenerationRequest(prompt="a lake", negative_prompt="", timesteps=value)


@pytest.mark.parametrize("none", ["", "none", (), None])
def test_empty_timesteps_mean_none(none):
    assert GenerationRequest(prompt="a lake", negative_prompt="", timesteps=none).timesteps == ()


def test_a_models_timesteps_apply_unless_the_request_asks_for_its_own_grid():
    spec = ModelSpec(ModelDefaults(sampler="flow_lcm", steps=4, timesteps=LIST))
    assert spec.request("a lake").samplers == ("flow_lcm",)
    assert spec.request("a lake").timesteps == LIST
    assert spec.request("a lake", steps=4, shift=5.0).timesteps == LIST  # the model's own steps and shift: its list
    assert spec.request("a lake", steps=8).timesteps == () and spec.request("a lake", steps=8).steps == 8
    assert spec.request("a lake", shift=3.0).timesteps == ()
    assert spec.request("a lake", timesteps="none").timesteps == ()
    assert spec.request("a lake", timesteps="999,500").steps == 2


def test_model_defaults_check_the_sampler_and_the_timesteps(tmp_path):
    with pytest.raises(ValueError, match="the defaults of m .* sets? 4 timesteps and steps 20: set steps to 4"):
        ModelDefaults(name="m", steps=20, timesteps=LIST)
    with pytest.raises(ValueError, match=r"the defaults of m \(wan_t2i.json\): unknown sampler 'lcm'"):
        ModelDefaults(name="m", sampler="lcm")
    (tmp_path / "wan_t2i.json").write_text(json.dumps({"timesteps": list(LIST)}))
    assert ModelDefaults.read(tmp_path, steps=50).steps == 4  # a list sets the step count over the teacher's


def test_a_student_distilled_on_a_list_opens_on_it(tiny_wan_dir, tmp_path, monkeypatch):
    """The student's wan_t2i.json sets its sampler and timesteps; the rest comes from its teacher's defaults."""
    student = tmp_path / "student"
    tiny_transformer(seed=7).save_pretrained(student)
    (student / "wan_t2i.json").write_text(json.dumps({"sampler": "flow_lcm", "timesteps": list(LIST)}))
    pipe = WanT2IPipeline.from_pretrained(student, tiny_wan_dir, device="cpu")
    assert (pipe.defaults.sampler, pipe.defaults.steps, pipe.defaults.height) == ("flow_lcm", 4, 32)
    calls = count_timesteps(pipe.components.transformer, monkeypatch)
    result = pipe.generate("a lake", seed=1)
    assert list(result.results) == ["flow_lcm"] and [t[0] for t in calls] == list(LIST)
    assert result["flow_lcm"].parameters["timesteps"] == list(LIST)


def test_a_two_expert_wan_without_defaults_gets_wan22s():
    """Wan2.2 A14B (wan/configs/wan_t2v_A14B.py): 40 steps, guidance 4.0 high-noise / 3.0 low-noise; shift 5."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        pipe = WanT2IPipeline.from_pretrained(teacher_path=save_tiny_wan(Path(folder), two_experts=True), device="cpu")
    d = pipe.defaults
    assert (d.steps, d.shift, d.guidance_scale, d.guidance_scale_2, d.sampler) == (40, 5.0, 4.0, 3.0, "flow_unipc")
    assert ModelDefaults().steps == 50  # one expert: Wan2.1's


def test_timesteps_reach_the_transformer_and_the_png_reproduces_the_image(tiny_pipe, tmp_path, monkeypatch):
    calls = count_timesteps(tiny_pipe.components.transformer, monkeypatch)
    result = tiny_pipe.generate("a lake", samplers=["flow_euler"], seed=2, timesteps="999,600,300")["flow_euler"]
    assert [t[0] for t in calls] == [999, 600, 300] and result.diagnostics.t == [999, 600, 300]
    request = GenerationRequest.from_png(save_png(result.image, tmp_path / "x.png", result.parameters))
    assert request.timesteps == (999, 600, 300) and request.steps == 3
    again = tiny_pipe.generate(request)["flow_euler"]
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_flow_lcm_in_the_pipeline_is_deterministic_for_a_seed_and_the_same_beside_others(tiny_pipe):
    settings = dict(seed=4, timesteps=LIST, guidance_scale=1.0)
    alone = tiny_pipe.generate("a lake", samplers=["flow_lcm"], **settings)["flow_lcm"].latents
    again = tiny_pipe.generate("a lake", samplers=["flow_lcm"], **settings)["flow_lcm"].latents
    pair = tiny_pipe.generate("a lake", samplers=["legacy_ddim", "flow_lcm"], **settings)["flow_lcm"].latents
    other = tiny_pipe.generate("a lake", samplers=["flow_lcm"], **(settings | {"seed": 5}))["flow_lcm"].latents
    assert torch.equal(alone, again) and not torch.allclose(alone, other)
    torch.testing.assert_close(pair, alone, atol=1e-5, rtol=0)  # batching changes rounding only


@pytest.mark.parametrize("sampler", ["flow_unipc", "flow_dpmpp"])
def test_two_expert_handover_is_in_the_diagnostics_and_shift_moves_it(tiny_a14b_dir, sampler):
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_a14b_dir, device="cpu")
    handovers = {}
    for shift in (1.0, 12.0):
        d = pipe.generate("a lake", samplers=[sampler], seed=0, steps=10, shift=shift)[sampler].diagnostics
        handovers[shift] = d.expert_handover
        assert d.expert_handover == next(i for i, t in enumerate(d.t) if t < 875)
        assert d.as_dict()["expert_handover"] == d.expert_handover
    assert handovers[1.0] < handovers[12.0]  # a larger shift keeps the high-noise expert longer


def test_one_expert_models_report_no_handover(tiny_pipe):
    assert tiny_pipe.generate("a lake", seed=0, steps=2)["flow_unipc"].diagnostics.expert_handover is None


def test_cli_prints_the_handover_and_takes_timesteps_and_every_sampler(tiny_a14b_dir, tmp_path, capsys):
    argv = ["--teacher_path", str(tiny_a14b_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "o.png")]
    assert main([*argv, "--sampler", "flow_dpmpp", "--num_inference_steps", "10", "--shift", "12", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "experts: high-noise for steps 1-" in printed and "of 10 (t " in printed
    assert main([*argv, "--sampler", "flow_lcm", "--timesteps", "1000,750,500,250"]) == 0
    printed = capsys.readouterr().out
    assert "experts: high-noise for steps 1-1, low-noise from step 2 of 4 (t 1000 -> 750)" in printed
    assert main([*argv, "--timesteps", "500,250"]) == 0
    assert "experts: the low-noise expert ran all 2 steps" in capsys.readouterr().out


def test_cli_refuses_bad_timesteps_with_a_message(tiny_wan_dir, tmp_path, capsys):
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "o.png")]
    assert main([*argv, "--timesteps", "250,500"]) == 2
    assert "error: timesteps must be strictly decreasing, got 250 then 500" in capsys.readouterr().err
