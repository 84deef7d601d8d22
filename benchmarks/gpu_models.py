"""The GPU benchmark's models: Wan-size configs, random weights built on the device, and one run of each pipeline.

Weights are random: speed and memory depend on the shapes, not the values. `FULL` is the GPU run (the Wan2.1 1.3B,
one Wan2.2 A14B expert and UMT5-XXL); `SMOKE` the same script on the CPU with tiny models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wan_t2i.demo.tokenizer import build_word_tokenizer
from wan_t2i.loading import ModelDefaults, WanComponents, freeze
from wan_t2i.pipeline import WanT2IPipeline

SEED = 1234
STEPS, GUIDANCE, SHIFT = 20, 5.0, 5.0
NEGATIVE = "blurry, low quality, distorted, static, overexposed"
REFERENCE_PROMPT = "a serene lake at sunset with snowy mountains"
WORDS = "a photo of scene number with serene lake at sunset snowy mountains blurry low quality distorted static"
PAIR = ("legacy_ddim", "flow_unipc")  # the A/B pair, rendered in one batched run

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


SMOKE_COUNTS = Counts(1, 2, runs=2, warm_runs=1, pair_runs=1, floor_runs=1, pair_eager=True)


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the GPU run and the CPU smoke run."""

    device: str
    dtype: torch.dtype
    transformers: dict[str, dict]  # model name -> WanTransformer3DModel config
    umt5: dict  # UMT5Config fields
    vae: dict  # AutoencoderKLWan fields
    resolutions: dict[str, list[tuple[int, int]]]  # model name -> (height, width) sizes
    counts: dict[tuple[str, tuple[int, int]], Counts]  # runs per (model, size); SMOKE_COUNTS where absent
    steps: int = STEPS
    peak_size: int = 8192  # n of the n^3 bf16 matmul that measures the card's peak
    # (model, size, GB of the card it is run as; 0: stream every layer, as on any card)
    lowmem: tuple[tuple[str, tuple[int, int], float], ...] = (
        ("14b", (480, 832), 0.0),
        ("14b", (480, 832), 24.0),
        ("14b", (1024, 1024), 24.0),
    )
    ttfi: tuple[tuple[str, tuple[int, int]], ...] = (("1.3b", (480, 832)), ("14b", (1024, 1024)))
    cudagraphs: tuple[str, tuple[int, int]] = ("1.3b", (480, 832))
    # (model, size, GB): the fp8 section's memory check, this process capped to a card of GB (ZeroGPU `large`: 48)
    fp8_cap: tuple[str, tuple[int, int], float] = ("14b", (1024, 1024), 48.0)
    # Seconds each section takes (H200, 2026-12; fp8's first 14B image once took 174 s, compile included): under
    # --budget-s, earlier sections stop in time to leave these.
    reserve_s: dict[str, float] = field(
        default_factory=lambda: {"fp8": 300.0, "lowmem": 200.0, "ttfi": 80.0, "cudagraphs": 40.0}
    )

    def counts_of(self, model: str, size: tuple[int, int]) -> Counts:
        return self.counts.get((model, size), SMOKE_COUNTS)


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
)


def tag(model: str, size: tuple[int, int]) -> str:
    """The key prefix of one model at one size, e.g. `1.3b@480x832`."""
    return f"{model}@{size[0]}x{size[1]}"


@contextlib.contextmanager
def building_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created directly on `device` in `dtype` (no CPU copy, no fp32 detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_tokenizer():
    """A word tokenizer that knows every word the benchmark's prompts use."""
    return build_word_tokenizer(WORDS.split() + [str(i) for i in range(1000)])


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
    """Random UMT5 encoder of `scale`'s size, with room for `vocab` token ids."""
    torch.manual_seed(1)
    config = UMT5Config(**(scale.umt5 | {"vocab_size": max(vocab, scale.umt5["vocab_size"])}))
    with building_on(scale.device, scale.dtype):
        model = UMT5EncoderModel(config)
    return freeze(model.to(scale.dtype))


def build_vae(scale: Scale) -> AutoencoderKLWan:
    """Random Wan VAE in fp32, as Wan ships it."""
    torch.manual_seed(2)
    with building_on(scale.device, torch.float32):
        return freeze(AutoencoderKLWan(**scale.vae))


def build_components(name: str, scale: Scale, text_encoder: UMT5EncoderModel, tokenizer) -> WanComponents:
    """A new random transformer and VAE of model `name`, sharing the given text encoder."""
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
    """diffusers' WanPipeline on the same modules, with Wan's UniPC scheduler."""
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT)
    c = components
    pipe = WanPipeline(
        tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae, transformer=c.transformer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Prompts:
    """A new prompt for every run, so the text-encoding cache never holds it."""

    def __init__(self):
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"a photo of scene number {self.count} with a serene lake at sunset"


def run_stock(pipe: WanPipeline, prompt: str, size: tuple[int, int], steps: int):
    """One image from the stock pipeline (a PIL image)."""
    height, width = size
    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(
        prompt=prompt, negative_prompt=NEGATIVE, height=height, width=width, num_frames=1,
        num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator, output_type="pil",
    )  # fmt: skip
    return out.frames[0][0]


def run_ours(pipe: WanT2IPipeline, prompt: str, size: tuple[int, int], steps: int, samplers=("flow_unipc",)):
    """One generation of this project's pipeline at the benchmark's settings."""
    height, width = size
    return pipe.generate(
        prompt, samplers=samplers, negative_prompt=NEGATIVE, steps=steps, shift=SHIFT, guidance_scale=GUIDANCE,
        seed=SEED, height=height, width=width,
    )  # fmt: skip
