"""Can a transformer block compiled once be saved and loaded by the next process, without tracing, through Dynamo's
own ahead-of-time path (`torch.compile(...).aot_compile`, `save_compiled_function`,
`torch.compiler.load_compiled_function`)? It keeps Inductor's Python wrapper and Triton kernels, and so needs none of
AOTInductor's C++ runtime, whose loader crashed on the H100s (benchmarks/records/2026-12-07-h100-aoti-bare).

    PYTHONUNBUFFERED=1 python -m benchmarks.precompile [--model 1.3b] [--size 480x832] [--variants bf16,graphs,fp8]

Per variant, three fresh processes, each with its own empty Inductor cache (as on a new machine): `build` compiles
the first block's forward at a batch-2 forward's inputs and saves it; `load` loads the saved function, puts it on every
block, and runs; `eager` runs the same model uncompiled, for its time and its output. Each prints its seconds (import,
model build, compile or load, first forward, the median of 5 forwards after it) and the largest difference from the
eager output. Variants: `bf16` (Inductor's default mode), `graphs` (mode "reduce-overhead", CUDA graphs), `fp8` (the
blocks' linears in float8 as the fp8 preset quantises them). `--smoke`: a tiny model on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]


def child(stage: str, variant: str, model: str, size: str, path: str, smoke: bool) -> dict:
    import functools

    import torch

    from benchmarks.gpu_measure import forward_inputs, timed
    from benchmarks.gpu_models import FULL, SMOKE, build_transformer
    from wan_t2i.performance import prefer_attention_backend, quantize_blocks_fp8

    import_s = time.time() - T0
    scale = SMOKE if smoke else FULL
    hw = (64, 64) if smoke else tuple(int(v) for v in size.split("x"))
    device = scale.device
    if device == "cuda" and torch.cuda.get_device_capability()[0] == 9:
        prefer_attention_backend("cudnn")
    torch.backends.cuda.matmul.allow_tf32 = True
    build_s, transformer = timed(lambda: build_transformer(scale.transformers[model], scale))
    if variant == "fp8":
        quantize_blocks_fp8(transformer)
    inputs = forward_inputs(transformer, 2, hw, device)
    report: dict = {"stage": stage, "variant": variant, "import_s": import_s, "model_build_s": build_s}
    torch._dynamo.config.enable_aot_compile = True
    with torch.inference_mode():
        if stage == "eager":
            report["first_forward_s"], out = timed(lambda: transformer(**inputs)[0])
        else:
            blocks = list(transformer.blocks)
            forward = type(blocks[0]).forward
            if stage == "build":
                captured: dict = {}

                def hook(module, args, kwargs):
                    captured.update(args=args, kwargs=kwargs)

                handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
                transformer(**inputs)
                handle.remove()
                mode = "reduce-overhead" if variant == "graphs" else "default"
                example = ((blocks[0], *captured["args"]), captured["kwargs"])

                def compile_and_save():
                    compiled = torch.compile(forward, fullgraph=True, mode=mode).aot_compile(example)
                    compiled.save_compiled_function(path)
                    return compiled

                report["compile_s"], compiled = timed(compile_and_save)
                report["saved_mb"] = os.path.getsize(path) / 1e6
            else:

                def load():
                    with open(path, "rb") as file:
                        return torch.compiler.load_compiled_function(file)

                report["load_s"], compiled = timed(load)
            for block in blocks:
                block.forward = functools.partial(compiled, block)
            report["first_forward_s"], out = timed(lambda: transformer(**inputs)[0])
        report["forward_s"] = statistics.median(timed(lambda: transformer(**inputs)[0])[0] for _ in range(5))
        out = transformer(**inputs)[0].float().cpu()
    report["to_first_output_s"] = time.time() - T0
    torch.save(out, f"{path}.{stage}.out")
    return report


def run(stage: str, args: argparse.Namespace, variant: str, path: str) -> dict:
    from benchmarks.gpu_measure import child_report, empty_compiler_caches  # not at the top: the child times imports

    env = empty_compiler_caches(f"precompile-{variant}-{stage}-")  # as on a new machine
    command = [sys.executable, "-X", "faulthandler", "-m", "benchmarks.precompile", "--child", stage, variant,
               args.model, args.size, path] + (["--smoke"] if args.smoke else [])  # fmt: skip
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    report = child_report(done.stdout, "PRECOMPILE")
    return {"rc": done.returncode, "process_s": time.time() - start} | (report or {"stderr": done.stderr[-3000:]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="1.3b")
    parser.add_argument("--size", default="480x832")
    parser.add_argument("--variants", default="bf16,graphs")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--timeout", type=float, default=400)
    parser.add_argument("--out", help="write the report (JSON) here too")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("PRECOMPILE " + json.dumps(child(*args.child, smoke=args.smoke)), flush=True)
        return
    import torch

    folder = Path(tempfile.mkdtemp(prefix="precompile-"))
    report: dict = {"torch": torch.__version__, "model": args.model, "size": args.size, "variants": {}}
    for variant in args.variants.split(","):
        path = str(folder / f"{variant}.bin")
        stages = {stage: run(stage, args, variant, path) for stage in ("build", "load", "eager")}
        outs = {s: Path(f"{path}.{s}.out") for s in stages}
        if all(p.exists() for p in outs.values()):
            eager = torch.load(outs["eager"])
            for stage in ("build", "load"):
                stages[stage]["max_abs_diff"] = (torch.load(outs[stage]) - eager).abs().max().item()
            stages["eager"]["abs_max"] = eager.abs().max().item()
        report["variants"][variant] = stages
        print(variant, json.dumps(stages), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
