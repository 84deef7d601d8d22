"""The app's flags, each defaulting to a `WAN_T2I_*` environment variable (what a Space sets), and the pipeline they
load. Parsing imports neither torch nor Gradio, so that `--help` and a bad flag answer at once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wan_t2i.choices import DTYPES, PRESETS, device_list

if TYPE_CHECKING:
    from wan_t2i.pipeline import WanT2IPipeline

KEEP_OUTPUTS_SECONDS = 3600  # served images are deleted once this old (docs/reliability.md)


ENVIRONMENT = """\
Each flag defaults to an environment variable (a Space sets them under Settings -> Variables):
  WAN_T2I_MODEL_PATH, WAN_T2I_TEACHER_PATH, WAN_T2I_DEVICE, WAN_T2I_DTYPE, WAN_T2I_WITH_TEACHER (1/true/yes),
  WAN_T2I_PERFORMANCE, WAN_T2I_GPU_MEMORY_GB, WAN_T2I_COMPILE_CACHE, WAN_T2I_DEVICES, WAN_T2I_RENDER_ON_LOAD,
  WAN_T2I_MAX_WORK, WAN_T2I_MAX_RENDER_SECONDS, WAN_T2I_KEEP_OUTPUTS_SECONDS; Gradio's own GRADIO_SERVER_NAME and
  GRADIO_SERVER_PORT.
  With none set, the embedded demo model is served.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags; each defaults to its environment variable, and those to the embedded demo model."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="The wan-t2i Gradio demo: two samplers side by side, from one seed.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model_path",
        default=env("WAN_T2I_MODEL_PATH"),
        help="student transformer: folder, Hub id ($WAN_T2I_MODEL_PATH)",
    )
    parser.add_argument(
        "--teacher_path",
        default=env("WAN_T2I_TEACHER_PATH"),
        help="Wan model, Diffusers or native layout ($WAN_T2I_TEACHER_PATH)",
    )
    parser.add_argument(
        "--device", default=env("WAN_T2I_DEVICE"), help="cuda, cuda:1, cpu (default: cuda when available)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=env("WAN_T2I_DTYPE"), help="transformer dtype (default: bf16 GPU, fp32 CPU)"
    )
    parser.add_argument(
        "--with_teacher",
        action="store_true",
        default=env("WAN_T2I_WITH_TEACHER", "").lower() in ("1", "true", "yes"),
        help="also load the teacher's transformer, for student-vs-teacher comparisons",
    )
    parser.add_argument(
        "--performance",
        choices=PRESETS,
        default=env("WAN_T2I_PERFORMANCE", "default"),
        help="default | fastest (compiled, for GPU servers) | low_memory (24 GB GPUs) | fp8 (fastest in float8, on "
        "GPUs with FP8); see docs/performance.md",
    )
    parser.add_argument(
        "--compile_cache",
        default=env("WAN_T2I_COMPILE_CACHE"),
        help="a folder: run the transformers ahead-of-time compiled, built once (at start-up, minutes) and loaded by "
        "every later start; on CUDA the transformers' repeated block; on ZeroGPU packages built by its own "
        "functions at start-up, the default there with fastest (docs/performance.md)",
    )
    parser.add_argument(
        "--devices",
        default=env("WAN_T2I_DEVICES"),
        help="several devices, e.g. cuda:0,cuda:1: the transformers copied onto each, a pair's samplers split over "
        "them (docs/multi-gpu.md); instead of --device",
    )
    parser.add_argument(
        "--gpu_memory_gb",
        type=float,
        default=env("WAN_T2I_GPU_MEMORY_GB"),  # argparse converts a string default with `type` too
        help="with low_memory: GB of GPU memory to plan for (default: the whole card)",
    )
    parser.add_argument(
        "--render_on_load",
        choices=["auto", "yes", "no"],
        default=env("WAN_T2I_RENDER_ON_LOAD", "auto"),
        help="render the first example as each page opens; auto: only for the embedded demo model",
    )
    limits = parser.add_argument_group("public limits (docs/reliability.md)")
    limits.add_argument(
        "--max_work",
        type=float,
        default=env("WAN_T2I_MAX_WORK"),
        help="megapixel-steps one request may ask for, steps x samplers x pixels / 1e6 (default: the model's "
        "public_max_work, else what the page can ask: 100 steps of 2 samplers at the largest preset)",
    )
    limits.add_argument(
        "--max_render_seconds",
        type=float,
        default=env("WAN_T2I_MAX_RENDER_SECONDS"),
        help="wall clock of one render, after which it stops at its next step (default: 300)",
    )
    limits.add_argument(
        "--keep_outputs_seconds",
        type=int,
        default=env("WAN_T2I_KEEP_OUTPUTS_SECONDS", KEEP_OUTPUTS_SECONDS),
        help=f"how long served images stay on disk (default: {KEEP_OUTPUTS_SECONDS})",
    )
    parser.add_argument("--server_name", default=None, help="default: 127.0.0.1 (GRADIO_SERVER_NAME overrides)")
    parser.add_argument("--server_port", type=int, default=None, help="default: 7860 (GRADIO_SERVER_PORT overrides)")
    args = parser.parse_args(argv)
    # argparse checks `choices` only for values typed on the command line, not for defaults from the environment.
    for name, allowed in (("dtype", DTYPES), ("performance", PRESETS), ("render_on_load", ("auto", "yes", "no"))):
        value = getattr(args, name)
        if value is not None and value not in allowed:
            parser.error(f"WAN_T2I_{name.upper()}={value!r}: choose one of {', '.join(allowed)}")
    return args


def load_pipeline(args: argparse.Namespace) -> WanT2IPipeline:
    """Build the pipeline once, from the parsed flags."""
    from wan_t2i.pipeline import WanT2IPipeline

    return WanT2IPipeline.from_pretrained(args.model_path, args.teacher_path, **pipeline_options(args))


def pipeline_options(args: argparse.Namespace) -> dict:
    """`from_pretrained`'s keyword arguments for the flags. On a ZeroGPU Space, which runs no `torch.compile`,
    `fastest` is all of it but the compilation and the graphs (the bf16 VAE in 2D, TF32), with the transformers
    compiled ahead of time by ZeroGPU's own functions where its `spaces` has them (`wan_t2i.zerogpu.aoti`), into
    --compile_cache or `zerogpu.default_compile_cache()`, at the app's warm-up; `fp8`, which needs torch.compile,
    is refused; and no text-encoder warm-up while loading (the server process never has the GPU: each request's
    forked worker does)."""
    from wan_t2i import zerogpu

    options = dict(
        device=args.device, dtype=args.dtype, with_teacher=args.with_teacher, performance=args.performance,
        gpu_memory_gb=args.gpu_memory_gb, compile_cache=args.compile_cache,
    )  # fmt: skip
    devices = device_list(args.device, args.devices)
    if devices is not None:
        options["devices"] = devices
        del options["device"]
    if zerogpu.on_zerogpu():
        options["warm_up"] = False  # kernels loaded in this process would not be the workers'
        aoti = zerogpu.aoti()
        if options["compile_cache"] is not None and aoti is None:
            raise ValueError(
                "--compile_cache on ZeroGPU needs the spaces package's ahead-of-time compilation "
                f"({zerogpu.AOTI_MODULE} with {' and '.join(zerogpu.AOTI_NAMES)}; spaces 0.51 has it): upgrade "
                "spaces, or leave --compile_cache unset to run eagerly"
            )
        if args.performance == "fp8":
            raise ValueError("the fp8 preset compiles with torch.compile, which ZeroGPU does not run: use fastest")
        if args.performance == "fastest":
            import torch

            from wan_t2i.performance import PerformanceSettings

            # No text graphs either: every request runs in a newly forked process, which would record them again.
            options["performance"] = PerformanceSettings(vae_dtype=torch.bfloat16, tf32=True, vae_2d=True)
            if aoti is not None and options["compile_cache"] is None:
                options["compile_cache"] = zerogpu.default_compile_cache()
    return options
