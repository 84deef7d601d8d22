"""The GPU benchmark's `fp8` section: each model section's model again with the `fp8` preset (torchao float8 dynamic
activation + weight quantisation, per-row scales, on the blocks' linears, then compiled as `fastest`), checked against
the eager bf16 forward and image; and for `Scale.fp8_cap`, the memory of the student, of Wan2.2-A14B's two experts,
and of the experts with an int8 weight-only UMT5, with this process capped to a card of that size."""

from __future__ import annotations

import gc
import statistics
from dataclasses import replace

import torch

from benchmarks.gpu_measure import (
    measure_floor,
    memory_cap,
    peak_gb,
    reset_peak,
    restore_default_flags,
    timed,
)
from benchmarks.gpu_models import PAIR, build_transformer, run_ours, tag
from benchmarks.gpu_record import Bench
from benchmarks.gpu_sections import ours_checked, pair_checked, settled_settings
from wan_t2i.constants import BOUNDARY_RATIO
from wan_t2i.loading import WanComponents
from wan_t2i.performance import GB, PerformanceSettings, apply, is_quantized
from wan_t2i.pipeline import WanT2IPipeline


def graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process: their growth over a run shows what it recompiled."""
    return int(torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))


def allocated_gb() -> float:
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated() / GB


def fp8_settings(bench: Bench, model: str) -> PerformanceSettings:
    """`fastest` as the model's section settled it, made what the fp8 preset (fp8_for) makes of `fastest`, with the
    run's scale granularity, multi_kernel and fused projections."""
    meta = bench.results["meta"]
    return replace(
        settled_settings(bench, model), fp8=True, fp8_scales=meta["fp8_scales"], compile_mode="default",
        multi_kernel=meta.get("fp8_multi_kernel", False), fused_projections=meta["fp8_fused"],
    )  # fmt: skip


def bench_fp8(bench: Bench, model: str, components: WanComponents, references: dict) -> None:
    """Quantise the section's model in place (no undo: the section's bf16 runs are done), then per size: one image
    (the first includes compilation), the bare loop and its error, the pair; then the capped-memory cases."""
    settings = fp8_settings(bench, model)
    holder: dict = {}

    def quantize():
        restore_default_flags()
        torch._dynamo.reset()
        before = allocated_gb()
        seconds, _ = timed(lambda: apply(components, settings))
        holder["pipe"] = WanT2IPipeline(components)
        return {"seconds": seconds, "settings": repr(settings), "allocated_gb_before": before,
                "allocated_gb_after": allocated_gb(), "quantized": is_quantized(components.transformer)}  # fmt: skip

    bench.item("fp8", f"{model}/fp8_quantize", quantize)
    if "pipe" not in holder:
        return
    pipe = holder.pop("pipe")
    for size in bench.resolutions(model):
        bench_fp8_size(bench, model, size, pipe, references.get(size, {}))
    cap_model, cap_size, cap_gb = bench.scale.fp8_cap
    if model == cap_model and cap_size in bench.resolutions(model):
        bench_fp8_capped(bench, pipe, cap_size, cap_gb)


def bench_fp8_size(bench: Bench, model: str, size: tuple[int, int], pipe: WanT2IPipeline, reference: dict) -> None:
    key, n, steps = tag(model, size), bench.scale.counts_of(model, size), bench.scale.steps
    items = bench.results["items"]
    estimate = ((items.get(f"{key}/ours") or {}).get("median_s") or 0.0) * 0.8
    transformer = pipe.components.transformer

    def one():
        graphs = graphs_compiled()
        result = ours_checked(bench, pipe, size, n, reference)  # its check run is the first image: compile included
        return result | {"first_image_s": result["check_run_s"], "graphs_compiled": graphs_compiled() - graphs}

    def floor():
        peaks = items.get("peak") or {}, items.get("peak_fp8") or {}
        result, out = measure_floor(
            transformer, 2, size, steps, n.floor_runs, peaks[0].get("tflops"), n.floor_warmup, peaks[1].get("tflops")
        )
        if reference.get("forward") is not None:  # the eager bf16 forward at the same inputs
            eager = reference["forward"]
            result["rel_error_vs_eager"] = ((out.float() - eager).norm() / eager.norm()).item()
        return result

    def pair():
        return pair_checked(bench, pipe, size, n, reference)

    bench.item("fp8", f"{key}/fp8", one, need_s=(n.runs + 1) * estimate + 60)
    bench.item("fp8", f"{key}/fp8_floor_b2", floor, need_s=estimate)
    bench.item("fp8", f"{key}/fp8_pair", pair, need_s=2 * (n.pair_runs + 1) * estimate)


def capped_runs(pipe: WanT2IPipeline, bench: Bench, size: tuple[int, int], gpu_gb: float) -> dict:
    """One image and the A/B pair, each with a new prompt, this process allowed `gpu_gb` GB: their peaks."""
    result = {"gpu_gb": gpu_gb, "resident_gb": allocated_gb()}
    with memory_cap(gpu_gb, "cuda"):
        for name, samplers in (("one", ("flow_unipc",)), ("pair", PAIR)):
            if bench.skipped(f"fp8cap_{name}"):
                continue
            reset_peak()
            try:
                seconds, _ = timed(lambda: run_ours(pipe, bench.prompts(), size, bench.scale.steps, samplers))  # noqa: B023
                result[name] = {"seconds": seconds, "peak_gb": peak_gb()}
            except torch.OutOfMemoryError as err:
                result[name] = {"error": "out of memory", "peak_gb": peak_gb(), "detail": str(err)[:300]}
                reset_peak()
    result["peak_gb"] = max((result[name].get("peak_gb") or 0.0) for name in ("one", "pair") if name in result)
    return result


def bench_fp8_capped(bench: Bench, pipe: WanT2IPipeline, size: tuple[int, int], gpu_gb: float) -> None:
    """What fits a card of `gpu_gb`: the fp8 student + UMT5 + VAE; Wan2.2-A14B's two fp8 experts (a second random
    14B, built and quantised before the cap: loading bf16 weights to quantise them on the GPU needs 28 GB more for
    a moment); and the experts with UMT5's linears int8 weight-only, with that encoder's embedding error."""
    label = f"fp8cap{gpu_gb:g}gb"
    key = f"{size[0]}x{size[1]}"
    components = pipe.components
    bench.item("fp8", f"{label}/14b@{key}", lambda: capped_runs(pipe, bench, size, gpu_gb))
    holder: dict = {}

    def experts():
        second = build_transformer(bench.scale.transformers["14b"], bench.scale)
        two = replace(components, transformer_2=second, boundary_ratio=BOUNDARY_RATIO)
        apply(two, fp8_settings(bench, "14b"))  # the student's blocks are quantised already
        holder["pipe"] = WanT2IPipeline(two)
        return capped_runs(holder["pipe"], bench, size, gpu_gb)

    bench.item("fp8", f"{label}/a14b@{key}", experts)
    if "pipe" not in holder:
        return
    experts_pipe = holder.pop("pipe")

    def int8_text_encoder():
        report = quantize_text_encoder_int8(experts_pipe)
        return capped_runs(experts_pipe, bench, size, gpu_gb) | report

    bench.item("fp8", f"{label}/a14b+umt5int8@{key}", int8_text_encoder)


@torch.inference_mode()
def quantize_text_encoder_int8(pipe: WanT2IPipeline) -> dict:
    """torchao int8 weight-only on UMT5's linear layers (as the public Wan ZeroGPU Spaces do), in place: the GB it
    saves and the embeddings' relative error against bf16 over a few prompts (the pipeline's text cache emptied)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    prompts = ["a serene lake at sunset with snowy mountains", "blurry, low quality, distorted, static, overexposed"]
    pipe._text_cache.clear()
    before = [pipe.encode_prompt(p).float() for p in prompts]
    gb_before = allocated_gb()
    seconds, _ = timed(lambda: quantize_(pipe.components.text_encoder, Int8WeightOnlyConfig(set_inductor_config=False)))
    pipe._text_cache.clear()
    encode_s, _ = timed(lambda: pipe.encode_prompt(prompts[0]))
    pipe._text_cache.clear()
    after = [pipe.encode_prompt(p).float() for p in prompts]
    errors = [((a - b).norm() / b.norm()).item() for a, b in zip(after, before, strict=True)]
    pipe._text_cache.clear()
    return {
        "umt5_saved_gb": gb_before - allocated_gb(), "umt5_quantize_s": seconds, "umt5_first_encode_s": encode_s,
        "umt5_rel_error": statistics.mean(errors), "umt5_rel_errors": errors,
    }  # fmt: skip
