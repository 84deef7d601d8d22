"""What reading compiled blocks ahead (`wan_t2i.aot.preload`'s thread) costs the weights' loading beside it, on this
machine's CPU, and whether Python's thread switch interval changes that.

    python -m benchmarks.load_beside                     # 5 rounds, switch intervals 5 ms (Python's), 0.5 and 0.1 ms
    python -m benchmarks.load_beside --rounds 3 --intervals 0.005,0.001

The question comes from the GPU (benchmarks/records/2026-12-08-h100-fp8-fused, run4): beside the blocks' reading and
warm-up the weights loaded 1.47 s slower. Both threads need the GIL for their Python; a thread that gives the GIL up
for a copy or a read waits, to take it back, until the other thread yields it, which a busy thread does only every
switch interval (`sys.setswitchinterval`, 5 ms by default): the convoy effect. This measures it with what runs here:

- the weights: the GPU benchmark's random 1.3B transformer (2.8 GB, saved once into --folder) loaded by
  diffusers' `from_pretrained` (`load_s`, Python-heavy: the model built on meta, its tensors assigned from the mmapped
  file) and then copied tensor by tensor (`copy_s`, GIL-free copies, as the GPU's `.to("cuda")` is);
- the reading: `preload` of the embedded demo model's compiled block (Dynamo's ahead-of-time path, CPU kernels),
  which imports Inductor and unpickles the block: the Python-heavy part of a GPU restart's reading (its GPU-only
  warm-up on a stand-in does not run on a CPU);
- each start its own process, torch on one thread (so that the two threads contend for the GIL, not for cores), the
  model's file in the page cache; rounds interleave the variants, and the figures are medians.

Variants: `load` alone, `preload` alone, and both together at each switch interval. `ready_s` is the time until both
the weights and the block are ready; the sum of the two alone is what running them one after the other would take.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = """
import json, sys, time
options = json.loads(sys.argv[1])
import torch
torch.set_num_threads(1)
from diffusers import WanTransformer3DModel
from wan_t2i import aot
if options["interval"]:
    sys.setswitchinterval(options["interval"])
begin = time.perf_counter()
folders = aot.preload(options["cache"], "cpu") if options["preload"] else []
load = copy = 0.0
if options["load"]:
    model = WanTransformer3DModel.from_pretrained(options["folder"], torch_dtype=torch.bfloat16, use_safetensors=True)
    load = time.perf_counter() - begin
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
    copy = time.perf_counter() - begin - load
for folder in folders:
    aot.preloaded_block(folder)
print("LOADED " + json.dumps({"load_s": load, "copy_s": copy, "ready_s": time.perf_counter() - begin}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--intervals", default="0.005,0.0005,0.0001", help="switch intervals (s), comma-separated")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "wan-t2i-load-beside"))
    args = parser.parse_args(argv)
    intervals = [float(value) for value in args.intervals.split(",")]
    folder = Path(args.folder)
    weights, cache = folder / "transformer", folder / "compile-cache"
    if not (weights / "config.json").exists():
        save_random_transformer(weights)
    if not any(cache.glob("*/block.bin")):
        build_block(cache)
    (weights / "diffusion_pytorch_model.safetensors").read_bytes()  # into the page cache
    variants = {"load": (True, False, None), "preload": (False, True, None)}
    variants |= {f"both, {i * 1000:g} ms": (True, True, i) for i in intervals}
    figures: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (load, preload, interval) in variants.items():
            options = {"load": load, "preload": preload, "interval": interval, "folder": str(weights)}
            figures[name].append(start(options | {"cache": str(cache)}))
    print(f"{'variant':>16} {'load_s':>8} {'copy_s':>8} {'ready_s':>8}   (medians of {args.rounds})")
    for name, runs in figures.items():
        medians = [statistics.median(run[key] for run in runs) for key in ("load_s", "copy_s", "ready_s")]
        print(f"{name:>16} " + " ".join(f"{value:8.3f}" for value in medians))
    alone = sum(statistics.median(run["ready_s"] for run in figures[name]) for name in ("load", "preload"))
    print(f"{'one after other':>16} {'':>8} {'':>8} {alone:8.3f}")
    print("RESULTS " + json.dumps(figures))


def start(options: dict) -> dict:
    """One start in a fresh process; its figures."""
    done = subprocess.run(
        [sys.executable, "-c", START, json.dumps(options)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOADED "))
    return json.loads(line.removeprefix("LOADED "))


def save_random_transformer(folder: Path) -> None:
    """The GPU benchmark's random 1.3B transformer (`benchmarks.gpu_models`: bf16, its fp32 modules kept fp32, as
    `from_pretrained` loads them), built on the CPU and saved in diffusers' layout."""
    from benchmarks.gpu_models import FULL, WAN_13B, build_transformer

    began = time.perf_counter()
    build_transformer(WAN_13B, dataclasses.replace(FULL, device="cpu")).save_pretrained(folder)
    print(f"saved a random 1.3B-shaped transformer to {folder} in {time.perf_counter() - began:.1f} s")


def build_block(cache: Path) -> None:
    """The embedded demo model's block, compiled by Dynamo's ahead-of-time path into `cache` (one image renders it)."""
    from wan_t2i import aot
    from wan_t2i.performance import transformers_of
    from wan_t2i.pipeline import WanT2IPipeline

    began = time.perf_counter()
    pipe = WanT2IPipeline.from_pretrained(device="cpu")
    for transformer in transformers_of(pipe.components):
        aot.compile_ahead(transformer, cache, kind="blocks")
    pipe.generate("a red square", seed=1, steps=2)
    print(f"compiled the demo model's block into {cache} in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
