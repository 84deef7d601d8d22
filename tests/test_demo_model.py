"""The shipped demo model (wan_t2i/demo_model): it loads both ways and draws what it is asked, with flow matching."""

import json

import numpy as np
import pytest
import torch

from wan_t2i.demo.analyzer import analyze_image
from wan_t2i.loading import DEMO_MODEL_DIR
from wan_t2i.pipeline import WanT2IPipeline

MAX_FILE_BYTES = 10 * 2**20
MAX_BUNDLE_BYTES = 30 * 2**20


@pytest.fixture(scope="module")
def demo_pipe():
    return WanT2IPipeline.from_pretrained(device="cpu")  # no paths: the embedded demo model


def test_bundle_fits_a_space_without_lfs():
    files = [p for p in DEMO_MODEL_DIR.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) <= MAX_FILE_BYTES
    assert sum(p.stat().st_size for p in files) <= MAX_BUNDLE_BYTES
    card = (DEMO_MODEL_DIR / "README.md").read_text()
    for section in ("## Evaluation", "training_curves.png", "flow_unipc", "legacy_ddim"):
        assert section in card
    assert (DEMO_MODEL_DIR / "training_curves.png").exists()


@pytest.mark.slow
def test_stock_diffusers_loads_and_runs_the_bundle():
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(DEMO_MODEL_DIR)
    frames = pipe(
        "a lake at noon", negative_prompt="", height=64, width=64, num_frames=1, num_inference_steps=2,
        output_type="np", generator=torch.Generator().manual_seed(0),
    ).frames  # fmt: skip
    assert frames.shape == (1, 1, 64, 64, 3) and np.isfinite(frames).all()


def test_our_loader_reads_the_bundle_defaults(demo_pipe):
    d = demo_pipe.defaults
    stored = json.loads((DEMO_MODEL_DIR / "wan_t2i.json").read_text())
    assert (d.steps, d.shift, d.height, d.width) == (20, 5.0, 256, 256)
    assert d.guidance_scale == stored["guidance_scale"] and d.vocabulary_note


@pytest.mark.slow
def test_night_is_darker_than_noon_from_the_same_seed(demo_pipe):
    brightness = {}
    for time_of_day in ("noon", "night"):
        image = demo_pipe.generate(f"a lake at {time_of_day} with snowy mountains", seed=3)["flow_unipc"].image
        brightness[time_of_day] = np.asarray(image, dtype=float).mean()
        assert analyze_image(image)["time_of_day"] == time_of_day
    assert brightness["night"] < 0.6 * brightness["noon"]


def test_flow_matching_draws_the_prompt_and_the_legacy_loop_does_not(demo_pipe):
    result = demo_pipe.generate("A serene lake at sunset", samplers=["legacy_ddim", "flow_unipc"], seed=7)
    flow, legacy = result["flow_unipc"], result["legacy_ddim"]
    predicted = analyze_image(flow.image)
    assert predicted["time_of_day"] == "sunset" and predicted["water"] == "lake"
    assert legacy.diagnostics.std_ratio > 5 * flow.diagnostics.std_ratio
    assert 0.6 < flow.diagnostics.std_ratio < 1.6
