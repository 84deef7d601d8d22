"""Tiny random Wan models, built on the CPU and saved in the Diffusers layout, for loading and pipeline tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wan_t2i.demo.tokenizer import build_word_tokenizer

WORDS = "a an the serene beautiful lake mountain mountains landscape at sunset night noon dawn with snowy green".split()
TEXT_DIM = 32


def tiny_transformer(seed: int = 0, *, in_channels: int = 16, text_dim: int = TEXT_DIM) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=in_channels,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )


def tiny_components(seed: int = 0) -> dict:
    tokenizer = build_word_tokenizer(WORDS)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    # Latent statistics as a trained VAE would carry them (here: arbitrary, but not the identity).
    vae.register_to_config(
        latents_mean=[0.1 * i - 0.8 for i in range(16)], latents_std=[0.5 + 0.1 * i for i in range(16)]
    )
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return dict(
        transformer=tiny_transformer(seed), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler
    )


def save_tiny_wan(folder: Path, *, two_experts: bool = False, defaults: dict | None = None, seed: int = 0) -> Path:
    """Save a tiny random Wan model in the Diffusers layout (optionally Wan 2.2's two experts) to `folder`."""
    components = tiny_components(seed)
    if two_experts:
        pipe = WanPipeline(**components, transformer_2=tiny_transformer(seed + 1), boundary_ratio=0.875)
    else:
        pipe = WanPipeline(**components)
    pipe.save_pretrained(folder, safe_serialization=True)
    if defaults is not None:
        (folder / "wan_t2i.json").write_text(json.dumps(defaults))
    return folder


def free_port() -> int:
    """A free TCP port on the loopback interface, for an app launched by a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_DEFAULTS = {
    "name": "tiny-test",
    "steps": 4,
    "shift": 5.0,
    "guidance_scale": 4.0,
    "height": 32,
    "width": 48,
    "negative_prompt": "",
    "resolutions": [[32, 48], [48, 32]],
    "min_side": 16,
    "max_side": 128,
}


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan"), defaults=TINY_DEFAULTS)


@pytest.fixture(scope="session")
def tiny_a14b_dir(tmp_path_factory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-a14b"), two_experts=True, defaults=TINY_DEFAULTS)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_wan_dir):
    from wan_t2i.pipeline import WanT2IPipeline

    return WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu")


@pytest.fixture(scope="session")
def demo_pipe():
    """The embedded demo model, loaded once for the tests that need a trained model."""
    from wan_t2i.pipeline import WanT2IPipeline

    return WanT2IPipeline.from_pretrained(device="cpu")
