"""Convert a native Wan checkpoint into the Diffusers layout that `diffusers.WanPipeline.from_pretrained` loads.

    python -m wan_t2i.convert --src Wan2.2-T2V-A14B --dst Wan2.2-T2V-A14B-Diffusers --dtype bf16

A native student (a WanModel folder or one .safetensors file) becomes a WanTransformer3DModel folder instead.
Components are converted one at a time and released before the next, so memory holds one model at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import diffusers
import torch
from diffusers import UniPCMultistepScheduler

from wan_t2i.constants import BOUNDARY_RATIO, DEFAULT_SHIFT, NUM_TRAIN_TIMESTEPS
from wan_t2i.native import (
    HIGH_NOISE_FOLDER,
    LOW_NOISE_FOLDER,
    check_compatible,
    detect_layout,
    load_native_text_encoder,
    load_native_transformer,
    load_native_vae,
)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# wan/configs/wan_t2v_A14B.py: `sample_shift = 12.0`; Wan 2.1's t2v models use DEFAULT_SHIFT.
A14B_SHIFT = 12.0


def convert(src: Path, dst: Path, *, dtype: torch.dtype = torch.bfloat16, shift: float | None = None) -> str:
    """Write the Diffusers-layout twin of the native checkpoint `src` into `dst`.

    Args:
        src: a native Wan folder (Wan 2.1, or Wan 2.2 A14B with its two experts), a native transformer folder or a
            single .safetensors transformer.
        dst: the output folder (created).
        dtype: dtype of the transformer(s) and text encoder; the VAE is kept in float32, as Wan runs it.
        shift: the scheduler's flow_shift; None takes Wan's sample_shift (12.0 for A14B, 5.0 for Wan 2.1).

    Returns:
        The layout of `src` ("native", "transformer-native", ...).
    """
    src, dst = Path(src), Path(dst)
    layout = detect_layout(src)
    if layout in ("transformer-native", "transformer-diffusers", "safetensors-file"):
        load_native_transformer(src, dtype=dtype).save_pretrained(dst)
        return layout
    if layout != "native":
        raise ValueError(f"{src} is already in the {layout} layout")
    dst.mkdir(parents=True, exist_ok=True)
    is_a14b = (src / HIGH_NOISE_FOLDER).is_dir()
    model_index: dict[str, object] = {"_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__}

    def save(name: str, component: object) -> None:
        component.save_pretrained(dst / name)
        model_index[name] = [type(component).__module__.split(".")[0], type(component).__name__]  # library, class

    text_encoder, tokenizer = load_native_text_encoder(src, dtype=dtype)
    save("text_encoder", text_encoder)
    save("tokenizer", tokenizer)
    text_encoder.to("meta")  # release its weights, keep its config for the checks below
    vae = load_native_vae(src, dtype=torch.float32)
    save("vae", vae)
    experts = {"transformer": src / HIGH_NOISE_FOLDER, "transformer_2": src / LOW_NOISE_FOLDER} if is_a14b else {}
    for name, folder in (experts or {"transformer": src}).items():
        transformer = load_native_transformer(folder, dtype=dtype)
        check_compatible(transformer, vae, text_encoder)
        save(name, transformer)
        del transformer
    model_index.setdefault("transformer_2", [None, None])
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift if shift is not None else (A14B_SHIFT if is_a14b else DEFAULT_SHIFT),
    )
    save("scheduler", scheduler)
    model_index["boundary_ratio"] = BOUNDARY_RATIO if is_a14b else None
    model_index["expand_timesteps"] = False
    (dst / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")
    return layout


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m wan_t2i.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="native Wan folder, or a native transformer")
    parser.add_argument("--dst", type=Path, required=True, help="output folder (Diffusers layout)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="transformer / text encoder dtype")
    parser.add_argument("--shift", type=float, default=None, help="scheduler flow_shift (default: Wan's for the model)")
    args = parser.parse_args(argv)
    try:
        layout = convert(args.src, args.dst, dtype=DTYPES[args.dtype], shift=args.shift)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"converted {args.src} ({layout}) -> {args.dst}")


if __name__ == "__main__":
    main()
