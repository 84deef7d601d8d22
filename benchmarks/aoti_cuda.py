"""Does an ahead-of-time compiled package (wan_t2i.aot) load and run on this CUDA card, and with which AOTInductor
options? Each variant builds a package in a fresh process, runs it against the eager transformer, then loads it in a
second fresh process (a restart) and runs it again; a crash (SIGSEGV) ends only that process, and the crashing
thread's stack (Python's faulthandler) is kept in the report with the last stage it reached.

    PYTHONUNBUFFERED=1 python -m benchmarks.aoti_cuda [--sizes linear,tiny,1.3b-2] [--out FILE]

Variants: options `plain` (only `package_constants_in_so` off, as wan_t2i.aot had it when loading crashed on an
H100) or `spaces` (wan_t2i.aot.INDUCTOR_OPTIONS: also constant folding off and tensor constants kept, as ZeroGPU's
`spaces.aoti_compile` sets them) or `zerogpu` (the package compiled and loaded by ZeroGPU's own functions, `spaces`'
AoT module, as the app does on a Space: wan_t2i.zerogpu.aoti; needs the `spaces` package and its dependencies);
attention in PyTorch's default order or cuDNN first (the `fastest` preset's order on Hopper). Sizes: `linear` (one
`torch.nn.Linear`, packaged with AOTInductor's own defaults: whether AOTInductor packages load on this platform at
all, nothing of this project's involved), `tiny` (2 layers of width 64 at 64x64) and `1.3b-2` (two layers of the
1.3B at 480x832).

Measured on an H100 with torch 2.11.0+cu130 (benchmarks/records/2026-12-07-h100-aoti): every variant, and the single
Linear, died of SIGSEGV inside `torch._inductor.aoti_load_package` (pt2_archive `_load_aoti`); `zerogpu` too, in
spaces 0.51.3's loader, after spaces' compile had built the package (benchmarks/records/2026-12-07-h100-ttfi-disk).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.gpu_measure import child_report
from benchmarks.gpu_models import WAN_13B

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "tiny": (dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, freq_dim=32, text_dim=64),
             (64, 64)),
    "1.3b-2": (WAN_13B | {"num_layers": 2}, (480, 832)),
}  # fmt: skip
PLAIN = {"aot_inductor.package_constants_in_so": False}


def child(size: str, options: str, attention: str, folder: str) -> dict:
    """In a fresh process: the transformer (seeded, bf16, on CUDA) through wan_t2i.aot with `folder` as its cache."""
    import faulthandler

    import torch
    from diffusers import WanTransformer3DModel

    import wan_t2i.aot as aot
    from wan_t2i.performance import prefer_attention_backend

    faulthandler.enable()
    aot.ALLOW_CUDA = True
    if options == "zerogpu":  # as on a Space: wan_t2i.zerogpu.aoti finds spaces' AoT module
        import os

        os.environ["SPACE_ID"] = "probe/aoti-cuda"
        if aot.zerogpu_aoti() is None:
            raise RuntimeError("spaces' ahead-of-time module is not importable here")
    if options == "plain":
        aot.INDUCTOR_OPTIONS = dict(PLAIN)
    if attention == "cudnn":
        prefer_attention_backend("cudnn")
    if size == "linear":
        return linear_package(folder)
    config, (height, width) = SIZES[size]
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16, **config)
    transformer = transformer.to("cuda", torch.bfloat16).eval()
    generator = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(2, 16, 1, height // 8, width // 8, device="cuda", dtype=torch.bfloat16, generator=generator)
    context = torch.randn(2, 512, config["text_dim"], device="cuda", dtype=torch.bfloat16, generator=generator)
    timestep = torch.tensor([999, 500], device="cuda")
    with torch.no_grad():
        eager = transformer(x, timestep, context, return_dict=False)[0]
        forward = aot.compile_ahead(transformer, folder, kind="packages")
        start = time.time()
        print("STAGE first call (load or build)", flush=True)
        with aot.warming_up():  # on ZeroGPU packages are built only there
            out = transformer(x, timestep, context, return_dict=False)[0]
        torch.cuda.synchronize()
        first = time.time() - start
        print("STAGE second call", flush=True)
        again = transformer(x[:1], timestep[:1], context[:1], return_dict=False)[0]  # batch 1: the dynamic batch
        torch.cuda.synchronize()
    model = next(iter(forward.models.values()))
    owned = dict(transformer.named_parameters()) | dict(transformer.named_buffers())
    fqns = model.get_constant_fqns() if hasattr(model, "get_constant_fqns") else []  # not ZeroGPU's lazy loader
    return {
        "built": forward.built, "loaded": forward.loaded, "first_call_s": round(first, 2),
        "max_abs_diff": (out.float() - eager.float()).abs().max().item(),
        "batch1_max_abs_diff": (again.float() - eager[:1].float()).abs().max().item(),
        "eager_abs_max": eager.float().abs().max().item(),
        "constants": len(fqns), "parameters_and_buffers": len(owned),
        "constants_not_owned": [f for f in fqns if f.removeprefix("transformer.") not in owned],
        "compiled_by": "spaces" if forward.zerogpu is not None else "torch",
    }  # fmt: skip


def linear_package(folder: str) -> dict:
    """A single Linear exported, packaged with AOTInductor's defaults and loaded back: the smallest case there is."""
    import torch

    torch.manual_seed(0)
    module, x = torch.nn.Linear(64, 64).cuda(), torch.randn(4, 64, device="cuda")
    with torch.no_grad():
        path = torch._inductor.aoti_compile_and_package(
            torch.export.export(module, (x,)), package_path=str(Path(folder) / "linear.pt2")
        )
        print("STAGE load", flush=True)
        loaded = torch._inductor.aoti_load_package(path)
        print("STAGE run", flush=True)
        diff = (loaded(x) - module(x)).abs().max().item()
    return {"built": 1, "loaded": 1, "max_abs_diff": diff}


def crash_trace(stderr: str) -> str:
    """Python's faulthandler report of the crashing thread (its stack, without the list of extension modules)."""
    start = stderr.find("Current thread")
    if start < 0:
        return stderr[-2500:]
    end = stderr.find("Extension modules", start)
    return stderr[start : end if end > 0 else None][-2500:]


def run_child(size: str, options: str, attention: str, folder: str) -> dict:
    command = [sys.executable, "-X", "faulthandler", "-m", "benchmarks.aoti_cuda", "--child", size, options,
               attention, folder]  # fmt: skip
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    result = child_report(done.stdout, "AOTI")
    report = {"returncode": done.returncode, "process_s": round(time.time() - start, 1)}
    if result is not None:
        return report | result
    stages = [line for line in done.stdout.splitlines() if line.startswith("STAGE ")]
    return report | {"last_stage": stages[-1] if stages else None, "crash": crash_trace(done.stderr)}


def variant(size: str, options: str, attention: str) -> dict:
    folder = tempfile.mkdtemp(prefix=f"aoti-{size}-{options}-{attention}-")
    first = run_child(size, options, attention, folder)
    second = run_child(size, options, attention, folder) if first["returncode"] == 0 and size != "linear" else None
    return {"size": size, "options": options, "attention": attention, "first_start": first, "second_start": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="linear,tiny,1.3b-2")
    parser.add_argument("--options", default="plain,spaces")
    parser.add_argument("--attention", default="default,cudnn")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--out", help="write the report (JSON) here too")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("AOTI " + json.dumps(child(*args.child)), flush=True)
        return
    import torch

    sizes = args.sizes.split(",")
    models = [s for s in sizes if s != "linear"]
    cases = list(itertools.product(models, args.options.split(","), args.attention.split(",")))
    cases = [("linear", "defaults", "default")] * ("linear" in sizes) + cases  # the Linear has no variants
    with ThreadPoolExecutor(args.parallel) as pool:
        reports = list(pool.map(lambda case: variant(*case), cases))
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "cudnn": torch.backends.cudnn.version()}
    for report in reports:
        print(json.dumps(report), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "variants": reports}, indent=1))


if __name__ == "__main__":
    main()
