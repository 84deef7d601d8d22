"""A tiny random Wan model whose image depends visibly on its latents and its prompt, for parity and stored outputs.

conftest's tiny model decodes nearly every latent to the same flat image (base_dim 3: two seeds' images differ by at
most 2/255), and its prompt moves the velocity by 0.1%: an image compared within 1/255 could not catch a wrong
sampler or wrong guidance there. Here the VAE is wider and the text embeddings louder, nothing else changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from conftest import TINY_DEFAULTS, tiny_components
from diffusers import AutoencoderKLWan, WanPipeline

VAE_BASE_DIM = 16  # decoded pixels move by up to 24/255 for a 0.1 change of the latents (base_dim 3: by 1/255)
TEXT_GAIN = 30.0  # UMT5's final norm scaled so the prompt's tokens, not the ~500 zero pads, lead cross-attention


def save_sensitive_wan(folder: Path, seed: int = 0) -> Path:
    """Save conftest's tiny Wan (same transformer and text encoder) with a wider VAE and louder text to `folder`."""
    components = tiny_components(seed)
    torch.manual_seed(seed)
    components["vae"] = AutoencoderKLWan.from_config({**components["vae"].config, "base_dim": VAE_BASE_DIM})
    with torch.no_grad():
        components["text_encoder"].encoder.final_layer_norm.weight.mul_(TEXT_GAIN)
    WanPipeline(**components).save_pretrained(folder, safe_serialization=True)
    (folder / "wan_t2i.json").write_text(json.dumps(TINY_DEFAULTS))
    return folder


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run on one thread: tensors this small gain nothing from a second, whose spin-waits on a busy 2-core machine
    made each generation 1-8 s instead of 0.2 s (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
