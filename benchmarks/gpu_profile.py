"""Where a transformer forward's GPU time goes, by kind of kernel, in bf16 and in fp8: what fp8 can speed up and what
it cannot.

    python -m benchmarks.gpu_profile --out DIR                     # the 14B at 1024x1024, bf16 then fp8 (per-row)
    python -m benchmarks.gpu_profile --model 1.3b --size 480x832   # another model or size
    python -m benchmarks.gpu_profile --smoke                       # a tiny model on the CPU: checks the script

The model is built as `benchmarks.gpu` builds it (random weights, bf16) and compiled as `fastest` compiles it
(regional, cuDNN attention first on Hopper); one forward at batch 2 (one image with guidance) is timed (median of
--runs after two warm-ups) and then profiled with torch.profiler. The same again after the blocks' linear layers
are quantised to float8 as the `fp8` preset does. Each kernel's time is put in one kind:

- attention: fused attention kernels (cuDNN, flash, memory-efficient): fp8 leaves them in bf16;
- matmul: cuBLAS/CUTLASS GEMMs, float8 ones included: what fp8 speeds up;
- fused elementwise: Inductor's Triton kernels (norms, modulation, RoPE, and in fp8 the activations' scales and
  casts): the rise from bf16 to fp8 is what the dynamic quantisation costs;
- other: copies and the rest.

From the bf16 split and the measured bf16 and fp8 matmul peaks it prints the best an fp8 forward could do
(attention and elementwise as in bf16, matmuls at the fp8 peak's speed-up) against the forward it measured. Writes
`profile.json` (the split, the top kernels of each kind, every kernel's time) under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.gpu_measure import forward_inputs, matmul_peak, matmul_peak_fp8, timed
from benchmarks.gpu_models import FULL, SMOKE, build_transformer
from wan_t2i.performance import FP8_SCALES

KINDS = ("attention", "matmul", "fused elementwise", "other")
# Kernel names (lower case) of each kind on Hopper: cuDNN's fused attention ("sdpa", "fmha"), flash and
# memory-efficient attention; cuBLASLt ("nvjet", "gemm", "xmma") and CUTLASS GEMMs, _scaled_mm's included.
ATTENTION_NAMES = ("sdpa", "fmha", "flash", "attention", "attn")
MATMUL_NAMES = ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "scaled_mm", "matmul", "aten::mm", "aten::addmm")
CPU_ATTENTION_OPS = ("scaled_dot_product",)  # the smoke run profiles CPU ops instead of kernels


def kind_of(name: str) -> str:
    """The kind of a kernel (or, on the CPU, an aten op) by its name."""
    lower = name.lower()
    if lower.startswith(("triton", "cpp_fused")):  # named after what they feed: "triton_red_fused__scaled_mm_..."
        return "fused elementwise"
    if any(part in lower for part in ATTENTION_NAMES + CPU_ATTENTION_OPS):
        return "attention"
    if any(part in lower for part in MATMUL_NAMES):
        return "matmul"
    return "other"


@dataclass
class Split:
    """Microseconds of one forward's kernels by kind, and the kernels themselves (name -> us)."""

    by_kind: dict[str, float]
    kernels: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())

    def share(self, kind: str) -> float:
        return self.by_kind[kind] / self.total if self.total else 0.0

    def top(self, kind: str, n: int = 5) -> list[tuple[str, float]]:
        mine = [(k, v) for k, v in self.kernels.items() if kind_of(k) == kind]
        return sorted(mine, key=lambda kv: -kv[1])[:n]


def profile_forward(forward, device: str) -> Split:
    """Profile one call of `forward`; sum its kernels' own device time (on the CPU: the leaf aten ops' CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        forward()
        if device == "cuda":
            torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for event in prof.key_averages():
        if device == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)
        else:
            if not event.key.startswith("aten::") or event.key in ("aten::empty", "aten::empty_strided"):
                continue
            us = event.self_cpu_time_total
        if us > 0:
            kernels[event.key] = kernels.get(event.key, 0.0) + us
    by_kind = dict.fromkeys(KINDS, 0.0)
    for name, us in kernels.items():
        by_kind[kind_of(name)] += us
    return Split(by_kind, kernels)


@torch.inference_mode()
def measure(transformer, size: tuple[int, int], device: str, runs: int) -> dict:
    """Median seconds of one batch-2 forward (after two warm-ups, which compile) and its profile."""
    inputs = forward_inputs(transformer, 2, size, device)

    def forward():
        return transformer(**inputs)[0]

    first_s, _ = timed(forward)
    forward()
    seconds = statistics.median(timed(forward)[0] for _ in range(runs))
    split = profile_forward(forward, device)
    return {
        "first_forward_s": first_s,
        "forward_s": seconds,
        "kernel_ms": {k: v / 1e3 for k, v in split.by_kind.items()},
        "share": {k: split.share(k) for k in KINDS},
        "top": {k: [(name[:120], us / 1e3) for name, us in split.top(k)] for k in KINDS},
        "kernels_ms": {name[:160]: us / 1e3 for name, us in sorted(split.kernels.items(), key=lambda kv: -kv[1])},
    }


def bound(bf16: dict, speedup: float) -> float:
    """The fastest an fp8 forward could be, in seconds, from the bf16 profile: its matmuls `speedup` times faster,
    everything else as in bf16 (the share of kernel time applied to the measured forward)."""
    share = bf16["share"]
    return bf16["forward_s"] * (1 - share["matmul"] + share["matmul"] / speedup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_profile", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--model", default="14b", help="1.3b or 14b (default 14b)")
    parser.add_argument("--size", default="1024x1024", help="HxW (default 1024x1024)")
    parser.add_argument("--scales", default="row", choices=FP8_SCALES, help="fp8 scales (default: row)")
    parser.add_argument("--runs", type=int, default=5, help="timed forwards of each (default 5)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, bf16 only")
    parser.add_argument("--layers", type=int, default=None, help="blocks to build (default: the model's)")
    parser.add_argument(
        "--variants", default="",
        help=f"also time these, each on the model built anew, e.g. fp8+fused,fp8+cdt,bf16+fused: {VARIANT_HELP}",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write profile.json here")
    args = parser.parse_args(argv)

    from wan_t2i.performance import PerformanceSettings, compile_blocks, prefer_attention_backend, quantize_blocks_fp8

    scale = SMOKE if args.smoke else FULL
    size = (64, 64) if args.smoke else tuple(int(v) for v in args.size.split("x"))
    device = scale.device
    config = scale.transformers[args.model] | ({"num_layers": args.layers} if args.layers else {})
    transformer = build_transformer(config, scale)
    report: dict = {"model": args.model, "size": list(size), "device": device, "torch": torch.__version__,
                    "dtype": str(scale.dtype).removeprefix("torch."), "layers": config["num_layers"]}  # fmt: skip
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
        fastest = PerformanceSettings.fastest(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        if fastest.attention:
            prefer_attention_backend(fastest.attention)
        compile_blocks(transformer)  # fastest's regional compilation, without graphs: kernels as launched
        report["peaks_tflops"] = {
            "bf16": matmul_peak(8192, device, torch.bfloat16)["tflops"],
            "fp8": matmul_peak_fp8(8192, device)["tflops"],
        }
    report["bf16"] = measure(transformer, size, device, args.runs)
    if device == "cuda":
        torch._dynamo.reset()
        quantize_blocks_fp8(transformer, scales=args.scales)
        compile_blocks(transformer)
        report["fp8_scales"] = args.scales
        report["fp8"] = measure(transformer, size, device, args.runs)
        speedup = report["peaks_tflops"]["fp8"] / report["peaks_tflops"]["bf16"]
        report["fp8_bound_s"] = bound(report["bf16"], speedup)
        report["fp8_bound_perfect_s"] = bound(report["bf16"], 2.0)
    del transformer
    for name in filter(None, args.variants.split(",")):
        report.setdefault("variants", {})[name] = variant(name, config, scale, size, args.runs, args.scales)
        print(name, json.dumps({k: report["variants"][name][k] for k in ("forward_s", "kernel_ms")}), flush=True)
        if args.out:  # written as each ends: a variant may be cut off by a time limit
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "profile.json").write_text(json.dumps(report, indent=1))
    print(render(report))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile.json").write_text(json.dumps(report, indent=1))
    return 0


VARIANT_HELP = (
    "bf16 or fp8 (the blocks' linears quantised as the fp8 preset does), with +fused (wan_t2i.performance."
    "fuse_projections: one q|k|v and one k|v linear) and/or +cdt (Inductor's coordinate_descent_tuning for the "
    "blocks' Triton kernels) and/or +mk (Inductor's multi_kernel: each reduction compiled both persistent and "
    "looped, the faster kept by timing them; the fp8 activations' per-row scales are such reductions)"
)
# Inductor options of each variant extra
VARIANT_OPTIONS = {"cdt": {"coordinate_descent_tuning": True}, "mk": {"triton.multi_kernel": 1}}


def variant(name: str, config: dict, scale, size: tuple[int, int], runs: int, scales: str) -> dict:
    """One VARIANT_HELP variant on a transformer built anew (the same seed): its forward, measured and profiled."""
    from wan_t2i.performance import compile_blocks, fuse_projections, quantize_blocks_fp8

    dtype, *extras = name.split("+")
    if dtype not in ("bf16", "fp8") or not set(extras) <= {"fused", *VARIANT_OPTIONS}:
        raise SystemExit(f"unknown variant {name!r}: {VARIANT_HELP}")
    torch._dynamo.reset()
    if scale.device == "cuda":
        torch.cuda.empty_cache()
    transformer = build_transformer(config, scale)
    if "fused" in extras:
        fuse_projections(transformer)
    if dtype == "fp8":
        quantize_blocks_fp8(transformer, scales=scales)
    options = {k: v for extra in extras for k, v in VARIANT_OPTIONS.get(extra, {}).items()}
    compile_blocks(transformer, options=options or None)
    compile_s, result = timed(lambda: measure(transformer, size, scale.device, runs))
    return result | {"measure_s_with_compile": compile_s}


def render(report: dict) -> str:
    """The split as a Markdown table, and the fp8 bound where fp8 ran."""
    runs = [name for name in ("bf16", "fp8") if name in report]
    lines = [
        f"{report['model']} at {report['size'][0]}x{report['size'][1]}, one forward at batch 2 "
        f"({report.get('gpu', report['device'])}, torch {report['torch']})",
        "",
        "| | forward s | " + " | ".join(f"{k} ms (share)" for k in KINDS) + " |",
        "|---|---|" + "---|" * len(KINDS),
    ]
    for name in runs:
        r = report[name]
        cells = " | ".join(f"{r['kernel_ms'][k]:.1f} ({100 * r['share'][k]:.0f}%)" for k in KINDS)
        label = name if name == "fp8" else report["dtype"]  # "bf16" holds the smoke run's fp32
        lines.append(f"| {label} | {r['forward_s']:.4f} | {cells} |")
    if "fp8" in report:
        bf16, fp8, peaks = report["bf16"]["forward_s"], report["fp8"]["forward_s"], report["peaks_tflops"]
        lines += [
            "",
            f"fp8 / bf16 forward: {fp8 / bf16:.3f}. Matmul peaks measured here: bf16 {peaks['bf16']:.0f}, fp8 "
            f"{peaks['fp8']:.0f} TFLOP/s ({peaks['fp8'] / peaks['bf16']:.2f}x). The best fp8 forward from the bf16 "
            f"split, its matmuls that much faster and the rest as in bf16: {report['fp8_bound_s']:.4f} s "
            f"({report['fp8_bound_s'] / bf16:.3f}x bf16); with matmuls exactly twice as fast: "
            f"{report['fp8_bound_perfect_s']:.4f} s ({report['fp8_bound_perfect_s'] / bf16:.3f}x).",
        ]
    for name, r in report.get("variants", {}).items():
        cells = " | ".join(f"{r['kernel_ms'][k]:.1f} ({100 * r['share'][k]:.0f}%)" for k in KINDS)
        ratio = r["forward_s"] / report["bf16"]["forward_s"]
        lines.append(f"\n{name}: forward {r['forward_s']:.4f} s ({ratio:.3f}x bf16) | {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
