"""Hugging Face ZeroGPU: how long a render asks the GPU for, and the decorator that asks (absent elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from wan_t2i.request import GenerationRequest

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


def gpu_seconds(request: GenerationRequest, *_: Any, **__: Any) -> int:
    """ZeroGPU duration for `request`: from its steps, branches and size; the fixed minimum for anything else."""
    if not isinstance(request, GenerationRequest):
        return GPU_BASE_SECONDS
    pixels = request.height * request.width / GPU_REFERENCE_PIXELS
    sampling = request.steps * len(request.samplers) * GPU_SECONDS_PER_STEP * pixels
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + math.ceil(sampling)))


def on_gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; a no-op where the `spaces` package is missing."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
