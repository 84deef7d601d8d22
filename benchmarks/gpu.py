"""Wan-size models on one GPU: stock diffusers WanPipeline against this project's pipeline, eager and optimised.

From the repository root:

    PYTHONUNBUFFERED=1 python -m benchmarks.gpu            # every section; writes benchmarks/records/<date>-<device>/
    python -m benchmarks.gpu --smoke                       # the whole benchmark on the CPU, tiny models (minutes)
    python -m benchmarks.gpu --sections peak,1.3b --resolutions 480x832 --budget-s 540
    python -m benchmarks.gpu --sections peak,14b,fp8 --resolutions 14b@1024x1024   # one model at one size
    python -m benchmarks.gpu --render DIR/results.json     # rewrite DIR/RESULTS.md from its JSON, no GPU

Weights are random (initialised on the GPU): speed and memory depend on the shapes, not the values. For each model and
resolution (20 steps, guidance 5, bf16 transformer and text encoder, fp32 VAE as loaded):
  stock      diffusers.WanPipeline on the same modules, eager;
  stock_knobs the same WanPipeline once `fastest` is applied to those modules (diffusers' compile_repeated_blocks,
             cuDNN attention, bf16 VAE; this project's text graphs and 2D VAE taken off for it): what diffusers' own
             optimisation docs give;
  ours_eager this project's pipeline as loaded (no settings), one run: the reference image;
  ours       with PerformanceSettings.fastest: a new prompt each run (text cache cold), and `ours_warm` with one prompt;
  pair       the A/B pair legacy_ddim + flow_unipc in one batched run;
  floor_bN   the 20 transformer forwards alone at batch N, with their share of the bf16 matmul peak (MFU);
and, once: `peak` (8192^3 bf16 matmul, and fp8 with per-row scales on CUDA), `fp8` (each model section's model
again with the fp8 preset, after its bf16 runs: first image, the bare loop and its error against the eager forward,
PSNR against the eager image; and the 14B, two A14B experts and an int8 UMT5 with the process capped to 48 GB),
`lowmem` (the 14B with low_memory_for settings, starting from modules in CPU
memory as `load_components(offload=True)` leaves them), `ttfi` (time to the first image of a fresh process, compile
included, cold compiler cache) and `cudagraphs` (the 1.3B with CUDA graphs on top of `fastest`: an experiment, not a
preset). Each image is checked against the eager one (PSNR). `ours` and `pair` also record where their time goes
(text encoding, denoising loop, VAE decode: the pipeline's own timings, synchronised at each phase's end).

A run writes one record folder (benchmarks/records/README.md lists them): results.json and RESULTS.md, rewritten after
every measurement so that a run cut short still leaves its numbers, run.log (what it printed) and record.json (date,
device, command, the commit measured and whether the tree had uncommitted changes).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.gpu_lowmem import bench_lowmem
from benchmarks.gpu_measure import log, matmul_peak, matmul_peak_fp8, remember_default_flags, reset_peak, timed
from benchmarks.gpu_models import FULL, SMOKE, Scale, build_text_encoder, build_tokenizer
from benchmarks.gpu_record import Bench, environment, git_state, logging_to, new_record_dir
from benchmarks.gpu_report import write_results_md
from benchmarks.gpu_sections import bench_cudagraphs, bench_model
from benchmarks.gpu_ttfi import CHILD_FLAG, bench_ttfi, child_ttfi
from wan_t2i.performance import FP8_MIN_CAPABILITY

SECTIONS = "peak,1.3b,14b,fp8,lowmem,cudagraphs,ttfi"


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script end to end")
    parser.add_argument("--sections", default=SECTIONS, help=f"comma-separated, run in this order (default {SECTIONS})")
    parser.add_argument("--resolutions", default=None, help="e.g. 480x832,14b@1024x1024: HxW for every model, "
                        "MODEL@HxW for one (default: all of each model's)")  # fmt: skip
    parser.add_argument(
        "--budget-s", type=float, default=None,
        help="start no measurement after this many seconds, keeping each later section's usual time free for it "
        "(default: no limit). Under a wall-clock limit pass about a minute less than the limit: the H200 and H100 "
        "records ran 470-565 s to fit 10-minute jobs, which left the 14B pair at 480x832 out",
    )  # fmt: skip
    parser.add_argument("--record", type=Path, default=None, help="the record folder to write (default: a new "
                        "benchmarks/records/<date>-<device>; with --smoke a temporary folder)")  # fmt: skip
    parser.add_argument("--commit", default=None, help="the commit measured, for a copy of the tree without git "
                        "metadata (default: git rev-parse HEAD)")  # fmt: skip
    parser.add_argument("--dirty", action="store_true", help="with --commit: the tree has uncommitted changes")
    parser.add_argument("--ttfi", default=None, help="MODEL@HxW[,...] for the ttfi section, e.g. 14b@1024x1024")
    parser.add_argument("--ttfi-profile", type=int, default=0, metavar="N", help="with the ttfi section: one more "
                        "restart from the filled compile cache, its first image under cProfile (the compiled blocks "
                        "read when first needed, not ahead; with --ttfi-disk, read ahead as a server's restart reads "
                        "them); the record keeps the N functions with the most cumulative time (default 0: "
                        "none)")  # fmt: skip
    parser.add_argument("--ttfi-disk", action="store_true", help="with the ttfi section: two more starts per case "
                        "that load the weights from disk with from_pretrained (the random model saved once, dropped "
                        "from the page cache), compile cache filled by the first: keys ttfi_disk_first and "
                        "ttfi_disk_second, with beyond_weights_s")  # fmt: skip
    parser.add_argument("--ttfi-unwarmed", action="store_true", help="with --ttfi-disk: one more restart per case, "
                        "from_pretrained's warm-ups (of the text encoder, and of the blocks read ahead) off (key "
                        "ttfi_disk_unwarmed): the A/B of those warm-ups")  # fmt: skip
    parser.add_argument("--ttfi-switch-interval", type=float, default=None, metavar="S", help="with --ttfi-disk: one "
                        "more restart per case, warm-ups on, with Python's thread switch interval S seconds while "
                        "from_pretrained loads, in place of its LOADING_SWITCH_INTERVAL_S (key ttfi_disk_switched); "
                        "0.005, Python's default, is the A/B of that setting (benchmarks/load_beside.py)")  # fmt: skip
    parser.add_argument(
        "--ttfi-presets",
        default="fastest",
        help="with the ttfi section: the presets each case "
        "runs with: fastest and/or fp8 (on a GPU with FP8; keys end in +fp8; default: fastest)",
    )
    parser.add_argument(
        "--lowmem", default=None,
        help="MODEL@HxW[:GB],... for the lowmem section: GB is the card it runs as, 0 (default) streams every layer",
    )  # fmt: skip
    parser.add_argument("--skip", default="", help="comma-separated measurements to leave out, by the part of their "
                        "key after the model and size, e.g. ours_warm,floor_b4,pair,fp8_pair,fp8cap_pair, or the ttfi "
                        "section's by the part before it, e.g. ttfi (to fit a time limit; each is listed in the "
                        "record's skipped)")  # fmt: skip
    parser.add_argument("--fp8-scales", default="row", choices=("row", "tensor"),
                        help="the fp8 section's scale granularity (default: row, the preset's)")  # fmt: skip
    parser.add_argument("--fp8-multi-kernel", default="off", choices=("on", "off"),
                        help="the fp8 section's blocks compiled with Inductor's multi_kernel (PerformanceSettings."
                        "multi_kernel) or not (default: off)")  # fmt: skip
    parser.add_argument("--fp8-fused", default="on", choices=("on", "off"),
                        help="the fp8 section's attention projections fused (PerformanceSettings.fused_projections: "
                        "one q|k|v and one k|v linear, each input quantised once; the fp8 preset's) or not (default: "
                        "on)")  # fmt: skip
    parser.add_argument("--render", type=Path, default=None, help="only rewrite RESULTS.md from this results.json")
    parser.add_argument("--results-md", type=Path, default=None, help="with --render: where (default: beside it)")
    parser.add_argument("--note", default=None, help="with --render: a line added under the command (a caveat)")
    parser.add_argument(CHILD_FLAG, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--attention", default="cudnn", help=argparse.SUPPRESS)
    parser.add_argument("--no-compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-preload", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-dump", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--switch-interval", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fp8", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", default=None, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def scale_for(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Scale:
    """FULL or SMOKE, with the --ttfi and --lowmem cases in place of their defaults."""
    scale = SMOKE if args.smoke else FULL
    for name in ("ttfi", "lowmem"):
        cases = []
        for case in getattr(args, name).split(",") if getattr(args, name) else []:
            model, _, size = case.partition("@")
            size, _, gpu_gb = size.partition(":") if name == "lowmem" else (size, "", "")
            if model not in scale.transformers or "x" not in size:
                parser.error(f"--{name} takes MODEL@HxW, MODEL one of {', '.join(scale.transformers)}; got {case}")
            size = tuple(int(v) for v in size.split("x"))
            cases.append((model, size, float(gpu_gb or 0)) if name == "lowmem" else (model, size))
        if cases:
            scale = replace(scale, **{name: tuple(cases)})
    return scale


def sections_of(parser: argparse.ArgumentParser, args: argparse.Namespace, scale: Scale) -> list[str]:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    known = ["peak", *scale.transformers, "fp8", "lowmem", "ttfi", "cudagraphs"]
    if set(sections) - set(known):
        parser.error(f"unknown sections {sorted(set(sections) - set(known))}; choose from {', '.join(known)}")
    if "fp8" in sections and scale.device != "cuda":
        log("fp8 needs a GPU with FP8 (the preset refuses the CPU): the smoke run leaves it out")
        sections.remove("fp8")
    return sections


def parse_resolutions(parser: argparse.ArgumentParser, text: str | None, scale: Scale) -> set | None:
    """--resolutions as {(model or None, (height, width))}; None: every model at all of its sizes."""
    if not text:
        return None
    wanted = set()
    for case in text.split(","):
        model, _, size = case.strip().rpartition("@")
        if (model and model not in scale.transformers) or "x" not in size:
            parser.error(f"--resolutions takes HxW or MODEL@HxW, MODEL one of {', '.join(scale.transformers)}; "
                         f"got {case}")  # fmt: skip
        wanted.add((model or None, tuple(int(v) for v in size.split("x"))))
    return wanted


def render(args: argparse.Namespace) -> None:
    """Rewrite a RESULTS.md from its results.json (and add a caveat to both)."""
    results = json.loads(args.render.read_text())
    if args.note:
        results["meta"]["note"] = args.note
        args.render.write_text(json.dumps(results, indent=1))
    write_results_md(results, args.results_md or args.render.with_name("RESULTS.md"))


def start_bench(
    parser: argparse.ArgumentParser, args: argparse.Namespace, scale: Scale, sections: list[str], argv: list[str]
) -> Bench:
    """The run's Bench, its record folder and record.json written first."""
    commit, dirty = (args.commit, args.dirty) if args.commit else git_state()
    if commit is None:
        log("no git metadata here and no --commit: record.json will not say which commit was measured")
    record = args.record or (Path(tempfile.gettempdir()) / "wan_t2i_gpu_smoke" if args.smoke else new_record_dir())
    meta = environment(args.smoke, scale.steps, shlex.join(["python", "-m", "benchmarks.gpu", *argv]), commit, dirty)
    wanted = parse_resolutions(parser, args.resolutions, scale)
    budget_s = math.inf if args.budget_s is None else args.budget_s
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    presets = [name.strip() for name in args.ttfi_presets.split(",") if name.strip()]
    if not presets or not set(presets) <= {"fastest", "fp8"}:
        parser.error(f"--ttfi-presets takes fastest and/or fp8, got {args.ttfi_presets!r}")
    if "fp8" in presets and scale.device != "cuda":
        parser.error("--ttfi-presets fp8 needs a GPU with FP8 (the fp8 preset refuses the CPU)")
    meta |= {
        "fp8_scales": args.fp8_scales,
        "fp8_multi_kernel": args.fp8_multi_kernel == "on",
        "fp8_fused": args.fp8_fused == "on",
        "ttfi_profile": args.ttfi_profile,
        "ttfi_presets": presets,
        "ttfi_disk": args.ttfi_disk,
        "ttfi_unwarmed": args.ttfi_unwarmed,
        "ttfi_switch_interval": args.ttfi_switch_interval,
    }
    return Bench(scale, sections, wanted, record, budget_s, meta, skip)


def run_sections(bench: Bench) -> None:
    """Every section asked for: peak, the models, lowmem (reusing the last model section's components), then ttfi
    and cudagraphs, which build their own models, in the order given."""
    scale, sections = bench.scale, bench.sections
    if "peak" in sections:
        bench.item("peak", "peak", lambda: matmul_peak(scale.peak_size, scale.device, scale.dtype))
        if scale.device == "cuda" and torch.cuda.get_device_capability() >= FP8_MIN_CAPABILITY:
            bench.item("peak", "peak_fp8", lambda: matmul_peak_fp8(scale.peak_size, scale.device))
    model_sections = [s for s in sections if s in scale.transformers]
    tokenizer, text_encoder = build_tokenizer(), None
    if model_sections or "lowmem" in sections:
        seconds, text_encoder = timed(lambda: build_text_encoder(scale, len(tokenizer)))
        bench.results["meta"]["text_encoder_build_s"] = seconds
        log(f"text encoder built in {seconds:.1f} s")
    kept = None
    for model in model_sections:
        components = bench_model(bench, model, text_encoder, tokenizer)
        kept = components if model == scale.lowmem[0][0] and "lowmem" in sections else kept
        del components
        settle()
    if "lowmem" in sections:
        held, kept = {"components": kept}, None
        bench_lowmem(bench, held, text_encoder, tokenizer)
        held = text_encoder = None
        settle()
    for section in sections:
        if section == "ttfi":
            bench_ttfi(bench)
        elif section == "cudagraphs":
            bench_cudagraphs(bench, tokenizer)
            settle()


def settle() -> None:
    """Free the last section's models and compiled graphs before the next one's peak is measured."""
    gc.collect()
    torch._dynamo.reset()
    reset_peak()


def main(argv: list[str] | None = None) -> None:
    start = time.time()
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    if args.child_ttfi:
        args.t0 = args.t0 or start
        return child_ttfi(args)
    if args.render:
        return render(args)
    scale = scale_for(parser, args)
    if scale.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on the CPU")
    if args.budget_s is not None and not args.budget_s > 0:
        parser.error(f"--budget-s must be > 0 seconds, got {args.budget_s}")
    if args.dirty and not args.commit:
        parser.error("--dirty goes with --commit; without --commit git says whether the tree is dirty")
    sections = sections_of(parser, args, scale)
    remember_default_flags()
    bench = start_bench(parser, args, scale, sections, argv)
    with logging_to(bench.record / "run.log"):
        log(f"{bench.results['meta']['device']}; sections {sections}; budget {bench.budget_s:.0f} s; {bench.record}")
        run_sections(bench)
        bench.save()
        log(f"done in {bench.elapsed():.0f} s; {len(bench.results['errors'])} errors; wrote {bench.record}")
        print((bench.record / "RESULTS.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
