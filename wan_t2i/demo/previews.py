"""Fit the demo bundle's latent -> RGB preview map on its own VAE, and score a map against the full decode.

    python -m wan_t2i.demo.previews --model wan_t2i/demo_model --write   # refit and store it in wan_t2i.json

Scenes from `wan_t2i.demo.scenes` are encoded by the bundle's frozen VAE, normalised as the pipeline normalises
latents, and decoded again; the map is fitted (least squares) from those latents to their decoded images, because
a preview stands in for the decode, not for the original picture.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wan_t2i.demo.scenes import render_scene, sample_scene
from wan_t2i.loading import DEMO_MODEL_DIR
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.previews import LatentRGB, fit_latent_rgb


@torch.inference_mode()
def encoded_scenes(
    pipe: WanT2IPipeline, n: int, *, size: int = 256, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` scenes through the VAE: normalised latents (n, C, 1, h, w) and the images they decode to (n, 3, H, W)."""
    rng = np.random.default_rng(seed)
    pixels = np.stack([np.asarray(render_scene(sample_scene(rng, held_out=None), size, seed=i)) for i in range(n)])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae = pipe.components.vae
    z = vae.encode(images[:, :, None].to(pipe.device, vae.dtype)).latent_dist.mode().float().cpu()
    latents = (z - pipe.latents_mean) / pipe.latents_std
    decoded = pipe.decode(latents)
    return latents, torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in decoded]).float() / 127.5 - 1


def preview_psnr(latent_rgb: LatentRGB, latents: torch.Tensor, decoded: torch.Tensor) -> float:
    """PSNR (dB) of the map's preview against the full decode, both at the latents' resolution."""
    target = F.adaptive_avg_pool2d(decoded, latents.shape[-2:])
    mse = (latent_rgb(latents).clamp(-1, 1) - target).pow(2).mean().item()
    return 10 * math.log10(4 / mse) if mse > 0 else math.inf  # peak-to-peak 2 in [-1, 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle folder (default: the embedded demo model)")
    parser.add_argument("--scenes", type=int, default=64, help="scenes to fit on (a quarter more are held out)")
    parser.add_argument("--write", action="store_true", help="store the fitted map in the bundle's wan_t2i.json")
    args = parser.parse_args(argv)
    pipe = WanT2IPipeline.from_pretrained(teacher_path=args.model, device="cpu")
    held_out = max(1, args.scenes // 4)
    latents, decoded = encoded_scenes(pipe, args.scenes + held_out)
    fitted = fit_latent_rgb(
        latents[: args.scenes],
        decoded[: args.scenes],
        source=f"fitted by wan_t2i.demo.previews on {args.scenes} scenes",
    )
    score = preview_psnr(fitted, latents[args.scenes :], decoded[args.scenes :])
    print(f"preview vs full decode on {held_out} held-out scenes: {score:.1f} dB PSNR at latent resolution")
    if args.write:
        path = (args.model or DEMO_MODEL_DIR) / "wan_t2i.json"
        values = json.loads(path.read_text())
        values["latent_rgb"] = fitted.to_dict()
        path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote latent_rgb into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
