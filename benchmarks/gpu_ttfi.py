"""The GPU benchmark's `ttfi` section: time to the first image of a fresh process (imports, building the models,
compilation with a cold compiler cache, the first image), measured in a child process of `python -m benchmarks.gpu`."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch

import wan_t2i.aot
from benchmarks.gpu_measure import child_report, empty_compiler_caches, sync, timed
from benchmarks.gpu_models import (
    FULL,
    REFERENCE_PROMPT,
    SMOKE,
    build_components,
    build_text_encoder,
    build_tokenizer,
    run_ours,
    tag,
)
from benchmarks.gpu_record import ROOT, Bench
from benchmarks.gpu_sections import settled_settings
from wan_t2i.performance import PerformanceSettings, apply
from wan_t2i.pipeline import WanT2IPipeline

CHILD_FLAG = "--child-ttfi"  # the hidden option of benchmarks.gpu that runs `child_ttfi`


def bench_ttfi(bench: Bench) -> None:
    """Per case: `fastest` traced by torch.compile in a fresh process; then compiled ahead of time (`compile_cache`)
    into an empty cache folder (the first start) and again in a new process given that folder (a restart). With
    --ttfi-presets, with each preset named there (fastest, fp8: keys ending in `+fp8`)."""
    meta = bench.results["meta"]
    profile = meta.get("ttfi_profile") or 0
    for model, size in bench.scale.ttfi:
        for fp8 in [preset == "fp8" for preset in meta.get("ttfi_presets", ["fastest"])]:
            case = tag(model, size) + ("+fp8" if fp8 else "")
            bench.item("ttfi", f"ttfi/{case}", lambda m=model, s=size, f=fp8: ttfi_in_child(bench, m, s, fp8=f))
            cache = tempfile.mkdtemp(prefix="ttfi-compile-cache-")
            for start in ("first", "second", "profiled") if profile else ("first", "second"):
                bench.item(
                    "ttfi", f"ttfi_aot_{start}/{case}",
                    lambda m=model, s=size, f=fp8, c=cache, p=profile * (start == "profiled"):
                    ttfi_in_child(bench, m, s, c, p, fp8=f),
                )  # fmt: skip


def ttfi_in_child(
    bench: Bench,
    model: str,
    size: tuple[int, int],
    compile_cache: str | None = None,
    profile: int = 0,
    *,
    fp8: bool = False,
) -> dict:
    """Run `child_ttfi` in a fresh interpreter with an empty compiler cache, as on a fresh machine; with
    `compile_cache`, ahead-of-time compiled through that folder (which a later call finds filled); with `profile`,
    the first image under cProfile, its `profile` costliest functions in the report, the compiled blocks read when
    first needed (not ahead, in a thread cProfile does not see)."""
    settings = settled_settings(bench, model)
    attention = settings.attention or "none"
    env = empty_compiler_caches("ttfi-inductor-")  # as on a fresh machine
    command = [sys.executable, "-X", "faulthandler", "-m", "benchmarks.gpu", CHILD_FLAG, model, f"{size[0]}x{size[1]}"]
    command += ["--attention", attention] + ([] if settings.compile else ["--no-compile"])
    command += ["--smoke"] if bench.smoke else []
    command += ["--compile-cache", compile_cache] if compile_cache else []
    command += ["--profile", str(profile), "--no-preload"] if profile else []  # the reading itself, profiled
    command += ["--fp8"] if fp8 else []
    left = bench.budget_s - bench.elapsed()
    start = time.time()
    done = subprocess.run(
        command + ["--t0", repr(start)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=None if math.isinf(left) else max(30.0, left),
    )  # fmt: skip
    report = child_report(done.stdout, "TTFI")
    if done.returncode or report is None:
        raise RuntimeError(f"child exited {done.returncode}: {done.stderr[-1500:]}")
    return report | {"process_total_s": time.time() - start}


def child_ttfi(args: argparse.Namespace) -> None:
    """In the fresh process: build the models on the device, apply `fastest`, render one image; print the times."""
    scale = SMOKE if args.smoke else FULL
    model, size = args.child_ttfi[0], tuple(int(v) for v in args.child_ttfi[1].split("x"))
    imported = time.time() - args.t0
    if args.compile_cache and not args.no_preload and wan_t2i.aot.default_kind(scale.device) == "blocks":
        wan_t2i.aot.preload(args.compile_cache, scale.device)  # as from_pretrained does: before the weights
    tokenizer = build_tokenizer()
    start = time.time()
    text_encoder = build_text_encoder(scale, len(tokenizer))
    sync()
    text_built = time.time() - start
    start = time.time()
    components = build_components(model, scale, text_encoder, tokenizer)
    sync()
    built = time.time() - start
    if scale.device == "cuda":
        settings = PerformanceSettings.fastest("cuda")
        settings = replace(settings, attention=None if args.attention == "none" else args.attention)
    else:
        settings = PerformanceSettings(compile=True, vae_dtype=torch.bfloat16)
    if args.fp8:  # the fp8 preset: `fastest` with the blocks' linears in float8, compiled without graphs
        settings = replace(settings, fp8=True, compile_mode="default")
    settings = replace(settings, compile=settings.compile and not args.no_compile, compile_cache=args.compile_cache)
    apply(components, settings)  # with compile_cache on CUDA: Dynamo-compiled blocks (wan_t2i.aot.PrecompiledBlocks)
    pipe = WanT2IPipeline(components)
    profiler = cProfile.Profile() if args.profile else None
    with profiler or contextlib.nullcontext():
        first, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, scale.steps))
    second, _ = timed(lambda: run_ours(pipe, "a photo of a lake", size, scale.steps))
    report = {"import_s": imported, "text_encoder_build_s": text_built, "build_s": built, "first_image_s": first,
              "second_image_s": second, "first_phases_s": generation.timings}  # fmt: skip
    if profiler is not None:  # where the first image's time goes, by function (cumulative, with its callees)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.profile)
        report["profile"] = text.getvalue().splitlines()[-args.profile - 2 :]
    if args.compile_cache:  # how many packages (or blocks) this start built and loaded: a restart should only load
        ahead = wan_t2i.aot.ahead_of(components.transformer)
        report |= {"packages_built": ahead.built, "packages_loaded": ahead.loaded, "kind": type(ahead).__name__,
                   "preloaded": getattr(ahead, "preloaded", None)}  # fmt: skip
    print("TTFI " + json.dumps(report | {"total_s": time.time() - args.t0, "settings": repr(settings)}), flush=True)
