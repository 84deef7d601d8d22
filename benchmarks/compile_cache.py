"""Time to the first image of a fresh process: eager, compiled ahead of time into an empty cache (the first start),
and again with that cache filled (a restart, or a new machine given the cache folder).

    python -m benchmarks.compile_cache                                  # the embedded demo model on this machine
    python -m benchmarks.compile_cache --teacher_path Wan-AI/Wan2.1-T2V-1.3B-Diffusers --device cuda --size 480x832
    python -m benchmarks.compile_cache --kind blocks    # Dynamo-compiled blocks (CUDA's kind), here on the CPU

Each start is its own process: it loads the model (timed apart), then renders one image with flow_unipc at the model's
default steps (or --steps), and a second image, whose time is the steady state. The target (issue 19) is the second
start's first image within 2 s of its steady-state image: no tracing at start-up, only loading the package. With
`--kind blocks` a third start loads the blocks with the kernels they were compiled to removed from the folder
(`inductor/`, see wan_t2i.aot.keep_kernels), as every restart did before the folder kept them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = """
import json, sys, time
start = time.perf_counter()
from wan_t2i.pipeline import WanT2IPipeline
options = json.loads(sys.argv[1])
cache = options.pop("compile_cache")
kind = options.pop("kind")
pipe = WanT2IPipeline.from_pretrained(options.pop("teacher_path"), compile_cache=None if kind else cache,
                                      **options.pop("load"))
if kind and cache:  # a kind of one's own: compile_ahead, as from_pretrained does with the device's kind
    from wan_t2i import aot
    from wan_t2i.performance import transformers_of
    aot.preload(cache, pipe.device)
    for transformer in transformers_of(pipe.components):
        aot.compile_ahead(transformer, cache, kind=kind)
loaded = time.perf_counter()
request = pipe.request("A serene lake at sunset", seed=1, **options)
pipe.generate(request)
first = time.perf_counter()
pipe.generate(request.with_seed(2))
steady = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "first_image_s": first - loaded, "steady_image_s": steady - first}))
"""


def one_start(options: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", START, json.dumps(options)], cwd=ROOT, capture_output=True,
                          text=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compile_cache", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--teacher_path", help="default: the embedded demo model")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--dtype", help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--size", help="HEIGHTxWIDTH (default: the model's)")
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--kind", choices=("packages", "blocks"), help="what the cache keeps (default: the device's)")
    args = parser.parse_args(argv)

    settings = {"steps": args.steps} if args.steps else {}
    if args.size:
        settings["height"], settings["width"] = (int(v) for v in args.size.lower().split("x"))
    load = {"device": args.device, "dtype": args.dtype}
    with tempfile.TemporaryDirectory(prefix="wan-t2i-compiled-") as cache:
        common = {"teacher_path": args.teacher_path, "load": load, "kind": args.kind} | settings
        rows = [("eager", one_start(common | {"compile_cache": None}))]
        for name in ("first start (builds)", "second start (loads)"):
            rows.append((name, one_start(common | {"compile_cache": cache})))
        if args.kind == "blocks":
            shutil.rmtree(Path(cache) / "inductor", ignore_errors=True)
            rows.append(("second, no kernels", one_start(common | {"compile_cache": cache})))
    print(f"{'start':<22} {'load s':>8} {'first image s':>14} {'steady image s':>15} {'first - steady s':>17}")
    for name, r in rows:
        print(f"{name:<22} {r['load_s']:>8.2f} {r['first_image_s']:>14.2f} {r['steady_image_s']:>15.2f} "
              f"{r['first_image_s'] - r['steady_image_s']:>17.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
