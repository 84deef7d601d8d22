"""The A/B pipeline on a tiny random Wan model: shared noise and text, batching, experts, decoding, errors."""

import numpy as np
import pytest
import torch

from wan_t2i.constants import WAN_NEGATIVE_PROMPT
from wan_t2i.images import read_parameters, save_png
from wan_t2i.loading import ModelDefaults
from wan_t2i.pipeline import WanT2IPipeline


def count_calls(module, monkeypatch):
    """Record the batch size and timesteps of every forward of `module`."""
    calls = []
    original = module.forward

    def forward(*args, **kwargs):
        calls.append((kwargs["hidden_states"].shape[0], kwargs["timestep"].tolist()))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)
    return calls


def test_ab_pair_shares_noise_and_text_and_matches_single_runs(tiny_pipe):
    pair = tiny_pipe.generate("a lake at sunset", samplers=["legacy_ddim", "flow_unipc"], seed=11)
    assert list(pair.results) == ["legacy_ddim", "flow_unipc"]
    for name in ("legacy_ddim", "flow_unipc"):
        alone = tiny_pipe.generate("a lake at sunset", samplers=[name], seed=11)
        torch.testing.assert_close(pair[name].latents, alone[name].latents, atol=1e-4, rtol=1e-4)
        difference = np.abs(np.asarray(pair[name].image, int) - np.asarray(alone[name].image, int))
        assert difference.max() <= 1


def test_samplers_and_guidance_share_one_forward_per_step(tiny_pipe, monkeypatch):
    calls = count_calls(tiny_pipe.components.transformer, monkeypatch)
    tiny_pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], seed=1, steps=5, guidance_scale=4.0)
    # 2 samplers x (conditional + unconditional), but for the first step (both at t = 999 on the same noise: one
    # evaluation) and the last (legacy_ddim at t = 0 ignores the prediction): 2 rows there.
    assert [batch for batch, _ in calls] == [2, 4, 4, 4, 2]
    assert calls[0][1] == [999, 999] and 0 not in calls[-1][1]


def test_student_and_teacher_never_share_a_forward(tiny_wan_dir, tmp_path, monkeypatch):
    from conftest import tiny_transformer

    tiny_transformer(seed=7).save_pretrained(tmp_path / "student")
    pipe = WanT2IPipeline.from_pretrained(tmp_path / "student", tiny_wan_dir, device="cpu", with_teacher=True)
    student = count_calls(pipe.components.transformer, monkeypatch)
    teacher = count_calls(pipe.components.teacher_transformer, monkeypatch)
    pipe.generate("a lake", samplers=["flow_unipc"] * 2, models=["student", "teacher"], seed=3, steps=3)
    assert [batch for batch, _ in student] == [batch for batch, _ in teacher] == [2] * 3  # same noise and t, two models


def test_guidance_one_skips_the_unconditional_branch_and_its_encoding(tiny_pipe, monkeypatch):
    calls = count_calls(tiny_pipe.components.transformer, monkeypatch)
    encoded = []
    monkeypatch.setattr(tiny_pipe, "_text_cache", {})
    original = tiny_pipe.components.text_encoder.forward
    monkeypatch.setattr(
        tiny_pipe.components.text_encoder, "forward", lambda *a, **k: encoded.append(1) or original(*a, **k)
    )
    tiny_pipe.generate("a green lake", samplers=["flow_unipc"], seed=1, steps=3, guidance_scale=1.0)
    assert [batch for batch, _ in calls] == [1] * 3
    assert len(encoded) == 1


def test_text_encodings_are_cached_and_bounded(tiny_wan_dir, monkeypatch):
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu")
    pipe.text_cache_size = 2
    encoded = []
    original = pipe.components.text_encoder.forward
    monkeypatch.setattr(pipe.components.text_encoder, "forward", lambda *a, **k: encoded.append(1) or original(*a, **k))
    pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], seed=0, steps=2, negative_prompt="night")
    assert len(encoded) == 2  # the prompt and the negative prompt, once each for both samplers
    pipe.generate("a  lake ", samplers=["flow_unipc"], seed=1, steps=2, negative_prompt="night")
    assert len(encoded) == 2  # whitespace-cleaned to the same prompt: both from the cache
    pipe.generate("a mountain", samplers=["flow_unipc"], seed=1, steps=2, negative_prompt="night")
    assert len(encoded) == 3 and len(pipe._text_cache) == 2


def test_text_embedding_is_zero_past_the_prompt_tokens(tiny_pipe):
    embedding = tiny_pipe.encode_prompt("a serene lake")
    n_tokens = len(tiny_pipe.components.tokenizer("a serene lake").input_ids)
    assert embedding.shape == (1, 512, 32)
    assert embedding[0, :n_tokens].abs().sum(-1).min() > 0 and embedding[0, n_tokens:].abs().max() == 0


@pytest.mark.parametrize("words", [3, 100, 700])  # one bucket, several, and past the 512 tokens it truncates to
def test_text_embedding_is_wans_though_only_the_prompts_tokens_are_encoded(tiny_pipe, monkeypatch, words):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    prompt = " ".join(["a serene lake at sunset"] * words)[: 5 * words]
    c = tiny_pipe.components
    stock = WanPipeline(tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae, transformer=c.transformer,
                        scheduler=UniPCMultistepScheduler())  # fmt: skip
    with torch.no_grad():  # diffusers' own: all 512 positions encoded, then trimmed to the prompt and zero-padded
        theirs, _ = stock.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=512)
    lengths = []
    original = c.text_encoder.forward

    def forward(ids, *args, **kwargs):
        lengths.append(ids.shape[1])
        return original(ids, *args, **kwargs)

    monkeypatch.setattr(c.text_encoder, "forward", forward)
    tiny_pipe._text_cache.clear()
    ours = tiny_pipe.encode_prompt(prompt)
    n_tokens = min(512, len(c.tokenizer(prompt).input_ids))
    assert lengths == [min(512, -(-n_tokens // 64) * 64)]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_two_experts_switch_at_the_boundary_each_with_its_guidance(tiny_a14b_dir, monkeypatch):
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_a14b_dir, device="cpu")
    high = count_calls(pipe.components.transformer, monkeypatch)
    low = count_calls(pipe.components.transformer_2, monkeypatch)
    result = pipe.generate("a lake", samplers=["flow_unipc"], seed=0, steps=6, guidance_scale=4.0, guidance_scale_2=1)
    t = result["flow_unipc"].diagnostics.t
    assert [ts[0] for _, ts in high] == [v for v in t if v >= 875]
    assert [ts[0] for _, ts in low] == [v for v in t if v < 875]
    assert {b for b, _ in high} == {2} and {b for b, _ in low} == {1}  # guidance 1 on the low-noise expert


def test_decode_undoes_the_latent_normalisation(tiny_pipe):
    latents = torch.randn(2, 16, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    images = tiny_pipe.decode(latents)
    vae = tiny_pipe.components.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        frames = vae.decode(latents * std + mean).sample[:, :, 0].clamp(-1, 1)
    expected = ((frames + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert images[0].size == (48, 32) and images[0].mode == "RGB"
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in images]), expected)


def test_seed_makes_images_reproducible_and_none_picks_one(tiny_pipe):
    first = tiny_pipe.generate("a lake", seed=5, steps=3)
    again = tiny_pipe.generate("a lake", seed=5, steps=3)
    other = tiny_pipe.generate("a lake", seed=6, steps=3)
    assert np.array_equal(np.asarray(first["flow_unipc"].image), np.asarray(again["flow_unipc"].image))
    assert not np.array_equal(np.asarray(first["flow_unipc"].image), np.asarray(other["flow_unipc"].image))
    random_seed = tiny_pipe.generate("a lake", steps=2).seed
    assert isinstance(random_seed, int) and 0 <= random_seed < 2**32


def test_png_parameters_reproduce_the_image(tiny_pipe, tmp_path):
    result = tiny_pipe.generate("a lake at night", samplers=["flow_euler"], seed=9, steps=3, shift=3.0)["flow_euler"]
    path = save_png(result.image, tmp_path / "x.png", result.parameters)
    stored = read_parameters(path)
    assert stored["seed"] == 9 and stored["sampler"] == "flow_euler" and stored["shift"] == 3.0
    assert stored["prompt"] == "a lake at night" and stored["model"] == "tiny-test"
    keys = ("negative_prompt", "steps", "shift", "guidance_scale", "guidance_scale_2", "seed", "height", "width")
    again = tiny_pipe.generate(stored["prompt"], samplers=[stored["sampler"]], **{k: stored[k] for k in keys})
    assert np.array_equal(np.asarray(again["flow_euler"].image), np.asarray(result.image))


def test_diagnostics_flag_the_legacy_loop(tiny_pipe):
    result = tiny_pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], seed=0, steps=10)
    legacy, flow = result["legacy_ddim"].diagnostics, result["flow_unipc"].diagnostics
    assert len(legacy.latent_std) == len(flow.x0_std) == 10
    assert legacy.std_ratio > 3 * flow.std_ratio
    assert "wider than the VAE expects: the decoded image will be garbage" in legacy.verdict
    assert result.timings["total"] >= result.timings["denoise"] > 0


def test_default_negative_prompt_is_wans_unless_the_model_sets_one(tiny_wan_dir, tmp_path):
    import json
    import shutil

    assert ModelDefaults.read(None).negative_prompt == WAN_NEGATIVE_PROMPT
    (tmp_path / "plain").mkdir()
    assert ModelDefaults.read(tmp_path / "plain").negative_prompt == WAN_NEGATIVE_PROMPT  # no wan_t2i.json
    bundle = shutil.copytree(tiny_wan_dir, tmp_path / "own")
    (bundle / "wan_t2i.json").write_text(json.dumps({"negative_prompt": "blurry"}))
    pipe = WanT2IPipeline.from_pretrained(teacher_path=bundle, device="cpu")
    assert pipe.request("a lake").negative_prompt == "blurry"
    assert pipe.request("a lake", negative_prompt="").negative_prompt == ""  # an explicit empty one is kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": "x" * 100_000}, "the prompt is 100000 characters long; the limit is 2000"),
        ({"prompt": 42}, "the prompt must be text, got int 42"),
        ({"height": 40}, "height must be a multiple of 16 .*got 40; try 48"),
        ({"width": 20}, "width must be a multiple of 16 .*got 20; try 16"),
        ({"width": 4096}, "width must be between 16 and 128 pixels for this model, got 4096"),
        ({"height": "32"}, "height must be an integer number of pixels"),
        ({"steps": 0}, "steps must be an integer from 1 to 1000, got 0"),
        ({"steps": 10_000}, "steps must be an integer from 1 to 1000, got 10000"),
        ({"shift": 0}, "shift must be a finite number > 0"),
        ({"shift": -2.0}, "shift must be a finite number > 0"),
        ({"guidance_scale": 0.5}, "guidance_scale must be from 1"),
        ({"guidance_scale": "high"}, "guidance_scale must be a number"),
        ({"seed": -1}, "seed must be an integer from 0 to 4294967295"),
        ({"seed": 2**40}, "seed must be an integer from 0 to 4294967295"),
        ({"samplers": ["euler_a"]}, "unknown sampler 'euler_a'"),
        ({"samplers": []}, "choose at least one sampler"),
        ({"samplers": ["flow_unipc"], "models": ["teacher"]}, "no teacher transformer is loaded"),
        ({"samplers": ["flow_unipc", "flow_unipc"]}, "each sampler/model pair may appear once"),
    ],
)
def test_bad_arguments_raise_value_errors_that_say_what_to_do(tiny_pipe, kwargs, message):
    args = {"prompt": "a lake", "steps": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        tiny_pipe.generate(args.pop("prompt"), **args)


def test_student_against_teacher_from_one_seed(tiny_wan_dir, tmp_path):
    from conftest import tiny_transformer

    tiny_transformer(seed=7).save_pretrained(tmp_path / "student")
    pipe = WanT2IPipeline.from_pretrained(tmp_path / "student", tiny_wan_dir, device="cpu", with_teacher=True)
    both = pipe.generate("a lake", samplers=["flow_unipc", "flow_unipc"], models=["student", "teacher"], seed=3)
    assert list(both.results) == ["student/flow_unipc", "teacher/flow_unipc"]
    teacher_alone = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu").generate("a lake", seed=3)
    torch.testing.assert_close(
        both["teacher/flow_unipc"].latents, teacher_alone["flow_unipc"].latents, atol=1e-4, rtol=0
    )
    assert not torch.allclose(both["student/flow_unipc"].latents, both["teacher/flow_unipc"].latents)


def test_request_validates_without_sampling(tiny_pipe, monkeypatch):
    calls = count_calls(tiny_pipe.components.transformer, monkeypatch)
    resolved = tiny_pipe.request("a lake", samplers=["legacy_ddim", "flow_unipc"])
    assert resolved.steps == 4 and resolved.height == 32 and resolved.seed is None
    with pytest.raises(ValueError, match="steps must be an integer from 1 to 1000, got 0"):
        tiny_pipe.request("a lake", steps=0)
    assert calls == []


def test_a_png_holds_the_request_that_reproduces_it(tiny_pipe, tmp_path):
    from wan_t2i.request import GenerationRequest

    pair = tiny_pipe.generate("a lake at dawn", samplers=["legacy_ddim", "flow_euler"], seed=4, steps=3, shift=2.0)
    path = save_png(pair["flow_euler"].image, tmp_path / "b.png", pair["flow_euler"].parameters)
    request = GenerationRequest.from_png(path)
    assert request == pair.request.branch(1) and request.samplers == ("flow_euler",) and request.seed == 4
    again = tiny_pipe.generate(request)
    assert np.array_equal(np.asarray(again["flow_euler"].image), np.asarray(pair["flow_euler"].image))
    plain = tmp_path / "plain.png"
    pair["flow_euler"].image.copy().save(plain)  # a copy drops the chunk, as other tools do
    with pytest.raises(ValueError, match="carries no 'parameters' chunk"):
        GenerationRequest.from_png(plain)


def test_a_request_is_validated_once_when_made_and_is_frozen(tiny_pipe):
    import dataclasses

    from wan_t2i.request import GenerationRequest

    request = tiny_pipe.request("a lake", samplers="flow_unipc", guidance_scale=3)
    assert request.samplers == ("flow_unipc",) and request.models == ("student",)
    assert request.guidance_scale == request.guidance_scale_2 == 3.0 and isinstance(request.guidance_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.steps = 7
    with pytest.raises(ValueError, match="shift must be a finite number > 0, got 10000"):
        GenerationRequest("a lake", "", shift=10**400)
    with pytest.raises(ValueError, match="unknown setting"):
        tiny_pipe.request("a lake", stpes=3)
    with pytest.raises(ValueError, match="height must be a multiple of 16"):  # the model's own rule, at generate
        tiny_pipe.generate(GenerationRequest("a lake", "", height=40, width=48, steps=1))


@torch.inference_mode()
def test_the_text_encoders_warm_up_changes_nothing_it_encodes(tiny_wan_dir):
    """`warm_text_encoder` (run by from_pretrained on a GPU while the transformers load) encodes its prompts through
    the pipeline's own path and leaves the encoder and what it encodes as they were."""
    from wan_t2i.loading import load_components
    from wan_t2i.pipeline import WARM_UP_PROMPTS, clean_prompt, encode_text, warm_text_encoder

    pipe = WanT2IPipeline(load_components(teacher_path=tiny_wan_dir, device="cpu"))
    encoder, tokenizer = pipe.components.text_encoder, pipe.components.tokenizer
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    expected = [pipe.encode_prompt(p) for p in WARM_UP_PROMPTS]
    assert warm_text_encoder(encoder, tokenizer, pipe.device) > 0
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    for prompt, embedding in zip(WARM_UP_PROMPTS, expected, strict=True):
        assert torch.equal(encode_text(encoder, tokenizer, clean_prompt(prompt), pipe.device), embedding)


def test_a_failed_warm_up_is_logged_and_loading_goes_on(tiny_wan_dir, caplog):
    """A warm-up that fails (here: a GPU asked of a CPU-only machine) logs a warning from its own thread, and the block
    that started it ends normally; off a GPU, or when not enabled, no warm-up starts at all."""
    from wan_t2i.loading import load_components
    from wan_t2i.pipeline import text_encoder_warm_up

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, where the warm-up on 'cuda' fails")
    with text_encoder_warm_up(torch.device("cuda")) as on_encoders:
        components = load_components(teacher_path=tiny_wan_dir, device="cpu", on_encoders=on_encoders)
    assert "the text encoder's warm-up failed" in caplog.text
    for device, enabled in ((torch.device("cpu"), True), (torch.device("cuda"), False)):
        caplog.clear()
        with text_encoder_warm_up(device, enabled=enabled) as on_encoders:
            on_encoders(components.text_encoder, components.tokenizer)
        assert caplog.text == ""


def test_from_pretrained_loads_under_a_shorter_switch_interval_and_puts_it_back(tiny_wan_dir, monkeypatch):
    """The loading (and what reads ahead beside it) runs with Python's thread switch interval at
    LOADING_SWITCH_INTERVAL_S, so that it waits less for the interpreter's lock beside the warm-up threads
    (benchmarks/load_beside.py); the process gets its own back after, also when the loading fails."""
    import sys

    from wan_t2i import pipeline
    from wan_t2i.loading import ModelLoadError

    seen = []

    def load_components(*args, **kwargs):
        seen.append(sys.getswitchinterval())
        return loaded(*args, **kwargs)

    loaded = pipeline.load_components
    monkeypatch.setattr(pipeline, "load_components", load_components)
    before = sys.getswitchinterval()
    assert before != pytest.approx(pipeline.LOADING_SWITCH_INTERVAL_S)
    WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu")
    assert seen == [pytest.approx(pipeline.LOADING_SWITCH_INTERVAL_S)] and sys.getswitchinterval() == before
    with pytest.raises(ModelLoadError):
        WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir / "missing", device="cpu")
    assert sys.getswitchinterval() == before


def test_overlapping_switch_intervals_leave_the_process_its_own():
    """Two loadings at once (their blocks open and close out of order) put back the interval from before the first,
    not the one the other had set."""
    import sys

    from wan_t2i.pipeline import switch_interval

    own = sys.getswitchinterval()
    first, second = switch_interval(0.0005), switch_interval(0.0002)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.0002)  # the other still loading
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == own


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the warm-up runs on a GPU only")
def test_a_warmed_up_start_renders_what_a_cold_one_does(tiny_wan_dir):
    images = []
    for warm_up in (True, False):
        pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cuda", warm_up=warm_up)
        images.append(np.asarray(pipe.generate("a lake", samplers=["flow_unipc"], seed=1).results["flow_unipc"].image))
    assert np.array_equal(*images)
