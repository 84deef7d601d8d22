"""Several GPUs: the data-parallel evaluation under torchrun (throughput), the A/B pair split over two GPUs (latency).

From the repository root, on a machine with 2 or 4 GPUs:

    PYTHONUNBUFFERED=1 python -m benchmarks.multi_gpu --models 1.3b     # both sections, the 1.3B at 480x832
    PYTHONUNBUFFERED=1 python -m benchmarks.multi_gpu --models 14b      # the 14B at 1024x1024 (about 8 minutes)
    python -m benchmarks.multi_gpu --sections throughput --gpus 1,2 --performance fastest
    python -m benchmarks.multi_gpu --smoke                               # on the CPU: tiny models, gloo, two "cpu"s

Weights are random, built on each GPU with the real shapes (benchmarks.gpu_models): speed depends on the shapes.

throughput  for each N of --gpus: `torchrun --standalone --nproc_per_node N -m benchmarks.multi_gpu --worker ...`.
            Each rank builds the model on its GPU, then runs `wan_t2i.evaluate.run` over the same cells (prompts x
            the pair of samplers): the cost-balanced shard, the rendering, the writing and, on rank 0, the merge of
            `torchrun -m wan_t2i.evaluate`, which differs only in loading its model from disk. Timed from a barrier
            after a warm-up prompt to the barrier after the last rank's last cell: cells/s, the speed-up over one
            GPU, and each N's images against one GPU's (largest pixel difference).
pair        in this process: one image, the A/B pair (legacy_ddim + flow_unipc) on one GPU, then the pair with the
            transformer copied to a second GPU (`WanT2IPipeline.replicate_to`), one sampler on each, a new prompt
            each run; the split pair's images against the one-GPU pair's.

A run writes a record folder (benchmarks/records/README.md): results.json and RESULTS.md after every measurement,
run.log, record.json (date, device, command, the commit measured), and each torchrun's output (torchrun-*.log).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_measure import log, measure, peak_gb, reset_peak, sync
from benchmarks.gpu_models import (
    FULL,
    GUIDANCE,
    NEGATIVE,
    PAIR,
    REFERENCE_PROMPT,
    SHIFT,
    SMOKE,
    Scale,
    build_components,
    build_text_encoder,
    build_tokenizer,
    run_ours,
    tag,
)
from benchmarks.gpu_record import ROOT, Bench, clean, environment, git_state, logging_to, new_record_dir
from wan_t2i.performance import apply, preset
from wan_t2i.pipeline import WanT2IPipeline

SIZES = {"1.3b": (480, 832), "14b": (1024, 1024)}  # the issue's shapes; the smoke run takes 64x64 for both
# Prompts per throughput run (each with the two samplers: 2 cells), enough for every N to keep its GPUs busy.
PROMPTS = {"1.3b": 16, "14b": 4}
PAIR_RUNS = {"1.3b": 5, "14b": 2}
SECTION_S = {"throughput": 300.0, "pair": 150.0}  # about what each section of one model takes on an H100


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.multi_gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (gloo, devices cpu, cpu)")
    parser.add_argument("--sections", default="throughput,pair", help="throughput, pair, or both (default)")
    parser.add_argument("--models", default="1.3b,14b", help="1.3b (at 480x832), 14b (at 1024x1024), or both")
    parser.add_argument("--gpus", default=None, help="the N of each throughput run (default 1,2,4; smoke 1,2)")
    parser.add_argument("--performance", default="default", help="the preset every rank and the pair apply")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per throughput run (2 cells each)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no measurement past this many seconds")
    parser.add_argument("--record", type=Path, default=None, help="the record folder (default: a new "
                        "benchmarks/records/<date>-<device>; with --smoke a temporary folder)")  # fmt: skip
    parser.add_argument("--commit", default=None, help="the commit measured, for a copy without git metadata")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one rank, under torchrun
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.gpus = [int(n) for n in (args.gpus or ("1,2" if args.smoke else "1,2,4")).split(",")]
    if set(args.models) - set(SIZES) or set(args.sections) - set(SECTION_S) or min(args.gpus) < 1:
        parser.error(f"--models from {', '.join(SIZES)}, --sections from {', '.join(SECTION_S)}, --gpus >= 1")
    return args


def scale_of(args: argparse.Namespace) -> Scale:
    return SMOKE if args.smoke else FULL


def size_of(args: argparse.Namespace, model: str) -> tuple[int, int]:
    return SMOKE.resolutions[model][0] if args.smoke else SIZES[model]


def settings_of(scale: Scale, size: tuple[int, int]) -> dict:
    """Every cell's request settings: those of benchmarks.gpu (steps, guidance 5, shift 5, its negative prompt)."""
    height, width = size
    return dict(steps=scale.steps, guidance_scale=GUIDANCE, shift=SHIFT, negative_prompt=NEGATIVE, height=height,
                width=width)  # fmt: skip


def build_pipe(args: argparse.Namespace, model: str, device: str) -> WanT2IPipeline:
    """The model with random weights of its real shapes, built on `device`, the --performance preset applied."""
    scale = replace(scale_of(args), device=device)
    tokenizer = build_tokenizer()
    components = build_components(model, scale, build_text_encoder(scale, len(tokenizer)), tokenizer)
    apply(components, preset(args.performance, device))
    return WanT2IPipeline(components)


# Throughput: one rank under torchrun ----------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """One rank: build the model on this rank's device, warm up, render its shard of the cells between two barriers;
    rank 0 merges and writes timing.json into --out."""
    import torch.distributed as dist

    from wan_t2i.evaluate import join_process_group, merge, rank_and_world, run

    rank, world = rank_and_world(None, None)
    device = (join_process_group(None) if world > 1 else None) or scale_of(args).device
    if device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    start = time.perf_counter()
    pipe = build_pipe(args, args.model, device)
    built = time.perf_counter()
    count = args.prompts or (2 if args.smoke else PROMPTS[args.model])
    prompts = [f"a photo of scene number {k} with a serene lake at sunset" for k in range(count + 1)]
    axes = {"seed": [0], "sampler": list(PAIR)}
    settings = settings_of(scale_of(args), size_of(args, args.model))
    common = dict(settings=settings, rank=rank, world_size=world, score=False, progress=False)
    run(pipe, prompts[-1:], axes, args.out.with_name(f"{args.out.name}-warmup"), **common)  # this shard's shapes
    barrier = dist.barrier if world > 1 else (lambda: None)
    sync()
    barrier()
    t0 = time.perf_counter()
    counts = run(pipe, prompts[:-1], axes, args.out, **common)
    rank_s = time.perf_counter() - t0
    sync()
    barrier()
    seconds = time.perf_counter() - t0
    ranks = [None] * world
    if world > 1:
        dist.all_gather_object(ranks, {"seconds": rank_s, "rendered": counts["rendered"]})
        dist.destroy_process_group()
    if rank == 0:
        merge_start = time.perf_counter()
        rows = merge(args.out, list(axes))["rows"]
        timing = {"gpus": world, "cells": counts["cells"], "rows": rows, "seconds": seconds,
                  "cells_per_s": counts["cells"] / seconds, "merge_s": time.perf_counter() - merge_start,
                  "ranks": ranks if world > 1 else [{"seconds": rank_s, "rendered": counts["rendered"]}],
                  "build_s": built - start, "peak_gb_rank0": peak_gb()}  # fmt: skip
        (args.out / "timing.json").write_text(json.dumps(timing, indent=1))


def torchrun(bench: Bench, args: argparse.Namespace, model: str, gpus: int, out: Path) -> dict:
    """One throughput run of `gpus` ranks; its output goes to the record's torchrun-<model>-n<gpus>.log."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
               "-m", "benchmarks.multi_gpu", "--worker", "--model", model, "--out", str(out),
               "--performance", args.performance] + (["--smoke"] if args.smoke else []) + (
               ["--prompts", str(args.prompts)] if args.prompts else [])  # fmt: skip
    env = os.environ | ({"OMP_NUM_THREADS": "1"} if args.smoke else {})
    logfile = bench.record / f"torchrun-{model}-n{gpus}.log"
    with logfile.open("w") as output:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited {done.returncode}; see {logfile.name}: {logfile.read_text()[-1500:]}")
    return json.loads((out / "timing.json").read_text())


def largest_difference(a: Path, b: Path) -> dict:
    """The largest pixel difference (in 1/255) between the same cells of two evaluation folders."""
    names = sorted(p.name for p in (a / "cells").glob("*.png"))
    if names != sorted(p.name for p in (b / "cells").glob("*.png")):
        raise AssertionError(f"{a} and {b} hold different cells")
    from PIL import Image

    worst = max(pixel_difference(Image.open(a / "cells" / n), Image.open(b / "cells" / n)) for n in names)
    return {"cells_compared": len(names), "max_pixel_diff": worst}


def pixel_difference(x, y) -> int:
    return int(np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max())


def bench_throughput(bench: Bench, args: argparse.Namespace, model: str, scratch: Path) -> None:
    visible = torch.cuda.device_count() if not args.smoke else max(args.gpus)
    key = f"throughput/{tag(model, size_of(args, model))}"
    for gpus in args.gpus:
        if gpus > visible:
            log(f"skip {key}/n{gpus}: {visible} GPU(s) visible")
            bench.results["skipped"].append(f"{key}/n{gpus}")
            continue
        out = scratch / f"{model}-n{gpus}"

        def one_run(gpus: int = gpus, out: Path = out) -> dict:
            timing = torchrun(bench, args, model, gpus, out)
            first = bench.results["items"].get(f"{key}/n1") or {}
            if gpus > 1 and first.get("cells_per_s"):
                timing |= {"speedup": timing["cells_per_s"] / first["cells_per_s"]}
                timing |= largest_difference(scratch / f"{model}-n1", out)
            return timing

        bench.item("throughput", f"{key}/n{gpus}", one_run, need_s=SECTION_S["throughput"] / len(args.gpus))


# Latency: the pair over two devices -----------------------------------------------------------------------------------
def bench_pair(bench: Bench, args: argparse.Namespace, model: str) -> None:
    """One image, the pair on one device, the pair over two; the split pair's images against the one-device pair's."""
    devices = ["cpu", "cpu"] if args.smoke else ["cuda:0", "cuda:1"]
    if not args.smoke and torch.cuda.device_count() < 2:
        log("skip the pair: it needs two GPUs")
        bench.results["skipped"].append(f"pair/{model}")
        return
    size, runs = size_of(args, model), (2 if args.smoke else PAIR_RUNS[model])

    def measure_all() -> dict:
        reset_peak()
        pipe = build_pipe(args, model, devices[0])
        one = measure(lambda: run_ours(pipe, bench.prompts(), size, bench.scale.steps), 1, runs)
        pair = measure(lambda: run_ours(pipe, bench.prompts(), size, bench.scale.steps, PAIR), 1, runs)
        reference = run_ours(pipe, REFERENCE_PROMPT, size, bench.scale.steps, PAIR).images
        pipe.replicate_to(devices[1:], performance=args.performance)
        split = measure(lambda: run_ours(pipe, bench.prompts(), size, bench.scale.steps, PAIR), 1, runs)
        images = run_ours(pipe, REFERENCE_PROMPT, size, bench.scale.steps, PAIR).images
        return {
            "one_s": one["median_s"], "pair_one_device_s": pair["median_s"], "median_s": split["median_s"],
            "times_s": {"one": one["times_s"], "pair_one_device": pair["times_s"], "pair_split": split["times_s"]},
            "phases_s": {"pair_one_device": pair.get("phases_s"), "pair_split": split.get("phases_s")},
            "pair_over_one": pair["median_s"] / one["median_s"], "split_over_one": split["median_s"] / one["median_s"],
            "max_pixel_diff": max(pixel_difference(images[k], reference[k]) for k in reference),
            "devices": devices, "peak_gb_device0": peak_gb(),
        }  # fmt: skip

    bench.item("pair", f"pair/{tag(model, size)}", measure_all, need_s=SECTION_S["pair"])
    reset_peak()


# The record's RESULTS.md ----------------------------------------------------------------------------------------------
TARGETS = (  # issue 17: (what, item kind, field, comparison, limit)
    ("2 GPUs >= 1.9x the cells/s of one", "n2", "speedup", ">=", 1.9),
    ("4 GPUs >= 3.7x the cells/s of one", "n4", "speedup", ">=", 3.7),
    ("the pair over two GPUs <= 1.1x one image", "pair", "split_over_one", "<=", 1.1),
)


def write_multi_md(results: dict, path: Path) -> None:
    """RESULTS.md of a run from its results dictionary: the throughput table, the pair table, the targets."""
    meta, items = results["meta"], results["items"]
    commit = "unknown" if meta.get("commit") is None else meta["commit"][:12]
    lines = [
        "# Several GPUs: benchmark results",
        "",
        f"Device: {meta.get('device')}, {meta.get('gpus_visible')} visible; torch {meta.get('torch')}, diffusers "
        f"{meta.get('diffusers')}. Run {meta.get('date')}, {meta.get('elapsed_s', 0):.0f} s.",
        f"Code: commit {commit}" + (", with uncommitted changes." if meta.get("dirty") else "."),
        f"Reproduce: `{meta.get('command')}` (from the repository root).",
        "",
        f"Random weights of the real shapes built on each device; {meta.get('steps')} steps, guidance 5, shift 5, "
        f"the `{meta.get('performance')}` preset; bf16 transformer and UMT5 (fp32 in the CPU smoke run), fp32 VAE. "
        "Throughput: the cells are prompts x the pair of samplers (legacy_ddim, flow_unipc), one seed; seconds from "
        "a barrier after a warm-up prompt to the barrier after the last rank's last cell. Pixel differences in "
        "1/255. Pair: medians in seconds, a new prompt each run."
        + (" CPU smoke run: the script checked end to end, not a measurement." if meta.get("smoke") else ""),
        "",
        "| model @ size | GPUs | cells | seconds | cells/s | speed-up | each rank's seconds | vs one GPU: pixels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, v in items.items():
        if key.startswith("throughput/"):
            ranks = " / ".join(f"{r['seconds']:.1f}" for r in v.get("ranks") or [])
            lines.append(
                f"| {key.split('/')[1]} | {v.get('gpus', key[-1])} | {v.get('cells', '-')} | {number(v, 'seconds')} "
                f"| {number(v, 'cells_per_s', '.3f')} | {number(v, 'speedup')} | {ranks or '-'} "
                f"| {v.get('max_pixel_diff', '-')} |"
            )
    lines += [
        "",
        "| model @ size | one image | pair, one device | pair, two devices | pair / one image: one device | two "
        "devices | split vs one-device pair: pixels |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, v in items.items():
        if key.startswith("pair/"):
            lines.append(
                f"| {key.split('/')[1]} | {number(v, 'one_s', '.3f')} | {number(v, 'pair_one_device_s', '.3f')} "
                f"| {number(v, 'median_s', '.3f')} | {number(v, 'pair_over_one')} | {number(v, 'split_over_one')} "
                f"| {v.get('max_pixel_diff', '-')} |"
            )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for what, kind, field, comparison, limit in TARGETS:
        for key, v in items.items():
            if (key.endswith(f"/{kind}") or key.startswith(f"{kind}/")) and isinstance(v.get(field), float):
                met = v[field] >= limit if comparison == ">=" else v[field] <= limit
                lines.append(f"| {what} ({key.split('/')[1]}) | {v[field]:.2f} | {'yes' if met else 'NO'} |")
    for name, entries in (("Skipped", results["skipped"]), ("Errors", [e["item"] for e in results["errors"]])):
        if entries:
            lines += ["", f"{name}: {', '.join(entries)}."]
    path.write_text("\n".join(lines) + "\n")


def number(values: dict, key: str, spec: str = ".2f") -> str:
    value = values.get(key)
    return "error" if "error" in values else "-" if value is None else f"{value:{spec}}"


class MultiBench(Bench):
    """benchmarks.gpu's Bench (time budget, one item at a time, saved after each) with this benchmark's RESULTS.md."""

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = self.elapsed()
        (self.record / "results.json").write_text(json.dumps(clean(self.results), indent=1))
        write_multi_md(self.results, self.record / "RESULTS.md")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke on the CPU")
    commit, dirty = (args.commit, False) if args.commit else git_state()
    scale = scale_of(args)
    record = args.record or (Path(tempfile.gettempdir()) / "wan_t2i_multi_gpu_smoke" if args.smoke else None)
    record = record or new_record_dir()
    meta = environment(args.smoke, scale.steps, shlex.join(["python", "-m", "benchmarks.multi_gpu", *argv]),
                       commit, dirty)  # fmt: skip
    meta |= {"gpus_visible": torch.cuda.device_count(), "performance": args.performance}
    budget = math.inf if args.budget_s is None else args.budget_s
    bench = MultiBench(scale, args.sections, None, record, budget, meta)
    scratch = Path(tempfile.mkdtemp(prefix="multi_gpu_"))
    try:
        with logging_to(record / "run.log"):
            log(f"{meta['device']} x {meta['gpus_visible']}; sections {args.sections}; models {args.models}; {record}")
            for model in args.models:
                if "throughput" in args.sections:
                    bench_throughput(bench, args, model, scratch)
                if "pair" in args.sections:
                    bench_pair(bench, args, model)
            bench.save()
            log(f"done in {bench.elapsed():.0f} s; {len(bench.results['errors'])} errors; wrote {record}")
            print((record / "RESULTS.md").read_text(), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
