"""Peak memory of loading a native Wan checkpoint vs. its Diffusers-layout twin, each in a fresh process.

    python -m benchmarks.native_memory [--dim 1024 --layers 14 --dtype bf16]

Writes one random teacher (transformer ~240M parameters, Wan 2.1's full-size VAE, a small UMT5 encoder) twice into a
temporary folder, in Wan's native layout and in the Diffusers layout, then loads each in its own subprocess and
prints the child's peak RSS (ru_maxrss), measured after every weight has been read once, and the load time.
The parent imports nothing heavy and writes the checkpoints in a subprocess too: Linux carries a parent's RSS at
fork into the child's ru_maxrss, which would otherwise hide the difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DTYPES = ("bf16", "fp32")
ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    """Current resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _torch_dtype(name: str) -> object:
    """torch's dtype for `name`; torch is imported here so that the parent process never loads it."""
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def write_checkpoints(root: Path, *, dim: int, layers: int, dtype_name: str) -> None:
    """Write the same random models as root/native (Wan's layout) and root/diffusers (WanPipeline's layout)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    from tests.native_checkpoints import native_state_dict, native_transformer_config
    from wan_t2i.demo.tokenizer import build_word_tokenizer
    from wan_t2i.native import T5_CHECKPOINT, T5_TOKENIZER, TRANSFORMER_WEIGHTS, VAE_CHECKPOINT

    dtype = _torch_dtype(dtype_name)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        num_attention_heads=dim // 128, attention_head_dim=128, text_dim=dim, ffn_dim=4 * dim, num_layers=layers
    ).to(dtype)
    vae = AutoencoderKLWan()  # Wan 2.1's VAE at full size (base_dim 96), float32 as Wan ships it
    config = UMT5Config(
        vocab_size=32128,
        d_model=dim,
        d_kv=64,
        d_ff=2 * dim,
        num_layers=4,
        num_heads=dim // 64,
        feed_forward_proj="gated-gelu",
    )
    text_encoder = UMT5EncoderModel(config).to(dtype)
    tokenizer = build_word_tokenizer(["a", "cat"])

    native, diffusers_root = root / "native", root / "diffusers"
    native.mkdir(parents=True)
    torch.save(native_state_dict(text_encoder), native / T5_CHECKPOINT)
    tokenizer.save_pretrained(native / T5_TOKENIZER)
    torch.save(native_state_dict(vae), native / VAE_CHECKPOINT)
    (native / "config.json").write_text(json.dumps(native_transformer_config(transformer.config)))
    save_file(native_state_dict(transformer), native / TRANSFORMER_WEIGHTS)

    text_encoder.save_pretrained(diffusers_root / "text_encoder")
    tokenizer.save_pretrained(diffusers_root / "tokenizer")
    vae.save_pretrained(diffusers_root / "vae")
    transformer.save_pretrained(diffusers_root / "transformer")
    n_params = sum(p.numel() for p in transformer.parameters())
    print(
        f"transformer {n_params / 1e6:.0f}M params ({dtype}), VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.0f}M"
        f" (float32), text encoder {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.0f}M ({dtype})"
    )


def load_in_child(kind: str, root: Path, dtype_name: str) -> dict[str, float]:
    """Load one layout (run inside the child process) and report its memory and time."""
    import diffusers
    import torch
    import transformers

    from wan_t2i import native

    dtype = _torch_dtype(dtype_name)
    rss_imports = _rss_mib()
    start = time.perf_counter()
    if kind == "native":
        teacher = native.load_native_teacher(root / "native", dtype=dtype, vae_dtype=torch.float32)
        models = [teacher["transformer"], teacher["vae"], teacher["text_encoder"]]
    else:
        folder = root / "diffusers"
        models = [
            diffusers.WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype),
            diffusers.AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=torch.float32),
            transformers.UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype),
        ]
        transformers.AutoTokenizer.from_pretrained(folder / "tokenizer")
    seconds = time.perf_counter() - start
    peak_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Read every weight once, so memory-mapped ones count as they will once the model runs.
    checksum = sum(float(t.float().sum()) for model in models for t in model.state_dict().values())
    return {
        "rss_after_imports_mib": rss_imports,
        "peak_after_load_mib": peak_after_load,
        "peak_after_touch_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_seconds": seconds,
        "checksum": checksum,
        "accelerate": diffusers.utils.is_accelerate_available(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024, help="transformer width (a multiple of 128)")
    parser.add_argument("--layers", type=int, default=14, help="transformer blocks")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16", help="transformer / text encoder dtype")
    parser.add_argument("--child", choices=("write", "native", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "write":
        write_checkpoints(args.root, dim=args.dim, layers=args.layers, dtype_name=args.dtype)
        return
    if args.child:
        print(json.dumps(load_in_child(args.child, args.root, args.dtype)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for kind in ("write", "diffusers", "native"):
            command = [sys.executable, "-m", "benchmarks.native_memory", "--child", kind, "--root", tmp]
            command += ["--dtype", args.dtype]
            command += ["--dim", str(args.dim), "--layers", str(args.layers)]
            output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            if kind == "write":
                print(output.strip())
            else:
                results[kind] = json.loads(output.strip().splitlines()[-1])
    if abs(results["native"]["checksum"] - results["diffusers"]["checksum"]) > 1e-3 * abs(
        results["native"]["checksum"]
    ):
        raise SystemExit(f"the two layouts loaded different weights: {results}")
    print(f"accelerate available to diffusers: {results['diffusers']['accelerate']}")
    print(
        f"{'layout':<10} {'RSS after imports':>18} {'peak after load':>16} {'peak after reading':>19} {'load time':>10}"
    )
    for kind, result in results.items():
        print(
            f"{kind:<10} {result['rss_after_imports_mib']:>14.0f} MiB {result['peak_after_load_mib']:>12.0f} MiB "
            f"{result['peak_after_touch_mib']:>15.0f} MiB {result['load_seconds']:>9.1f}s"
        )
    native, reference = results["native"], results["diffusers"]

    def ratio(key: str, minus: str | None = None) -> float:
        offset = (native[minus], reference[minus]) if minus else (0.0, 0.0)
        return (native[key] - offset[0]) / (reference[key] - offset[1])

    print(
        f"native / diffusers peak RSS: {ratio('peak_after_touch_mib'):.2f} after reading every weight "
        f"({ratio('peak_after_touch_mib', 'rss_after_imports_mib'):.2f} net of imports), "
        f"{ratio('peak_after_load_mib'):.2f} right after loading"
    )


if __name__ == "__main__":
    main()
