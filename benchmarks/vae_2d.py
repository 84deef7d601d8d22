"""The Wan VAE on one frame with its causal 3D convolutions as they are, and as 2D ones (`vae_2d`,
wan_t2i.single_frame): seconds to decode and to encode, alternating the two in one process, and how far apart the
outputs are. Random weights in Wan2.1's VAE configuration (diffusers' AutoencoderKLWan defaults, z_dim 16).

    python -m benchmarks.vae_2d [--size 480x832] [--device cpu|cuda] [--dtype float32|bfloat16] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks.gpu_measure import timed
from wan_t2i.single_frame import flatten_vae, unflatten_vae


@torch.inference_mode()
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x832", help="HEIGHTxWIDTH of the image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each, after one warm-up of each")
    args = parser.parse_args(argv)
    from diffusers import AutoencoderKLWan

    height, width = (int(v) for v in args.size.split("x"))
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    vae = AutoencoderKLWan().to(device).eval()
    if dtype != torch.float32:
        vae.to(dtype)  # all of it, as the presets' vae_dtype does
    z = torch.randn(1, vae.config.z_dim, 1, height // 8, width // 8, device=device, dtype=dtype)  # (B, C, F, H, W)
    image = torch.randn(1, 3, 1, height, width, device=device, dtype=dtype)
    work = {
        "decode": lambda: vae.decode(z, return_dict=False)[0],
        "encode": lambda: vae.encode(image).latent_dist.mean,
    }
    result: dict = {"size": args.size, "device": str(device), "dtype": args.dtype, "runs": args.runs}
    for name, run in work.items():
        times: dict[str, list[float]] = {"3d": [], "2d": []}
        outputs = {}
        for i in range(args.runs + 1):  # alternating, the first of each a warm-up
            for way in ("3d", "2d"):
                (flatten_vae if way == "2d" else unflatten_vae)(vae)
                seconds, outputs[way] = timed(run)
                if i:
                    times[way].append(seconds)
        median = {way: statistics.median(t) for way, t in times.items()}
        diff = (outputs["2d"].float() - outputs["3d"].float()).abs()
        result[name] = {
            "3d_s": median["3d"], "2d_s": median["2d"], "2d_vs_3d": median["2d"] / median["3d"],
            "max_abs_diff": diff.max().item(), "output_abs_max": outputs["3d"].float().abs().max().item(),
        }  # fmt: skip
        print(
            f"{name} {args.size} on {device} in {args.dtype}: 3D {median['3d']:.3f} s, 2D {median['2d']:.3f} s "
            f"({median['2d'] / median['3d']:.2f}x); outputs differ by at most {diff.max().item():.2e}",
            flush=True,
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
