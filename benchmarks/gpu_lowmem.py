"""The GPU benchmark's `lowmem` section: the `low_memory` preset from CPU memory, streaming every layer or as on a
smaller card (this process capped to that card's memory), timed and checked against the eager image."""

from __future__ import annotations

import gc

import torch

from benchmarks.gpu_measure import (
    forward_inputs,
    memory_cap,
    peak_gb,
    reset_peak,
    restore_default_flags,
    summary,
    timed,
)
from benchmarks.gpu_models import NEGATIVE, REFERENCE_PROMPT, build_components, run_ours, tag
from benchmarks.gpu_record import Bench
from wan_t2i.loading import WanComponents
from wan_t2i.metrics import psnr
from wan_t2i.performance import PerformanceSettings, apply, is_offloaded, is_quantized
from wan_t2i.pipeline import WanT2IPipeline


def lowmem_key(model: str, size: tuple[int, int], gpu_gb: float) -> str:
    return f"lowmem{f'{gpu_gb:g}gb' if gpu_gb else ''}/{tag(model, size)}"


def bench_lowmem(bench: Bench, held: dict, text_encoder, tokenizer) -> None:
    """low_memory from CPU memory, for each (model, size, gpu_gb) case: gpu_gb 0 streams every layer; otherwise
    `low_memory_for(gpu_gb=...)` keeps as many blocks on the GPU as such a card allows, and this process is capped
    to gpu_gb of GPU memory (set_per_process_memory_fraction) so that it runs out of memory where that card would.

    `held["components"]`: the model section's components (or none), reused by the first case of that model; later
    cases build a new transformer. In a dict, so that a replaced model has no reference left to keep it in memory.
    """
    for model, size, gpu_gb in bench.scale.lowmem:

        def run(model=model, size=size, gpu_gb=gpu_gb):
            held["components"] = reusable(held, model, bench, text_encoder, tokenizer)
            return lowmem_case(bench, held["components"], model, size, gpu_gb)

        bench.item("lowmem", lowmem_key(model, size, gpu_gb), run)


def reusable(held: dict, model: str, bench: Bench, text_encoder, tokenizer) -> WanComponents:
    """The held components if they are of `model` and not offloaded yet (offloading has no undo), else a new build."""
    components = held.pop("components", None)
    if components is not None and components.defaults.name == f"random {model}":
        if not is_offloaded(components.transformer) and not is_quantized(components.transformer):
            return components  # neither offloading nor the fp8 section's quantisation has an undo
    components = None  # the old model's memory is freed before the new one is built
    gc.collect()
    return build_components(model, bench.scale, text_encoder, tokenizer)


def lowmem_case(bench: Bench, components: WanComponents, model: str, size: tuple[int, int], gpu_gb: float) -> dict:
    """One low-memory case: move the model to CPU memory, apply the preset, render one image with a new prompt."""
    device = bench.scale.device
    restore_default_flags()
    torch._dynamo.reset()
    apply(components, PerformanceSettings())  # undo the optimised section's compilation and bf16 VAE
    components.vae.float()
    # Start where load_components(offload=True) leaves a model: transformer and text encoder in CPU memory.
    to_cpu_s, _ = timed(lambda: [m.to("cpu") for m in (components.transformer, components.text_encoder)])
    gc.collect()
    reset_peak()
    settings = PerformanceSettings.low_memory_for(device, gpu_gb=gpu_gb)
    with memory_cap(gpu_gb, device):
        apply_s, _ = timed(lambda: apply(components, settings))
        apply_peak = peak_gb()
        pipe = WanT2IPipeline(components)
        with torch.inference_mode():  # the first offloaded forward records the block order for prefetching
            inputs = forward_inputs(components.transformer, 2, size, device)
            warm_s, _ = timed(lambda: components.transformer(**inputs))
        first_encode_s, _ = timed(lambda: pipe.encode_prompt(NEGATIVE))  # likewise for the text encoder
        # Peak memory does not depend on the number of steps: if 20 steps do not fit the budget, run 2.
        estimate = bench.scale.steps * warm_s + 10.0
        steps = bench.scale.steps if bench.allows("lowmem", estimate) else 2
        reset_peak()
        seconds, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps))  # a new prompt
    result = summary([seconds], phases_s=generation.timings)
    if steps == bench.scale.steps:
        result |= checked_against_ours(bench, model, size, seconds, generation["flow_unipc"].image)
    return result | {
        "settings": repr(settings), "gpu_gb": gpu_gb, "resident_gb": settings.resident_gb,
        "resident_blocks": sum(not is_offloaded(b) for b in components.transformer.blocks),
        "blocks": len(components.transformer.blocks), "to_cpu_s": to_cpu_s, "apply_s": apply_s,
        "apply_peak_gb": apply_peak, "first_forward_s": warm_s, "first_encode_s": first_encode_s,
        "steps_run": steps, "estimated_full_s": estimate,
    }  # fmt: skip


def checked_against_ours(bench: Bench, model: str, size: tuple[int, int], seconds: float, image) -> dict:
    """The slowdown against the optimised run of the same shape, and the PSNR against the eager image."""
    reference = (bench.results["items"].get(f"{tag(model, size)}/ours") or {}).get("median_s")
    result = {"slowdown_vs_ours": seconds / reference if reference else None}
    eager = bench.references.get((model, size), {}).get("one")
    if eager is not None:
        result["psnr_db"] = psnr(image, eager)
    return result
