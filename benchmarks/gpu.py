"""Wan-size models on one GPU: stock diffusers WanPipeline against this project's pipeline, eager and optimised.

    PYTHONUNBUFFERED=1 python benchmarks/gpu.py --out $OUT/results_gpu.json --results-md $OUT/RESULTS.md
    python benchmarks/gpu.py --smoke                     # the whole script on the CPU with tiny models (< 2 min)
    python benchmarks/gpu.py --sections peak,1.3b        # parts only; also --resolutions 480x832

Weights are random (initialised on the GPU): speed and memory depend on the shapes, not the values. For each model and
resolution (20 steps, guidance 5, bf16 transformer and text encoder, fp32 VAE as loaded):
  stock      diffusers.WanPipeline on the same modules, eager;
  ours_eager this project's pipeline as loaded (no settings), one run: the reference image;
  ours       with PerformanceSettings.fastest: a new prompt each run (text cache cold), and `ours_warm` with one prompt;
  pair       the A/B pair legacy_ddim + flow_unipc in one batched run;
  floor_bN   the 20 transformer forwards alone at batch N, with their share of the bf16 matmul peak (MFU);
and, once: `peak` (8192^3 bf16 matmul), `lowmem` (the 14B with low_memory_for settings, starting from modules in CPU
memory as `load_components(offload=True)` leaves them), `ttfi` (time to the first image of a fresh process, compile
included, cold compiler cache) and `cudagraphs` (the 1.3B with CUDA graphs on top of `fastest`: an experiment, not a
preset). Each image is checked against the eager one (PSNR). `ours` and `pair` also record where their time goes
(text encoding, denoising loop, VAE decode: the pipeline's own timings, synchronised at each phase's end).
JSON and RESULTS.md are rewritten after every measurement, so a run cut short still leaves its numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel  # noqa: E402
from gpu_report import write_results_md  # noqa: E402
from transformers import UMT5Config, UMT5EncoderModel  # noqa: E402

from wan_t2i.constants import TEXT_LEN  # noqa: E402
from wan_t2i.demo.tokenizer import build_word_tokenizer  # noqa: E402
from wan_t2i.loading import ModelDefaults, WanComponents, freeze  # noqa: E402
from wan_t2i.performance import GB, PerformanceSettings, apply, is_offloaded, psnr, transformer_flops  # noqa: E402
from wan_t2i.pipeline import WanT2IPipeline  # noqa: E402
from wan_t2i.samplers import sample_many  # noqa: E402

SEED = 1234
STEPS, GUIDANCE, SHIFT = 20, 5.0, 5.0
NEGATIVE = "blurry, low quality, distorted, static, overexposed"
REFERENCE_PROMPT = "a serene lake at sunset with snowy mountains"
WORDS = "a photo of scene number with serene lake at sunset snowy mountains blurry low quality distorted static"

# Wan2.1-T2V-1.3B and one Wan2.2-T2V-A14B expert (their transformer/config.json); the rest are diffusers' defaults.
WAN_13B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, freq_dim=256, text_dim=4096)
WAN_14B = dict(
    num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, freq_dim=256, text_dim=4096
)
# google/umt5-xxl encoder, as Wan ships it (bf16).
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
)  # fmt: skip


@dataclass(frozen=True)
class Counts:
    """Warm-ups and timed runs of one (model, resolution); the eager reference is always one run."""

    stock_warmup: int = 1
    stock_runs: int = 2
    runs: int = 2  # ours, new prompt each run, after one check run that doubles as warm-up
    warm_runs: int = 0  # ours with the text cache warm
    pair_runs: int = 1
    floor_runs: int = 1  # timed 20-forward loops per batch size
    floor_warmup: int = 1  # untimed loops first (GPU clocks settle after the compile pause)
    pair_eager: bool = False  # also render the eager pair (a PSNR reference for the optimised pair)


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the GPU run and the CPU smoke run."""

    device: str
    dtype: torch.dtype
    transformers: dict[str, dict]
    umt5: dict
    vae: dict
    resolutions: dict[str, list[tuple[int, int]]]
    counts: dict[tuple[str, tuple[int, int]], Counts]
    steps: int = STEPS
    peak_size: int = 8192
    # (model, size, GB of the card it is run as; 0: stream every layer, as on any card)
    lowmem: tuple[tuple[str, tuple[int, int], float], ...] = (
        ("14b", (480, 832), 0.0),
        ("14b", (480, 832), 24.0),
        ("14b", (1024, 1024), 24.0),
    )
    ttfi: tuple[tuple[str, tuple[int, int]], ...] = (("1.3b", (480, 832)), ("14b", (1024, 1024)))
    cudagraphs: tuple[str, tuple[int, int]] = ("1.3b", (480, 832))
    reserve_s: dict[str, float] = field(default_factory=lambda: {"lowmem": 200.0, "ttfi": 80.0, "cudagraphs": 25.0})
    budget_s: float = 480.0  # seconds from start-up; the lead's one GPU call is about 9 minutes


FULL = Scale(
    device="cuda",
    dtype=torch.bfloat16,
    transformers={"1.3b": WAN_13B, "14b": WAN_14B},
    umt5=UMT5_XXL,
    vae={},
    resolutions={"1.3b": [(480, 832), (1024, 1024)], "14b": [(1024, 1024), (480, 832)]},
    counts={
        ("1.3b", (480, 832)): Counts(2, 5, runs=5, warm_runs=5, pair_runs=5, floor_runs=3, pair_eager=True),
        ("1.3b", (1024, 1024)): Counts(1, 2, runs=3, warm_runs=2, pair_runs=2, floor_runs=1),
        ("14b", (1024, 1024)): Counts(1, 2, runs=2, warm_runs=2, pair_runs=1, floor_runs=1, floor_warmup=0),
        ("14b", (480, 832)): Counts(1, 2, runs=2, warm_runs=2, pair_runs=1, floor_runs=1, floor_warmup=0),
    },
)
SMOKE = Scale(
    device="cpu",
    dtype=torch.float32,
    transformers={
        "1.3b": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, freq_dim=32, text_dim=32),
        "14b": dict(num_attention_heads=4, attention_head_dim=16, ffn_dim=96, num_layers=2, freq_dim=32, text_dim=32),
    },
    umt5=dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8),
    vae=dict(base_dim=8),
    resolutions={"1.3b": [(64, 64)], "14b": [(64, 64)]},
    counts={},
    steps=2,
    peak_size=256,
    lowmem=(("14b", (64, 64), 0.0), ("14b", (64, 64), 24.0)),
    ttfi=(("1.3b", (64, 64)),),
    cudagraphs=("1.3b", (64, 64)),
    reserve_s={"lowmem": 10.0, "ttfi": 60.0, "cudagraphs": 20.0},
    budget_s=600.0,
)
SMOKE_COUNTS = Counts(1, 2, runs=2, warm_runs=1, pair_runs=1, floor_runs=1, pair_eager=True)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / GB if torch.cuda.is_available() else None


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def summary(times: list[float], **extra) -> dict:
    return {"median_s": statistics.median(times) if times else None, "times_s": times, "peak_gb": peak_gb()} | extra


# Building ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def building_on(device: str, dtype: torch.dtype):
    """New parameters are created directly on `device` in `dtype` (no CPU copy, no fp32 detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_transformer(config: dict, scale: Scale) -> WanTransformer3DModel:
    """Random weights, laid out as `from_pretrained(torch_dtype=bf16)` loads them (its fp32 modules kept fp32)."""
    torch.manual_seed(0)
    with building_on(scale.device, scale.dtype):
        model = WanTransformer3DModel(**config)
    keep = model._keep_in_fp32_modules or []
    for name, module in model.named_modules():
        if name and any(part in keep for part in name.split(".")):
            module.float()
    return freeze(model)


def build_text_encoder(scale: Scale, vocab: int) -> UMT5EncoderModel:
    torch.manual_seed(1)
    config = UMT5Config(**(scale.umt5 | {"vocab_size": max(vocab, scale.umt5["vocab_size"])}))
    with building_on(scale.device, scale.dtype):
        model = UMT5EncoderModel(config)
    return freeze(model.to(scale.dtype))


def build_vae(scale: Scale) -> AutoencoderKLWan:
    torch.manual_seed(2)
    with building_on(scale.device, torch.float32):
        return freeze(AutoencoderKLWan(**scale.vae))


def build_components(name: str, scale: Scale, text_encoder: UMT5EncoderModel, tokenizer) -> WanComponents:
    defaults = ModelDefaults(name=f"random {name}", steps=scale.steps, negative_prompt=NEGATIVE, min_side=16)
    return WanComponents(
        transformer=build_transformer(scale.transformers[name], scale),
        vae=build_vae(scale),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        device=torch.device(scale.device),
        defaults=defaults,
    )


def stock_pipeline(components: WanComponents) -> WanPipeline:
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT)
    c = components
    pipe = WanPipeline(
        tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae, transformer=c.transformer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Runs ---------------------------------------------------------------------------------------------------------------
class Prompts:
    """A new prompt for every run, so the text-encoding cache never holds it."""

    def __init__(self):
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"a photo of scene number {self.count} with a serene lake at sunset"


def run_stock(pipe: WanPipeline, prompt: str, size: tuple[int, int], steps: int):
    height, width = size
    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(
        prompt=prompt, negative_prompt=NEGATIVE, height=height, width=width, num_frames=1,
        num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator, output_type="pil",
    )  # fmt: skip
    return out.frames[0][0]


def run_ours(pipe: WanT2IPipeline, prompt: str, size: tuple[int, int], steps: int, samplers=("flow_unipc",)):
    height, width = size
    return pipe.generate(
        prompt, samplers=samplers, negative_prompt=NEGATIVE, steps=steps, shift=SHIFT, guidance_scale=GUIDANCE,
        seed=SEED, height=height, width=width,
    )  # fmt: skip


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
    latent = (batch, transformer.config.in_channels, 1, size[0] // 8, size[1] // 8)
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
    transformer, batch: int, size: tuple[int, int], steps: int, runs: int, peak_tflops: float | None, warmup: int = 1
):
    """`steps` forwards alone at `batch`; the first forward (which compiles a new shape) is timed on its own."""
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
    return summary(times, first_forward_s=first_s, tflop=flops / 1e12, tflops=flops / median / 1e12, mfu=mfu), out


def solver_loop(size: tuple[int, int], steps: int, device: str) -> dict:
    """The samplers' own cost over `steps` steps with a free stand-in model, against diffusers' UniPC `step` (which
    waits on the device several times per step): what the denoising loop spends besides the transformer."""
    from wan_t2i.samplers import wan_unipc_scheduler

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


# Bookkeeping --------------------------------------------------------------------------------------------------------
class Bench:
    """Results, the time budget, and the files they are written to after every measurement."""

    def __init__(self, args, scale: Scale, sections: list[str], wanted: set[tuple[int, int]] | None):
        self.args, self.scale, self.sections, self.wanted = args, scale, sections, wanted
        self.start = time.perf_counter()
        self.results: dict = {"meta": environment(args), "items": {}, "errors": [], "skipped": []}
        self.prompts = Prompts()
        self.references: dict[tuple[str, tuple[int, int]], dict] = {}  # eager images and forward, per model and size

    def resolutions(self, model: str) -> list[tuple[int, int]]:
        return [s for s in self.scale.resolutions[model] if self.wanted is None or s in self.wanted]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, section: str, need_s: float = 0.0) -> bool:
        """Whether `need_s` more seconds fit before this section's deadline (the budget less later reserves)."""
        later = self.sections[self.sections.index(section) + 1 :] if section in self.sections else []
        reserve = sum(self.scale.reserve_s.get(name, 0.0) for name in later)
        return self.elapsed() + need_s < self.budget_s - reserve

    @property
    def budget_s(self) -> float:
        return self.args.budget_s or self.scale.budget_s

    def item(self, section: str, key: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict | None:
        """Run one measurement, record it (or its error: OOM included), save; skip it if the budget is spent."""
        if not self.allows(section, need_s):
            log(f"skip {key}: {self.elapsed():.0f} s of {self.budget_s:.0f} s used, {need_s:.0f} s needed")
            self.results["skipped"].append(key)
            self.save()
            return None
        log(f"{key} ...")
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 - recorded and reported; one failure must not end the run
            if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err):
                value = {"error": "out of memory", "detail": str(err)[:500], "peak_gb": peak_gb()}
            else:
                value = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            self.results["errors"].append({"item": key, "traceback": traceback.format_exc()[-3000:]})
            log(f"{key} FAILED: {value['error']}")
            reset_peak()
        self.results["items"][key] = value
        keys = ("median_s", "mfu", "psnr_db", "peak_gb", "error", "tflops", "seconds", "total_s")
        brief = {k: v for k, v in value.items() if k in keys}
        log(f"{key} -> {json.dumps(clean(brief))}")
        self.save()
        return value

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = self.elapsed()
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(clean(self.results), indent=1))
        write_results_md(self.results, Path(self.args.results_md))


def clean(value):
    """JSON-safe: infinities as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def environment(args) -> dict:
    import diffusers
    import transformers

    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "smoke": bool(args.smoke),
        "steps": (SMOKE if args.smoke else FULL).steps,
    }
    with contextlib.suppress(ImportError):
        import triton

        meta["triton"] = triton.__version__
    if torch.cuda.is_available():
        meta["device"] = torch.cuda.get_device_name()
        meta["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / GB
        meta["cudnn"] = torch.backends.cudnn.version()
    else:
        meta["device"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return meta


DEFAULT_FLAGS = {}


def restore_default_flags() -> None:
    """PyTorch's own TF32 and attention settings, as the stock pipeline and the eager reference run with them."""
    torch.backends.cuda.matmul.allow_tf32 = DEFAULT_FLAGS["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = DEFAULT_FLAGS["cudnn_tf32"]
    if DEFAULT_FLAGS["sdp_order"] is not None:
        torch._C._set_sdp_priority_order(DEFAULT_FLAGS["sdp_order"])


# Sections -----------------------------------------------------------------------------------------------------------
def tag(model: str, size: tuple[int, int]) -> str:
    return f"{model}@{size[0]}x{size[1]}"


def optimised_settings(bench: Bench, model: str) -> PerformanceSettings:
    scale = bench.scale
    if scale.device != "cuda":  # smoke: exercise the compile and bf16-VAE paths on the CPU
        return PerformanceSettings(compile=True, vae_dtype=torch.bfloat16)
    settings = PerformanceSettings.fastest(scale.device)
    if settings.attention == "cudnn":
        config = scale.transformers[model]
        size = max(bench.resolutions(model), key=lambda s: s[0] * s[1])
        tokens = (size[0] // 16) * (size[1] // 16)
        check = bench.item(
            model, f"{model}/attention_check",
            lambda: check_attention(config["num_attention_heads"], config["attention_head_dim"], tokens, "cuda"),
        )  # fmt: skip
        if not (check and check.get("use_cudnn")):
            settings = replace(settings, attention=None)
    return settings


def settled_settings(bench: Bench, model: str) -> PerformanceSettings:
    """`fastest` on CUDA as the model's section settled it (attention kernel or compilation dropped after a failed
    first forward); `fastest` itself when that section did not run."""
    fastest = PerformanceSettings.fastest("cuda")
    fields = bench.results["meta"].get(f"settings_{model}_fields")
    return replace(fastest, **fields) if fields else fastest


def settle_settings(
    bench: Bench, model: str, components: WanComponents, settings: PerformanceSettings, size: tuple[int, int]
) -> PerformanceSettings:
    """Apply `settings`; if the first compiled forward fails, fall back (PyTorch's attention, then eager) and say so."""
    fallbacks = [settings, replace(settings, attention=None), replace(settings, attention=None, compile=False)]
    for candidate in dict.fromkeys(fallbacks):
        restore_default_flags()
        torch._dynamo.reset()
        apply(components, candidate)
        try:
            with torch.inference_mode():
                inputs = forward_inputs(components.transformer, 2, size, bench.scale.device)
                seconds, _ = timed(lambda: components.transformer(**inputs))  # noqa: B023 - called at once
        except Exception as err:  # noqa: BLE001 - recorded; the next candidate is tried
            bench.results["errors"].append({"item": f"{model}/settings", "traceback": traceback.format_exc()[-3000:]})
            bench.results["items"][f"{model}/settings_failed_{len(bench.results['errors'])}"] = {
                "error": f"{type(err).__name__}: {str(err)[:500]}", "settings": repr(candidate)
            }  # fmt: skip
            log(f"{model}: {candidate} failed at the first forward ({type(err).__name__}); falling back")
            continue
        bench.results["items"][f"{tag(model, size)}/first_forward"] = {"seconds": seconds, "settings": repr(candidate)}
        bench.results["meta"][f"settings_{model}"] = repr(candidate)
        bench.results["meta"][f"settings_{model}_fields"] = {
            "compile": candidate.compile,
            "attention": candidate.attention,
        }
        log(f"{model}: first forward at {size} (compile included) {seconds:.1f} s with {candidate}")
        bench.save()
        return candidate
    raise RuntimeError(f"{model}: no settings ran")


def bench_model(bench: Bench, model: str, text_encoder, tokenizer) -> WanComponents | None:
    scale, steps = bench.scale, bench.scale.steps
    sizes = bench.resolutions(model)
    counts = {size: scale.counts.get((model, size), SMOKE_COUNTS) for size in sizes}
    restore_default_flags()
    holder: dict = {}

    def build():
        seconds, holder["components"] = timed(lambda: build_components(model, scale, text_encoder, tokenizer))
        params = sum(p.numel() for p in holder["components"].transformer.parameters())
        return {"seconds": seconds, "transformer_params": params, "peak_gb": peak_gb()}

    bench.item(model, f"{model}/build", build)
    if "components" not in holder:
        return None
    components = holder.pop("components")
    references = {size: bench.references.setdefault((model, size), {}) for size in sizes}

    # A. Eager: stock diffusers, and this project's pipeline exactly as loaded (the reference images).
    stock = stock_pipeline(components)
    eager = WanT2IPipeline(components)
    for size in sizes:
        key, n = tag(model, size), counts[size]

        def stock_runs(size=size, n=n):
            return measure(lambda: run_stock(stock, bench.prompts(), size, steps), n.stock_warmup, n.stock_runs)

        stock_result = bench.item(model, f"{key}/stock", stock_runs)
        estimate = (stock_result or {}).get("median_s") or 0.0

        def eager_reference(size=size, n=n):
            reset_peak()
            seconds, generation = timed(lambda: run_ours(eager, REFERENCE_PROMPT, size, steps))
            references[size]["one"] = generation["flow_unipc"].image
            result = {"median_s": seconds, "times_s": [seconds], "peak_gb": peak_gb()}
            stock_image = run_stock(stock, REFERENCE_PROMPT, size, steps)
            result["psnr_vs_stock_db"] = psnr(generation["flow_unipc"].image, stock_image)  # differ: grids differ
            if n.pair_eager:
                pair = run_ours(eager, REFERENCE_PROMPT, size, steps, ("legacy_ddim", "flow_unipc"))
                references[size]["pair"] = pair.images
            with torch.inference_mode():
                inputs = forward_inputs(components.transformer, 2, size, scale.device)
                references[size]["forward"] = components.transformer(**inputs)[0].float()
            return result

        bench.item(model, f"{key}/ours_eager", eager_reference, need_s=3 * estimate)

    # B. Optimised: settings applied in place, then every shape compiles at its first forward (the floor's).
    settle_settings(bench, model, components, optimised_settings(bench, model), sizes[0])
    pipe = WanT2IPipeline(components)
    peak_tflops = (bench.results["items"].get("peak") or {}).get("tflops")
    for size in sizes:
        key, n = tag(model, size), counts[size]
        estimate = ((bench.results["items"].get(f"{key}/stock") or {}).get("median_s") or 0.0) * 0.8

        def floor(batch, size=size, n=n):
            result, out = measure_floor(
                components.transformer, batch, size, steps, n.floor_runs, peak_tflops, n.floor_warmup
            )
            reference = references[size].get("forward")
            if batch == 2 and reference is not None:
                result["rel_error_vs_eager"] = ((out.float() - reference).norm() / reference.norm()).item()
            return result

        def ours(size=size, n=n):
            reset_peak()
            check_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps))
            result = measure(lambda: run_ours(pipe, bench.prompts(), size, steps), 0, n.runs, check_run_s=check_s)
            if "one" in references[size]:
                result["psnr_db"] = psnr(generation["flow_unipc"].image, references[size]["one"])
            return result

        def ours_warm(size=size, n=n):
            prompt = bench.prompts()
            return measure(lambda: run_ours(pipe, prompt, size, steps), 1, n.warm_runs)

        def pair(size=size, n=n):
            samplers = ("legacy_ddim", "flow_unipc")
            reset_peak()
            check_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps, samplers))
            result = measure(lambda: run_ours(pipe, bench.prompts(), size, steps, samplers), 0, n.pair_runs)
            result["check_run_s"] = check_s
            result["forward_batches"] = forward_batches(samplers, steps)  # what its floor is made of
            if "one" in references[size]:
                result["psnr_db"] = psnr(generation["flow_unipc"].image, references[size]["one"])
                if "pair" in references[size]:
                    result["psnr_legacy_vs_eager_pair_db"] = psnr(
                        generation["legacy_ddim"].image, references[size]["pair"]["legacy_ddim"]
                    )
            return result

        bench.item(model, f"{key}/solver_loop", lambda size=size: solver_loop(size, steps, scale.device))
        bench.item(model, f"{key}/floor_b2", lambda: floor(2), need_s=estimate)
        bench.item(model, f"{key}/ours", ours, need_s=(n.runs + 1) * estimate)
        if n.warm_runs:
            bench.item(model, f"{key}/ours_warm", ours_warm, need_s=(n.warm_runs + 1) * estimate)
        bench.item(model, f"{key}/floor_b4", lambda: floor(4), need_s=2 * estimate)
        bench.item(model, f"{key}/pair", pair, need_s=2 * (n.pair_runs + 1) * estimate)
    return components


def lowmem_key(model: str, size: tuple[int, int], gpu_gb: float) -> str:
    return f"lowmem{f'{gpu_gb:g}gb' if gpu_gb else ''}/{tag(model, size)}"


def bench_lowmem(bench: Bench, components: WanComponents | None, text_encoder, tokenizer) -> None:
    """low_memory from CPU memory, for each (model, size, gpu_gb) case: gpu_gb 0 streams every layer; otherwise
    `low_memory_for(gpu_gb=...)` keeps as many blocks on the GPU as such a card allows, and this process is capped
    to gpu_gb of GPU memory (set_per_process_memory_fraction) so that it runs out of memory where that card would."""
    device = bench.scale.device
    for model, size, gpu_gb in bench.scale.lowmem:

        def run(model=model, size=size, gpu_gb=gpu_gb):
            nonlocal components
            if components is None or is_offloaded(components.transformer):  # a fresh transformer for each case
                components = None
                gc.collect()
                components = build_components(model, bench.scale, text_encoder, tokenizer)
            restore_default_flags()
            torch._dynamo.reset()
            apply(components, PerformanceSettings())  # undo the optimised section's compilation and bf16 VAE
            components.vae.float()
            # Start where load_components(offload=True) leaves a model: transformer and text encoder in CPU memory.
            to_cpu_s, _ = timed(lambda: [m.to("cpu") for m in (components.transformer, components.text_encoder)])
            gc.collect()
            reset_peak()
            settings = PerformanceSettings.low_memory_for(device, gpu_gb=gpu_gb)
            with memory_cap(gpu_gb, device):
                apply_s, _ = timed(lambda: apply(components, settings))
                apply_peak = peak_gb()
                pipe = WanT2IPipeline(components)
                with torch.inference_mode():  # the first offloaded forward records the block order for prefetching
                    inputs = forward_inputs(components.transformer, 2, size, device)
                    warm_s, _ = timed(lambda: components.transformer(**inputs))
                first_encode_s, _ = timed(lambda: pipe.encode_prompt(NEGATIVE))  # likewise for the text encoder
                # Peak memory does not depend on the number of steps: if 20 steps do not fit the budget, run 2.
                estimate = bench.scale.steps * warm_s + 10.0
                steps = bench.scale.steps if bench.allows("lowmem", estimate) else 2
                reset_peak()
                seconds, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps))  # a new prompt
            result = summary([seconds], phases_s=generation.timings)
            reference = (bench.results["items"].get(f"{tag(model, size)}/ours") or {}).get("median_s")
            eager = bench.references.get((model, size), {}).get("one")
            if steps == bench.scale.steps:
                result["slowdown_vs_ours"] = seconds / reference if reference else None
                if eager is not None:
                    result["psnr_db"] = psnr(generation["flow_unipc"].image, eager)
            return result | {
                "settings": repr(settings), "gpu_gb": gpu_gb, "resident_gb": settings.resident_gb,
                "resident_blocks": sum(not is_offloaded(b) for b in components.transformer.blocks),
                "blocks": len(components.transformer.blocks), "to_cpu_s": to_cpu_s, "apply_s": apply_s,
                "apply_peak_gb": apply_peak, "first_forward_s": warm_s, "first_encode_s": first_encode_s,
                "steps_run": steps, "estimated_full_s": estimate,
            }  # fmt: skip

        bench.item("lowmem", lowmem_key(model, size, gpu_gb), run)


@contextlib.contextmanager
def memory_cap(gpu_gb: float, device: str):
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


def bench_cudagraphs(bench: Bench, tokenizer) -> None:
    """`fastest` plus CUDA graphs (torch.compile mode "reduce-overhead"): does replaying whole blocks beat launching
    their kernels? An experiment for the record, not a preset."""
    scale = bench.scale
    model, size = scale.cudagraphs
    key = f"cudagraphs/{tag(model, size)}"

    def run():
        components = build_components(model, scale, build_text_encoder(scale, len(tokenizer)), tokenizer)
        settings = PerformanceSettings(compile=True, compile_mode="reduce-overhead")  # the CPU smoke run
        if scale.device == "cuda":
            settings = replace(settled_settings(bench, model), compile=True, compile_mode="reduce-overhead")
        restore_default_flags()
        torch._dynamo.reset()
        apply(components, settings)
        pipe = WanT2IPipeline(components)
        first_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, scale.steps))
        result = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps), 1, 3, first_image_s=first_s)
        eager = bench.references.get((model, size), {}).get("one")
        if eager is not None:
            result["psnr_db"] = psnr(generation["flow_unipc"].image, eager)
        samplers = ("legacy_ddim", "flow_unipc")
        pair = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps, samplers), 1, 2)
        one = (bench.results["items"].get(f"{tag(model, size)}/ours") or {}).get("median_s")
        return result | {
            "settings": repr(settings), "pair": pair, "vs_compiled": result["median_s"] / one if one else None,
            "pair_vs_one": pair["median_s"] / result["median_s"],
        }  # fmt: skip

    bench.item("cudagraphs", key, run)


def bench_ttfi(bench: Bench) -> None:
    for model, size in bench.scale.ttfi:
        bench_ttfi_one(bench, model, size)


def bench_ttfi_one(bench: Bench, model: str, size: tuple[int, int]) -> None:
    key = f"ttfi/{tag(model, size)}"

    def run():
        settings = settled_settings(bench, model)
        attention = settings.attention or "none"
        cache = tempfile.mkdtemp(prefix="ttfi-inductor-")  # a cold compiler cache, as on a fresh machine
        env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
        command = [sys.executable, __file__, "--child-ttfi", model, f"{size[0]}x{size[1]}", "--attention", attention]
        command += [] if settings.compile else ["--no-compile"]
        command += ["--smoke"] if bench.args.smoke else []
        start = time.time()
        timeout = max(30.0, bench.budget_s - bench.elapsed())
        done = subprocess.run(command + ["--t0", repr(start)], env=env, capture_output=True, text=True, timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("TTFI ")]
        if done.returncode or not lines:
            raise RuntimeError(f"child exited {done.returncode}: {done.stderr[-1500:]}")
        return json.loads(lines[-1][5:]) | {"process_total_s": time.time() - start}

    bench.item("ttfi", key, run)


def child_ttfi(args) -> None:
    """Fresh process: build the models on the device, apply `fastest`, render one image; report the times."""
    scale = SMOKE if args.smoke else FULL
    model, size = args.child_ttfi[0], tuple(int(v) for v in args.child_ttfi[1].split("x"))
    imported = time.time() - args.t0
    tokenizer = build_word_tokenizer(WORDS.split() + [str(i) for i in range(1000)])
    start = time.time()
    components = build_components(model, scale, build_text_encoder(scale, len(tokenizer)), tokenizer)
    sync()
    built = time.time() - start
    if scale.device == "cuda":
        settings = PerformanceSettings.fastest("cuda")
        settings = replace(settings, attention=None if args.attention == "none" else args.attention)
    else:
        settings = PerformanceSettings(compile=True, vae_dtype=torch.bfloat16)
    settings = replace(settings, compile=settings.compile and not args.no_compile)
    apply(components, settings)
    pipe = WanT2IPipeline(components)
    first, _ = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, scale.steps))
    second, _ = timed(lambda: run_ours(pipe, "a photo of a lake", size, scale.steps))
    report = {"import_s": imported, "build_s": built, "first_image_s": first, "second_image_s": second}
    print("TTFI " + json.dumps(report | {"total_s": time.time() - args.t0, "settings": repr(settings)}), flush=True)


def main() -> None:
    start = time.time()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script end to end")
    parser.add_argument(
        "--sections", default="peak,1.3b,14b,lowmem,cudagraphs,ttfi", help="comma-separated, run in this order"
    )
    parser.add_argument("--resolutions", default=None, help="e.g. 480x832,1024x1024 (default: all of each model's)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting measurements after this (s)")
    parser.add_argument("--out", default=None, help="raw JSON (default benchmarks/results_gpu.json)")
    parser.add_argument("--results-md", default=None, help="the table (default benchmarks/RESULTS.md)")
    parser.add_argument("--ttfi", default=None, help="MODEL@HxW[,...] for the ttfi section, e.g. 14b@1024x1024")
    parser.add_argument(
        "--lowmem",
        default=None,
        help="MODEL@HxW[:GB],... for the lowmem section: GB is the card it runs as, 0 (default) streams every layer",
    )
    parser.add_argument("--render", default=None, help="only rewrite --results-md from this JSON (no GPU needed)")
    parser.add_argument("--note", default=None, help="with --render: a line added under the command (a caveat)")
    parser.add_argument("--child-ttfi", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--attention", default="cudnn", help=argparse.SUPPRESS)
    parser.add_argument("--no-compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=start, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ttfi:
        return child_ttfi(args)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        if args.note:
            results["meta"]["note"] = args.note
            Path(args.render).write_text(json.dumps(results, indent=1))
        return write_results_md(results, Path(args.results_md or ROOT / "benchmarks/RESULTS.md"))
    scale = SMOKE if args.smoke else FULL
    if scale.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on the CPU")
    for name in ("ttfi", "lowmem"):
        value, cases = getattr(args, name), []
        for case in (value or "").split(",") if value else []:
            model, _, size = case.partition("@")
            size, _, gpu_gb = size.partition(":") if name == "lowmem" else (size, "", "")
            if model not in scale.transformers or "x" not in size:
                parser.error(f"--{name} takes MODEL@HxW, MODEL one of {', '.join(scale.transformers)}; got {case}")
            size = tuple(int(v) for v in size.split("x"))
            cases.append((model, size, float(gpu_gb or 0)) if name == "lowmem" else (model, size))
        if cases:
            scale = replace(scale, **{name: tuple(cases)})
    smoke_dir = Path(tempfile.gettempdir()) / "wan_t2i_gpu_smoke"
    args.out = args.out or str(smoke_dir / "results.json" if args.smoke else ROOT / "benchmarks/results_gpu.json")
    args.results_md = args.results_md or str(smoke_dir / "RESULTS.md" if args.smoke else ROOT / "benchmarks/RESULTS.md")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"peak", "lowmem", "ttfi", "cudagraphs", *scale.transformers}
    if unknown:
        parser.error(
            f"unknown sections {sorted(unknown)}; choose from peak, {', '.join(scale.transformers)}, lowmem, ttfi, "
            "cudagraphs"
        )
    wanted = {tuple(int(v) for v in r.split("x")) for r in args.resolutions.split(",")} if args.resolutions else None

    DEFAULT_FLAGS.update(
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_tf32=torch.backends.cudnn.allow_tf32,
        sdp_order=torch._C._get_sdp_priority_order() if hasattr(torch._C, "_get_sdp_priority_order") else None,
    )
    bench = Bench(args, scale, sections, wanted)
    log(f"{bench.results['meta']['device']}; sections {sections}; budget {bench.budget_s:.0f} s; out {args.out}")
    if "peak" in sections:
        bench.item("peak", "peak", lambda: matmul_peak(scale.peak_size, scale.device, scale.dtype))
    model_sections = [s for s in sections if s in scale.transformers]
    needs_text = bool(model_sections) or "lowmem" in sections
    tokenizer = build_word_tokenizer(WORDS.split() + [str(i) for i in range(1000)])
    text_encoder = None
    if needs_text:
        seconds, text_encoder = timed(lambda: build_text_encoder(scale, len(tokenizer)))
        bench.results["meta"]["text_encoder_build_s"] = seconds
        log(f"text encoder built in {seconds:.1f} s")
    kept = None
    for model in model_sections:
        components = bench_model(bench, model, text_encoder, tokenizer)
        if model == scale.lowmem[0][0] and "lowmem" in sections:
            kept = components
        del components
        gc.collect()
        torch._dynamo.reset()
        reset_peak()
    if "lowmem" in sections:
        bench_lowmem(bench, kept, text_encoder, tokenizer)
        kept = text_encoder = None
        gc.collect()
        reset_peak()
    for section in sections:  # the two that build their own models, in the order given
        if section == "ttfi":
            bench_ttfi(bench)
        elif section == "cudagraphs":
            bench_cudagraphs(bench, tokenizer)
            gc.collect()
            torch._dynamo.reset()
            reset_peak()
    bench.save()
    log(f"done in {bench.elapsed():.0f} s; {len(bench.results['errors'])} errors; wrote {args.out}, {args.results_md}")
    print(Path(args.results_md).read_text(), flush=True)


if __name__ == "__main__":
    main()
