"""The VAE at T = 1: test images (the user's, or landscapes the project renders), their clean latents, and the PSNR
of an encode-decode round trip through the frozen video VAE, one frame."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from wan_t2i.demo.scenes import caption_scene, render_scene, sample_scene
from wan_t2i.metrics import psnr

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# A round trip at or above this PSNR loses nothing a viewer would call garbage: the VAE is not the problem. Below
# POOR_PSNR_DB the VAE itself blurs or breaks images (the demo's 3.8M-parameter VAE: 24 dB at 64 px, 28-34 dB at
# 128-256 px; Wan 2.1's VAE reconstructs images in the 30s).
GOOD_PSNR_DB = 25.0
POOR_PSNR_DB = 18.0


@dataclass
class TestImages:
    images: list[Image.Image]  # RGB, all of one size
    captions: list[str]  # the prompt each image shows ("" for the user's own images)
    source: str  # "rendered landscapes" or the folder they came from


@dataclass
class VAERoundTrip:
    """PSNR of decode(encode(image)) through the VAE with one frame, and what the latents look like."""

    psnr_db: list[float]  # per image
    mean_psnr_db: float
    latent_std: float  # of the normalised latents of the test images; the samplers expect about 1
    latent_mean: float
    image_size: tuple[int, int]  # (height, width)
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def render_test_images(count: int, size: int, *, seed: int = 0) -> TestImages:
    """`count` landscapes from `wan_t2i.demo.scenes` (any attribute combination) with a caption each."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out=None) for _ in range(count)]
    images = [render_scene(scene, size, seed=seed + i) for i, scene in enumerate(scenes)]
    return TestImages(images, [caption_scene(scene, rng) for scene in scenes], "rendered landscapes")


def load_test_images(folder: Path, size: int, *, count: int | None = None) -> TestImages:
    """The images of `folder` (sorted by name), centre-cropped and resized to size x size."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"--images {folder} holds no {', '.join(IMAGE_SUFFIXES)} files")
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS))
        except OSError as error:
            raise ValueError(f"cannot read the image {path}: {error}") from error
    return TestImages(images, [""] * len(images), str(folder))


def to_video(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> (B, 3, 1, H, W) in [-1, 1]: one-frame videos, as the Wan VAE takes them."""
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images]))  # (B, H, W, 3) uint8
    return pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).unsqueeze(2)


@torch.no_grad()
def encode_images(pipe, images: list[Image.Image]) -> torch.Tensor:
    """Normalised clean latents (B, C, 1, h, w), float32 on the pipeline's device: the posterior means, as the
    samplers see latents ((z - latents_mean) / latents_std, the inverse of `pipe.decode`)."""
    vae = pipe.components.vae
    z = vae.encode(to_video(images).to(pipe.device, vae.dtype)).latent_dist.mode().float()
    return (z - pipe.latents_mean.to(z.device)) / pipe.latents_std.to(z.device)


def vae_round_trip(pipe, images: list[Image.Image], latents: torch.Tensor | None = None) -> VAERoundTrip:
    """Encode and decode `images` through the pipeline's VAE (T = 1) and score the round trip.

    Args:
        pipe: a loaded WanT2IPipeline.
        images: RGB images of one size, a multiple of the VAE's stride.
        latents: their normalised latents, if already encoded (`encode_images`).
    """
    latents = encode_images(pipe, images) if latents is None else latents
    decoded = pipe.decode(latents)
    scores = [psnr(out, image) for out, image in zip(decoded, images, strict=True)]
    mean = sum(scores) / len(scores)
    std, offset = latents.std().item(), latents.mean().item()
    if mean >= GOOD_PSNR_DB:
        verdict = (
            f"the VAE reconstructs single frames (T = 1) at {mean:.1f} dB PSNR: it handles images, and is not why "
            "samples look like garbage"
        )
    elif mean >= POOR_PSNR_DB:
        verdict = f"the VAE reconstructs single frames at {mean:.1f} dB PSNR: soft, but it keeps the picture"
    else:
        verdict = f"the VAE reconstructs single frames at only {mean:.1f} dB PSNR: it loses the picture by itself"
    if not math.isfinite(std) or not 0.5 < std < 2:
        verdict += (
            f"; the normalised latents of these images have std {std:.2f} where the samplers expect about 1: check "
            "the VAE's latents_mean / latents_std"
        )
    return VAERoundTrip(
        psnr_db=scores,
        mean_psnr_db=mean,
        latent_std=std,
        latent_mean=offset,
        image_size=images[0].size[::-1],
        verdict=verdict,
    )
