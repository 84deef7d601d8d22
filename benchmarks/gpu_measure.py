"""The GPU benchmark's measurements: synchronised timing, peak memory, the bare transformer loop and its MFU, the
matmul peak, the attention kernels and the solvers' own cost."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.flops import transformer_flops
from benchmarks.gpu_models import SEED, SHIFT
from wan_t2i.constants import TEXT_LEN
from wan_t2i.performance import GB
from wan_t2i.samplers import sample_many, wan_unipc_scheduler


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    """Free what is cached and start a new peak-memory count."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / GB if torch.cuda.is_available() else None


def empty_compiler_caches(prefix: str) -> dict[str, str]:
    """This process's environment with new, empty Inductor and Triton caches: a child started with it compiles as a
    process on a new machine would."""
    cache = tempfile.mkdtemp(prefix=prefix)
    return os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}


def child_report(stdout: str, tag: str) -> dict | None:
    """The JSON a child process printed last on a line of its own after `tag` and a space; None if it printed none."""
    lines = [line for line in stdout.splitlines() if line.startswith(f"{tag} ")]
    return json.loads(lines[-1][len(tag) + 1 :]) if lines else None


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds `fn` takes, the device synchronised before and after, and its result."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def summary(times: list[float], **extra) -> dict:
    return {"median_s": statistics.median(times) if times else None, "times_s": times, "peak_gb": peak_gb()} | extra


def measure(run: Callable[[], object], warmup: int, runs: int, **extra) -> dict:
    """Median of `runs` timed calls after `warmup`; for this project's runs also the median of each phase."""
    reset_peak()
    for _ in range(warmup):
        timed(run)
    times, phases = [], {}
    for _ in range(runs):
        seconds, out = timed(run)
        times.append(seconds)
        for phase, value in (getattr(out, "timings", None) or {}).items():
            phases.setdefault(phase, []).append(value)
    if phases:
        extra["phases_s"] = {phase: statistics.median(values) for phase, values in phases.items()}
    return summary(times, warmup=warmup, **extra)


def forward_inputs(transformer, batch: int, size: tuple[int, int], device: str) -> dict:
    """Random inputs of the pipeline's shapes and dtypes for a bare transformer forward."""
    generator = torch.Generator("cpu").manual_seed(SEED)
    latent = (batch, transformer.config.in_channels, 1, size[0] // 8, size[1] // 8)  # (B, C, F, H/8, W/8)
    text = (batch, TEXT_LEN, transformer.config.text_dim)
    dtype = transformer.dtype
    return dict(
        hidden_states=torch.randn(latent, generator=generator).to(device, dtype),
        timestep=torch.linspace(999, 1, batch).long().to(device),
        encoder_hidden_states=torch.randn(text, generator=generator).to(device, dtype),
        return_dict=False,
    )


@torch.inference_mode()
def measure_floor(
    transformer,
    batch: int,
    size: tuple[int, int],
    steps: int,
    runs: int,
    peak_tflops: float | None,
    warmup: int = 1,
    fp8_peak_tflops: float | None = None,
) -> tuple[dict, torch.Tensor]:
    """`steps` forwards alone at `batch`; the first forward (which compiles a new shape) is timed on its own. MFU
    against the bf16 matmul peak, and with `fp8_peak_tflops` also against the fp8 one (`mfu_fp8`)."""
    inputs = forward_inputs(transformer, batch, size, str(transformer.device))
    reset_peak()
    first_s, out = timed(lambda: transformer(**inputs)[0])

    def loop():
        for _ in range(steps):
            transformer(**inputs)

    for _ in range(warmup):
        loop()
    times = [timed(loop)[0] for _ in range(runs)]
    tokens = (size[0] // 16) * (size[1] // 16)
    flops = transformer_flops(transformer.config, tokens) * batch * steps
    median = statistics.median(times)
    mfu = flops / median / (peak_tflops * 1e12) if peak_tflops else None
    result = summary(times, first_forward_s=first_s, tflop=flops / 1e12, tflops=flops / median / 1e12, mfu=mfu)
    if fp8_peak_tflops:
        result["mfu_fp8"] = flops / median / (fp8_peak_tflops * 1e12)
    return result, out


def solver_loop(size: tuple[int, int], steps: int, device: str) -> dict:
    """The samplers' own cost over `steps` steps with a free stand-in model, against diffusers' UniPC `step` (which
    waits on the device several times per step): what the denoising loop spends besides the transformer."""
    x = torch.randn(1, 16, 1, size[0] // 8, size[1] // 8, device=device)

    def stand_in(x, t, row_models=None):
        return x * 0.01

    def diffusers_unipc():
        scheduler, sample = wan_unipc_scheduler(steps, SHIFT), x
        for t in scheduler.timesteps:
            sample = scheduler.step(stand_in(sample, t), t, sample, return_dict=False)[0]

    runs = {
        "flow_unipc": lambda: sample_many(stand_in, [x], samplers=["flow_unipc"], steps=steps, shift=SHIFT),
        "pair": lambda: sample_many(stand_in, [x, x], samplers=["legacy_ddim", "flow_unipc"], steps=steps, shift=SHIFT),
        "diffusers_unipc_step": diffusers_unipc,
    }
    report = {}
    for name, run in runs.items():
        run()
        report[f"{name}_s"] = statistics.median(timed(run)[0] for _ in range(5))
    return report


def forward_batches(samplers: tuple[str, ...], steps: int) -> list[int]:
    """Rows of each transformer forward in a guided run of `samplers` from one noise, as `sample_many` shares them."""
    batches = []

    def count(x, t, row_models):
        batches.append(2 * len(x))  # conditional and unconditional rows
        return x

    sample_many(count, [torch.zeros(1, 1, 1, 1, 1)] * len(samplers), samplers=samplers, steps=steps, shift=SHIFT)
    return batches


def matmul_peak(n: int, device: str, dtype: torch.dtype, repeats: int = 5, inner: int = 10) -> dict:
    """Median rate of n^3 matmuls on random data (several operand pairs, so no single pair stays cached)."""
    pairs = [(torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))]
    pairs += [(torch.randn_like(pairs[0][0]), torch.randn_like(pairs[0][1])) for _ in range(2)]
    for a, b in pairs:
        a @ b
    times = []
    for _ in range(repeats):
        t, _ = timed(lambda: [a @ b for _ in range(inner) for a, b in pairs])
        times.append(t / (inner * len(pairs)))
    median = statistics.median(times)
    return {"n": n, "dtype": str(dtype), "median_s": median, "tflops": 2 * n**3 / median / 1e12}


def matmul_peak_fp8(n: int, device: str, repeats: int = 5, inner: int = 10) -> dict:
    """Median rate of n^3 float8 (e4m3) matmuls with per-row scales and a bf16 output: what torchao's fp8 linears
    call (torch._scaled_mm), on random data, several operand pairs."""
    fp8 = torch.float8_e4m3fn

    def operands():
        a = torch.randn(n, n, device=device).to(fp8)
        b = torch.randn(n, n, device=device).to(fp8).t()  # column-major, as _scaled_mm wants its second operand
        return a, b, torch.rand(n, 1, device=device) + 0.5, torch.rand(1, n, device=device) + 0.5

    sets = [operands() for _ in range(3)]

    def products():
        return [torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16) for a, b, sa, sb in sets]

    products()
    times = [timed(lambda: [products() for _ in range(inner)])[0] / (inner * len(sets)) for _ in range(repeats)]
    median = statistics.median(times)
    return {"n": n, "dtype": "float8_e4m3fn, per-row scales", "median_s": median, "tflops": 2 * n**3 / median / 1e12}


def check_attention(heads: int, head_dim: int, tokens: int, device: str) -> dict:
    """cuDNN against flash attention at the model's self-attention shape: error vs fp32 math, and time."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    q, k, v = (
        torch.randn(2, tokens, heads, head_dim, device=device, dtype=torch.bfloat16).transpose(1, 2) for _ in "qkv"
    )
    with sdpa_kernel(SDPBackend.MATH):
        reference = sdpa(q.float(), k.float(), v.float())
    report = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                out = sdpa(q, k, v)
                times = [timed(lambda: sdpa(q, k, v))[0] for _ in range(10)]
            error = ((out.float() - reference).norm() / reference.norm()).item()
            report[name] = {"median_s": statistics.median(times), "rel_error": error}
        except RuntimeError as err:
            report[name] = {"error": str(err)[:300]}
    flash, cudnn = report["flash"], report["cudnn"]
    report["use_cudnn"] = bool(
        "median_s" in cudnn and "median_s" in flash and math.isfinite(cudnn["rel_error"])
        and cudnn["rel_error"] < 2e-2 and cudnn["median_s"] < 0.97 * flash["median_s"]
    )  # fmt: skip
    return report


@contextlib.contextmanager
def memory_cap(gpu_gb: float, device: str) -> Iterator[None]:
    """Let this process allocate at most `gpu_gb` GB on the GPU for the duration, as a card of that size would."""
    if not gpu_gb or device != "cuda":
        yield
        return
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_gb * GB / total))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


DEFAULT_FLAGS: dict = {}  # PyTorch's process-wide TF32 and attention settings at start-up


def remember_default_flags() -> None:
    """Note PyTorch's own settings before any preset changes them."""
    DEFAULT_FLAGS.update(
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_tf32=torch.backends.cudnn.allow_tf32,
        sdp_order=torch._C._get_sdp_priority_order() if hasattr(torch._C, "_get_sdp_priority_order") else None,
    )


def restore_default_flags() -> None:
    """PyTorch's own TF32 and attention settings, as the stock pipeline and the eager reference run with them."""
    torch.backends.cuda.matmul.allow_tf32 = DEFAULT_FLAGS["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = DEFAULT_FLAGS["cudnn_tf32"]
    if DEFAULT_FLAGS["sdp_order"] is not None:
        torch._C._set_sdp_priority_order(DEFAULT_FLAGS["sdp_order"])
