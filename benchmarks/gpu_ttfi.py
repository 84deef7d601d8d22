"""The GPU benchmark's `ttfi` section: time to the first image of a fresh process (imports, building the models,
compilation with a cold compiler cache, the first image), measured in a child process of `python -m benchmarks.gpu`."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
import unittest.mock
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import wan_t2i.aot
import wan_t2i.pipeline
from benchmarks.gpu_measure import child_report, empty_compiler_caches, sync, timed
from benchmarks.gpu_models import (
    FULL,
    REFERENCE_PROMPT,
    SMOKE,
    build_components,
    build_text_encoder,
    build_tokenizer,
    run_ours,
    stock_pipeline,
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
    --ttfi-presets, with each preset named there (fastest, fp8: keys ending in `+fp8`). With --ttfi-disk, two more
    starts that load the weights from disk (`ttfi_disk_first`, `ttfi_disk_second`): see `child_from_disk`."""
    meta = bench.results["meta"]
    profile = meta.get("ttfi_profile") or 0
    for model, size in bench.scale.ttfi:
        folder = tempfile.mkdtemp(prefix="ttfi-model-")  # the random model saved once, for the starts from disk
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
            if meta.get("ttfi_disk"):
                cache = tempfile.mkdtemp(prefix="ttfi-compile-cache-")
                dump = bench.record / f"profile-disk-{case.replace('@', '-').replace('+', '-')}.pstats"
                starts = (
                    ("first", "second")
                    + ("unwarmed",) * bool(meta.get("ttfi_unwarmed"))
                    + ("switched",) * bool(meta.get("ttfi_switch_interval"))
                    + ("profiled",) * bool(profile)
                )
                switch_interval = meta.get("ttfi_switch_interval")
                for start in starts:
                    bench.item(
                        "ttfi", f"ttfi_disk_{start}/{case}",
                        lambda m=model, s=size, f=fp8, c=cache, d=folder, p=profile * (start == "profiled"), w=dump,
                        u=start == "unwarmed", i=switch_interval if start == "switched" else None:
                        ttfi_in_child(
                            bench, m, s, c, p, fp8=f, model_folder=d, dump=w if p else None, unwarmed=u,
                            switch_interval=i,
                        ),
                    )  # fmt: skip


def ttfi_in_child(
    bench: Bench,
    model: str,
    size: tuple[int, int],
    compile_cache: str | None = None,
    profile: int = 0,
    *,
    fp8: bool = False,
    model_folder: str | None = None,
    dump: Path | None = None,
    unwarmed: bool = False,
    switch_interval: float | None = None,
) -> dict:
    """Run `child_ttfi` in a fresh interpreter with an empty compiler cache, as on a fresh machine; with
    `compile_cache`, ahead-of-time compiled through that folder (which a later call finds filled); with `profile`,
    the first image under cProfile, its `profile` costliest functions in the report (and all of them in `dump`, a
    pstats file), the compiled blocks read when first needed (not ahead, in a thread cProfile does not see) unless
    they come with `model_folder`, which a server's restart reads ahead; with `model_folder`, `child_from_disk`
    (`unwarmed`: with from_pretrained's warm-ups off, the text encoder's and the blocks'; `switch_interval`: Python's
    thread switch interval while from_pretrained runs)."""
    settings = settled_settings(bench, model)
    attention = settings.attention or "none"
    env = empty_compiler_caches("ttfi-inductor-")  # as on a fresh machine
    command = [sys.executable, "-X", "faulthandler", "-m", "benchmarks.gpu", CHILD_FLAG, model, f"{size[0]}x{size[1]}"]
    command += ["--attention", attention] + ([] if settings.compile else ["--no-compile"])
    command += ["--smoke"] if bench.smoke else []
    command += ["--compile-cache", compile_cache] if compile_cache else []
    command += ["--profile", str(profile)] if profile else []
    # Profiled from memory, nothing is read ahead, so that the profile shows the reading; from disk the blocks are read
    # ahead as a server's restart reads them (its reading is timed apart, read_block_s), so that the profile shows
    # what else the first image does
    command += ["--no-preload"] if profile and not model_folder else []
    command += ["--profile-dump", str(dump)] if profile and dump else []
    command += ["--fp8"] if fp8 else []
    command += ["--model-folder", model_folder] if model_folder else []
    command += ["--no-warm-up"] if unwarmed else []
    command += ["--switch-interval", repr(switch_interval)] if switch_interval else []
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
    if args.model_folder:
        return child_from_disk(args, scale, model, size, imported)
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
    report = {"import_s": imported, "text_encoder_build_s": text_built, "build_s": built}
    report |= two_images(WanT2IPipeline(components), args, scale, size)
    print("TTFI " + json.dumps(report | {"total_s": time.time() - args.t0, "settings": repr(settings)}), flush=True)


def child_from_disk(args: argparse.Namespace, scale: Any, model: str, size: tuple[int, int], imported: float) -> None:
    """A start as a server makes it: `WanT2IPipeline.from_pretrained` of a model folder on disk with the `fastest`
    (or `fp8`) preset and `compile_cache` (its warm-ups of the text encoder and of the blocks read ahead on, unless
    --no-warm-up), then two images. The folder is the random model saved once (by the first start that finds it
    empty, before its clock starts); the model's and the compile cache's files are dropped from
    the page cache before loading (`evict`), so the weights and blocks are read from the disk as on a new machine.
    `weights_s` is `load_components`' part of `from_pretrained_s`, `apply_s` the preset's;
    `beyond_weights_s` = from_pretrained_s - weights_s + first_image_s: what the start costs beyond loading the
    weights."""
    folder = Path(args.model_folder)
    saved = None
    if not (folder / "model_index.json").exists():
        saved, _ = timed(lambda: save_random_model(model, scale, folder))
    evicted = evict(folder) + evict(Path(args.compile_cache))
    files = cache_files(Path(args.compile_cache))
    spent: dict[str, float] = {}
    with (
        timing(wan_t2i.pipeline, "load_components", "weights_s", spent),
        timing(wan_t2i.pipeline, "apply", "apply_s", spent),
        # reading the compiled blocks (in preload's thread, or in the first forward) and the first forward's wait
        # for a block read ahead: no sync, as the reading runs beside the weights' loading
        timing(wan_t2i.aot, "read_block", "read_block_s", spent, sync_after=False),
        timing(wan_t2i.aot, "preloaded_block", "preload_wait_s", spent, sync_after=False),
        # running each block read ahead once on a stand-in, in preload's thread after its reading (the warm-up)
        timing(wan_t2i.aot, "warm_block", "block_warm_up_s", spent, sync_after=False),
        # the text encoder's warm-up, in a thread of its own beside the transformers' loading
        timing(wan_t2i.pipeline, "warm_text_encoder", "warm_up_s", spent, sync_after=False),
        # the thread switch interval the loading ran under: from_pretrained's, or --switch-interval's in its place
        noting_switch_interval(spent),
        unittest.mock.patch.object(wan_t2i.pipeline, "LOADING_SWITCH_INTERVAL_S", args.switch_interval)
        if args.switch_interval
        else contextlib.nullcontext(),
        # with --no-preload nothing is read ahead: the reading shows in the first image's profile
        unittest.mock.patch.object(wan_t2i.aot, "preload", no_preload) if args.no_preload else contextlib.nullcontext(),
    ):
        loading, pipe = timed(
            lambda: WanT2IPipeline.from_pretrained(
                teacher_path=folder, device=scale.device, performance="fp8" if args.fp8 else "fastest",
                compile_cache=args.compile_cache, warm_up=not args.no_warm_up,
            )
        )  # fmt: skip
        report = {"import_s": imported, "saved_s": saved, "evicted_bytes": evicted, "from_pretrained_s": loading}
        report["switch_interval_s"] = spent.pop("switch_interval_s")
        report |= two_images(pipe, args, scale, size)
    report |= spent
    report["beyond_weights_s"] = loading - spent["weights_s"] + report["first_image_s"]
    # files the start added to the compile cache: a restart that compiles nothing adds none (kernels compiled again
    # would show here, in inductor/ and inductor/triton/)
    report["cache_files_added"] = sorted(str(p) for p in cache_files(Path(args.compile_cache)) - files)[:50]
    print("TTFI " + json.dumps(report | {"total_s": time.time() - args.t0}), flush=True)


@contextlib.contextmanager
def noting_switch_interval(spent: dict) -> Iterator[None]:
    """`spent["switch_interval_s"]`: Python's thread switch interval as `load_components` starts (from_pretrained's
    while it loads)."""
    load = wan_t2i.pipeline.load_components

    def noted(*args: Any, **kwargs: Any) -> Any:
        spent["switch_interval_s"] = sys.getswitchinterval()
        return load(*args, **kwargs)

    with unittest.mock.patch.object(wan_t2i.pipeline, "load_components", noted):
        yield


def two_images(pipe: WanT2IPipeline, args: argparse.Namespace, scale: Any, size: tuple[int, int]) -> dict:
    """A start's first image (with --profile, under cProfile: the `args.profile` functions with the most cumulative
    time, with their callees) and its next one; with a compile cache, how many packages (or blocks) the start built
    and loaded: a restart should only load."""
    profiler = cProfile.Profile() if args.profile else None
    before = compile_counters()
    with profiler or contextlib.nullcontext():
        first, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, scale.steps))
    counted = compile_counters()
    second, next_generation = timed(lambda: run_ours(pipe, "a photo of a lake", size, scale.steps))
    report = {"first_image_s": first, "second_image_s": second, "first_phases_s": generation.timings,
              "second_phases_s": next_generation.timings,
              "first_image_compile_counters": {k: n - before.get(k, 0) for k, n in counted.items()
                                               if n != before.get(k, 0)}}  # fmt: skip
    if profiler is not None:
        for key, order in (("profile", "cumulative"), ("profile_tottime", "tottime")):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(args.profile)
            report[key] = text.getvalue().splitlines()[-args.profile - 2 :]
        if args.profile_dump:
            profiler.dump_stats(args.profile_dump)  # all of it, for pstats (the record keeps the file)
    if args.compile_cache:
        ahead = wan_t2i.aot.ahead_of(pipe.components.transformer)
        report |= {"packages_built": ahead.built, "packages_loaded": ahead.loaded, "kind": type(ahead).__name__,
                   "preloaded": getattr(ahead, "preloaded", None)}  # fmt: skip
    return report


def compile_counters() -> dict[str, int]:
    """PyTorch's compile counters (`torch._dynamo.utils.counters`: Dynamo's graphs, Inductor's and AOTAutograd's
    cache hits and misses, ...) as "group/name" -> count: their change over a first image shows what it compiled."""
    counters = torch._dynamo.utils.counters
    return {f"{group}/{name}": int(n) for group, names in counters.items() for name, n in names.items()
            if isinstance(n, int)}  # fmt: skip


def save_random_model(model: str, scale: Any, folder: Path) -> None:
    """The benchmark's random model `model` (its transformer, VAE, text encoder, tokenizer), saved in the Diffusers
    layout to `folder`, then freed."""
    tokenizer = build_tokenizer()
    components = build_components(model, scale, build_text_encoder(scale, len(tokenizer)), tokenizer)
    stock_pipeline(components).save_pretrained(folder, safe_serialization=True)
    (folder / "wan_t2i.json").write_text(json.dumps({"min_side": components.defaults.min_side}))  # smoke sizes
    del components
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def no_preload(*_: Any) -> list:
    """`wan_t2i.aot.preload` where nothing is to be read ahead."""
    return []


def cache_files(folder: Path) -> set[Path]:
    """The files under a compile cache `folder`, relative to it."""
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def evict(folder: Path) -> int:
    """Drop `folder`'s files from the page cache (POSIX_FADV_DONTNEED; written pages are synced first), so that the
    next read comes from the disk; returns the bytes of the files."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            total += path.stat().st_size
    return total


@contextlib.contextmanager
def timing(module: Any, name: str, key: str, spent: dict[str, float], sync_after: bool = True) -> Iterator[None]:
    """Add the time spent in `module.name` to `spent[key]` while inside (the function is wrapped, then restored);
    with `sync_after`, up to the device's work done."""
    original = getattr(module, name)

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result = None
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            if sync_after:
                sync()
            spent[key] = spent.get(key, 0.0) + time.time() - start
            if isinstance(result, bool):  # a yes/no answer (warm_block: whether it ran) counted too
                spent[f"{key}_true"] = spent.get(f"{key}_true", 0) + result

    setattr(module, name, timed_call)
    try:
        yield
    finally:
        setattr(module, name, original)
