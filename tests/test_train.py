"""The demo training script, run once in --tiny mode on the CPU: losses, bundle layout, loading, frozen parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5EncoderModel

from wan_t2i.constants import TEXT_LEN
from wan_t2i.demo.card import write_model_card
from wan_t2i.demo.components import TINY, build_text_encoder
from wan_t2i.demo.train import TINY_RECIPE, encode_latents, encode_prompts, main, render_dataset

MB = 1_000_000
SEED = 3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "bundle"
    assert main(["--tiny", "--out", str(out), "--seed", str(SEED), "--workers", "1", "--no-cache"]) == 0
    return out


@pytest.fixture(scope="module")
def log(bundle: Path) -> dict:
    return json.loads((bundle / "train_log.json").read_text())


@pytest.fixture(scope="module")
def pipe(bundle: Path) -> WanPipeline:
    pipe = WanPipeline.from_pretrained(bundle)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.slow
def test_both_losses_fall(log: dict) -> None:
    vae, student = np.asarray(log["vae"]["loss"]), np.asarray(log["student"]["loss"])
    assert len(vae) == TINY_RECIPE.vae_steps and len(student) == TINY_RECIPE.student_steps
    assert np.isfinite(vae).all() and np.isfinite(student).all()
    assert vae[-5:].mean() < 0.8 * vae[:5].mean()
    assert student[-10:].mean() < 0.9 * student[:10].mean()


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_bundle_is_complete_and_small(bundle: Path, log: dict) -> None:
    expected = [
        "model_index.json",
        "transformer/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
        "wan_t2i.json",
        "README.md",
        "training_curves.png",
        "train_log.json",
    ]
    for name in expected:
        assert (bundle / name).is_file(), name
    for component in ("transformer", "vae", "text_encoder"):
        assert list((bundle / component).glob("*.safetensors")), component
    files = [f for f in bundle.rglob("*") if f.is_file()]
    assert max(f.stat().st_size for f in files) <= 10 * MB
    assert sum(f.stat().st_size for f in files) <= 30 * MB

    index = json.loads((bundle / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    defaults = json.loads((bundle / "wan_t2i.json").read_text())
    assert defaults["steps"] == 20 and defaults["shift"] == 5.0 and defaults["negative_prompt"] == ""
    assert defaults["height"] == defaults["width"] == TINY.image_size
    assert defaults["resolutions"] == [[TINY.image_size, TINY.image_size]]
    assert defaults["guidance_scale"] == log["guidance_sweep"]["chosen"]
    assert defaults["guidance_scale"] in TINY_RECIPE.guidance_scales
    assert "landscapes" in defaults["vocabulary_note"]


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_stock_wan_pipeline_loads_and_generates(pipe: WanPipeline) -> None:
    assert isinstance(pipe.transformer, WanTransformer3DModel) and pipe.transformer.dtype == torch.float32
    assert isinstance(pipe.vae, AutoencoderKLWan) and pipe.vae.config.z_dim == 16
    assert isinstance(pipe.text_encoder, UMT5EncoderModel)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    sc = pipe.scheduler.config
    assert (sc.prediction_type, sc.use_flow_sigmas, sc.flow_shift, sc.solver_order, sc.solver_type) == (
        "flow_prediction",
        True,
        5.0,
        2,
        "bh2",
    )
    assert pipe.vae_scale_factor_spatial == 8
    size = TINY.image_size
    frames = pipe(
        "Snowy peaks beyond a lake at dawn, with a clear sky.",
        height=size,
        width=size,
        num_frames=1,
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 1, size, size, 3) and np.isfinite(frames).all()


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_latent_statistics_match_training_data(pipe: WanPipeline) -> None:
    """The saved VAE still gives latents with the stored mean and std: it was frozen after they were measured."""
    images, _ = render_dataset(TINY_RECIPE.num_scenes, TINY.image_size, SEED)
    latents = encode_latents(pipe.vae, torch.from_numpy(images))
    mean, std = latents.mean(dim=(0, 2, 3, 4)), latents.std(dim=(0, 2, 3, 4))
    torch.testing.assert_close(mean, torch.tensor(pipe.vae.config.latents_mean), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, torch.tensor(pipe.vae.config.latents_std), atol=1e-4, rtol=1e-4)
    assert (std > 0.01).all()


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_text_encoder_is_its_frozen_initialisation(pipe: WanPipeline) -> None:
    fresh = build_text_encoder(TINY.text_encoder, len(pipe.tokenizer), SEED).state_dict()
    saved = pipe.text_encoder.state_dict()
    assert fresh.keys() == saved.keys()
    for name, tensor in fresh.items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_training_text_encoding_matches_wan_pipeline(pipe: WanPipeline) -> None:
    prompts = ["A serene lake at sunset.", "", "Green hills and a grassy meadow at noon, under a cloudy sky."]
    with torch.no_grad():
        ours = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, torch.device("cpu"))
        theirs, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=TEXT_LEN)
    assert ours.shape == (3, TEXT_LEN, TINY.text_encoder.d_model)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert ours[1, 1:].abs().max() == 0  # "" is one </s> token, then zeros


@pytest.mark.slow  # the module's `bundle` fixture trains the tiny model first: over 10 s on 2 cores
def test_model_card(bundle: Path, log: dict, tmp_path: Path) -> None:
    card = (bundle / "README.md").read_text()
    for needle in ("## Recipe", "WanTransformer3DModel", "![training curves](training_curves.png)", "## Vocabulary"):
        assert needle in card
    assert "## Evaluation\n\n_Not evaluated yet" in card
    write_model_card(tmp_path, log, evaluation="| sampler | accuracy |\n|---|---|")
    assert "## Evaluation\n\n| sampler | accuracy |" in (tmp_path / "README.md").read_text()


def test_cli_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--tiny", "--out", str(tmp_path), "--student-steps", "0"])
