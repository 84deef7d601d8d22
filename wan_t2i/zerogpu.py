"""Hugging Face ZeroGPU: how long a job asks the GPU for, and the decorator that asks (absent elsewhere)."""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_t2i.request import GenerationRequest

if TYPE_CHECKING:
    from wan_t2i.jobs import Job

try:  # ZeroGPU Spaces provide `spaces`; everywhere else generation runs where the pipeline lives
    import spaces
except ImportError:
    spaces = None

# ZeroGPU time to ask for: fixed cost (moving weights, text encoder, VAE decode) plus the sampling itself, measured as
# about a quarter second per step and branch for a 14B Wan transformer at 832x480 on one H200, scaled by pixel count.
GPU_BASE_SECONDS = 20
GPU_SECONDS_PER_STEP = 0.25
GPU_REFERENCE_PIXELS = 832 * 480
GPU_MAX_SECONDS = 120  # ZeroGPU refuses longer requests from visitors without a paid plan
# The doctor on the served model: a VAE round trip, a few dozen forwards at small sizes and a few short samplings.
DIAGNOSE_SECONDS = 60
# The warm-up at start-up that compiles the transformers ahead of time (wan_t2i.aot); ZeroGPU's own examples ask for
# 1500 s to compile a large transformer. A package already on disk loads in a second or two.
WARMUP_SECONDS = 1500


def sampling_seconds(request: GenerationRequest) -> float:
    """GPU seconds of a request's denoising loop: its steps and branches, scaled by its pixels."""
    pixels = request.height * request.width / GPU_REFERENCE_PIXELS
    return request.steps * len(request.samplers) * GPU_SECONDS_PER_STEP * pixels


def gpu_seconds(request: GenerationRequest, *_: Any, **__: Any) -> int:
    """ZeroGPU duration for `request`: from its steps, branches and size; the fixed minimum for anything else."""
    if not isinstance(request, GenerationRequest):
        return GPU_BASE_SECONDS
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + math.ceil(sampling_seconds(request))))


def job_seconds(job: Job, *_: Any, **__: Any) -> int:
    """ZeroGPU duration for a handler's job: a generation as `gpu_seconds`, a sweep as the sum of its cells, the
    doctor a fixed time."""
    kind = getattr(job, "kind", None)
    if kind == "diagnose":
        return DIAGNOSE_SECONDS
    if kind == "warmup":
        return WARMUP_SECONDS
    if kind == "sweep" and isinstance(job.request, GenerationRequest) and job.axes:
        from wan_t2i.sweep import MAX_CELLS, make_cells

        cells = make_cells(job.request, job.axes, max_cells=job.max_cells or MAX_CELLS)
        return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + math.ceil(sum(sampling_seconds(c.request) for c in cells))))
    return gpu_seconds(getattr(job, "request", None))


def on_zerogpu() -> bool:
    """Whether this process is a ZeroGPU Space's server: a Space (SPACE_ID) with the `spaces` package."""
    return bool(os.environ.get("SPACE_ID")) and spaces is not None


# ZeroGPU's ahead-of-time compilation, as spaces 0.51 has it (`spaces/zero/torch/aoti.py`): `aoti_compile_and_save`
# exports nothing itself; it compiles an ExportedProgram with AOTInductor under ZeroGPU's options (the weights kept
# out of the package, the library's executable-stack flag cleared, which ZeroGPU's workers refuse) and writes
# `<dir>/root/package.pt2`; `LazyAOTIModel(path).with_weights(tensors)` loads that package at its first call in each
# GPU worker, binds the given tensors (no copy), and has the worker delete what PyTorch extracted (the worker never
# exits cleanly). `wan_t2i.aot` uses both on ZeroGPU (`aoti`).
AOTI_MODULE = "spaces.zero.torch.aoti"
AOTI_NAMES = ("aoti_compile_and_save", "LazyAOTIModel")


def aoti() -> Any | None:
    """ZeroGPU's ahead-of-time compilation module (AOTI_MODULE) on a ZeroGPU Space whose `spaces` has it; else None
    (not a Space, an older `spaces`, or one that cannot import it)."""
    if not on_zerogpu():
        return None
    try:
        module = importlib.import_module(AOTI_MODULE)
    except Exception:  # ImportError, or a spaces that fails on this torch: the app stays eager
        return None
    return module if all(hasattr(module, name) for name in AOTI_NAMES) else None


PERSISTENT_STORAGE = Path("/data")  # where a Space with persistent storage mounts it


def default_compile_cache() -> str:
    """Where the app keeps its compiled transformers on ZeroGPU unless told (--compile_cache): the Space's persistent
    storage when it has one, so that a restart loads them, else the home folder (lost at a restart)."""
    writable = PERSISTENT_STORAGE.is_dir() and os.access(PERSISTENT_STORAGE, os.W_OK)
    base = PERSISTENT_STORAGE if writable else Path.home() / ".cache"
    return str(base / "wan-t2i" / "compile-cache")


def on_gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; a no-op where the `spaces` package is missing."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
