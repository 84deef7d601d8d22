"""Text-to-image with a Wan student: encode text, draw noise, denoise (one or several samplers), decode one frame."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from wan_t2i import aot
from wan_t2i.constants import TEXT_LEN, WAN_NEGATIVE_PROMPT
from wan_t2i.diagnostics import Diagnostics
from wan_t2i.guidance import Experts, Row, guided_model_fn
from wan_t2i.images import with_parameters
from wan_t2i.loading import ModelDefaults, WanComponents, load_components, resolve_device
from wan_t2i.performance import PerformanceSettings, apply, apply_switches, preset
from wan_t2i.previews import WAN21_FACTORS, LatentRGB
from wan_t2i.replicas import Replica, check_devices, experts_of, replicate, run_on_replicas
from wan_t2i.request import MAX_SEED, GenerationRequest, ModelSpec
from wan_t2i.samplers import sample_many
from wan_t2i.values import is_integer

if TYPE_CHECKING:
    from wan_t2i.sweep import Sweep

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (steps done, steps in all)
# (steps done, steps in all, {label: preview of each branch's predicted clean image}), every `preview_every` steps
PreviewCallback = Callable[[int, int, dict[str, Image.Image]], None]
# (steps done, steps in all, {label: the branch's diagnostics so far}), every step: a live latent-health plot
StepCallback = Callable[[int, int, dict[str, Diagnostics]], None]
TEXT_BUCKET = 64  # prompts are encoded at their length rounded up to this (see encode_prompt)


@dataclass(frozen=True)
class Branch:
    """One trajectory of the denoising loop: a sampler on a model from a noise tensor, with its grid and guidance.

    A request's branches share the request's grid, guidance and noise; a sweep's cells each bring their own.
    """

    sampler: str
    model: str  # "student" or "teacher"
    steps: int
    shift: float
    timesteps: tuple[int, ...] | None
    guidance: tuple[float, float]
    noise: torch.Tensor  # (1, C, 1, h, w); branches from one seed share the tensor, and so their first evaluation
    generator: torch.Generator | None = None  # flow_lcm's fresh noise, continuing the seed's stream


@dataclass
class SamplerResult:
    """One branch of a generation: a sampler, on the student or the teacher."""

    label: str
    sampler: str
    model: str
    image: Image.Image  # carries `parameters` in image.info, written into any PNG saved from it
    latents: torch.Tensor  # final normalised latents (1, C, 1, H/8, W/8), float32, on the CPU
    diagnostics: Diagnostics
    seconds: float  # this branch's share of the batched run (branches run together, one forward per step)
    parameters: dict  # the branch's request as stored in its PNG (GenerationRequest.from_parameters reads it)


@dataclass
class Generation:
    results: dict[str, SamplerResult]  # label -> result, in the order asked for
    seed: int
    timings: dict[str, float] = field(default_factory=dict)  # encode, denoise, decode, total (seconds)
    request: GenerationRequest | None = None  # what was rendered, with the seed used
    # label -> [(step, preview)] of the predicted clean image, where previews were asked for (`preview_every`)
    previews: dict[str, list[tuple[int, Image.Image]]] = field(default_factory=dict)

    def __getitem__(self, label: str) -> SamplerResult:
        return self.results[label]

    @property
    def images(self) -> dict[str, Image.Image]:
        return {label: result.image for label, result in self.results.items()}


def expert_handover(experts: Experts, timesteps: list[int]) -> int | None:
    """The first step a two-expert model runs on its low-noise expert (len(timesteps): none); None for one expert."""
    if experts.low is None:
        return None
    low = [experts.route(t, (1.0, 1.0))[0] is experts.low for t in timesteps]
    return low.index(True) if True in low else len(timesteps)


def clean_prompt(text: str) -> str:
    """Wan's whitespace cleaning (wan/modules/tokenizers.py): unescape HTML, collapse runs of whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def encode_text(text_encoder: torch.nn.Module, tokenizer: Any, prompt: str, device: torch.device) -> torch.Tensor:
    """UMT5 embedding (1, 512, D) of a cleaned prompt, trimmed to its tokens and zero-padded as Wan does."""
    tokens = tokenizer(
        [prompt],
        padding="max_length",
        max_length=TEXT_LEN,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    # Only the prompt's own tokens are encoded, in buckets of TEXT_BUCKET (a few shapes): UMT5 masks the padding out
    # of every attention and its position bias is relative, so the prompt's states are those of the full 512, which
    # Wan encodes and then trims; a short prompt costs a tenth of the encoder's time.
    length = min(TEXT_LEN, -(-int(tokens.attention_mask.sum()) // TEXT_BUCKET) * TEXT_BUCKET)
    mask = tokens.attention_mask[:, :length].to(device)
    hidden = text_encoder(tokens.input_ids[:, :length].to(device), mask).last_hidden_state
    hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)  # zeros past the prompt's own tokens
    return torch.nn.functional.pad(hidden, (0, 0, 0, TEXT_LEN - length))


# What the warm-up encodes: a short prompt and Wan's negative prompt, the two lengths of a server's first image
WARM_UP_PROMPTS = ("a photo", WAN_NEGATIVE_PROMPT)


@torch.inference_mode()
def warm_text_encoder(text_encoder: torch.nn.Module, tokenizer: Any, device: torch.device) -> float:
    """Encode WARM_UP_PROMPTS once and throw the embeddings away; returns the seconds it took. A new process's first
    encoding on a GPU pays for loading the kernels it runs (0.4-0.7 s of a new server's first image, against 0.05 s
    warm: benchmarks/records/2026-12-07-h200-first-h200); `from_pretrained` runs this while the transformers load.
    The encoder is left as it was (its kernels loaded are the process's). A failure is logged, not raised: the first
    request then pays as before."""
    start = time.perf_counter()
    try:
        for prompt in WARM_UP_PROMPTS:
            encode_text(text_encoder, tokenizer, clean_prompt(prompt), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as error:  # noqa: BLE001 - a warm-up; the first request encodes as usual
        logger.warning(
            "the text encoder's warm-up failed (%s: %s); the first request pays for it", type(error).__name__, error
        )
    return time.perf_counter() - start


@contextlib.contextmanager
def text_encoder_warm_up(
    device: torch.device, enabled: bool = True
) -> Iterator[Callable[[torch.nn.Module, Any], None]]:
    """`load_components`' `on_encoders` for loading on `device`: on a GPU (and if `enabled`) it starts
    `warm_text_encoder` in a thread of its own, beside the transformers' loading; leaving the block waits for it, so
    that nothing else uses the encoder meanwhile (its CUDA graphs are recorded later, by `apply`'s settings)."""
    threads: list[threading.Thread] = []

    def start(text_encoder: torch.nn.Module, tokenizer: Any) -> None:
        if enabled and device.type == "cuda":
            thread = threading.Thread(target=warm_text_encoder, args=(text_encoder, tokenizer, device),
                                      name="wan-t2i-warm-up", daemon=True)  # fmt: skip
            thread.start()
            threads.append(thread)

    try:
        yield start
    finally:
        for thread in threads:
            thread.join()


# Python's thread switch interval while `from_pretrained` loads (its own, 5 ms, elsewhere). Beside the loading run
# threads that need the interpreter's lock too (the blocks read ahead and warmed up, the text encoder's warm-up); a
# thread that gives the lock up for a read or a copy waits, to take it back, until the other yields it, which a busy
# thread does once a switch interval. On this project's 2-core CPU, a 1.3B-shaped transformer loaded beside the
# demo model's block being read ahead was ready with the block in 3.49 s at 0.5 ms against 4.06 s at 5 ms (each
# alone: 2.72 and 2.63 s; medians of 5, `python -m benchmarks.load_beside`; a second run 5.02 against 6.01 s,
# docs/performance.md#the-blocks-warm-up). On a GPU: `python -m benchmarks.gpu
# --sections ttfi --ttfi-disk --ttfi-switch-interval 0.005` restarts once more at Python's default for the A/B.
LOADING_SWITCH_INTERVAL_S = 0.0005


_SWITCHED = {"inside": 0, "before": 0.0}  # how many `switch_interval` blocks are open, and the interval before them
_SWITCHED_LOCK = threading.Lock()


@contextlib.contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    """Python's thread switch interval `seconds` while inside; what it was, after the last block open in any thread
    has left (two loadings at once leave the process's own interval behind, not each other's)."""
    with _SWITCHED_LOCK:
        if _SWITCHED["inside"] == 0:
            _SWITCHED["before"] = sys.getswitchinterval()
        _SWITCHED["inside"] += 1
        sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        with _SWITCHED_LOCK:
            _SWITCHED["inside"] -= 1
            if _SWITCHED["inside"] == 0:
                sys.setswitchinterval(_SWITCHED["before"])


class WanT2IPipeline:
    """A loaded Wan text-to-image model that renders one sampler, or several from the same noise and text."""

    def __init__(self, components: WanComponents, *, text_cache_size: int = 32, replicas: Sequence[Replica] = ()):
        """Args: `text_cache_size` prompts kept encoded (LRU); `replicas`: copies of the transformers on further
        devices (`wan_t2i.replicas`), which take their share of a pair's or a sweep's branches."""
        self.components = components
        self.device = components.device
        self.defaults: ModelDefaults = components.defaults
        vae_config = components.vae.config
        self.z_dim = vae_config.z_dim
        # diffusers' WanPipeline: the spatial scale factor is 2 ** (number of downsamplings) (8 for Wan 2.1's VAE).
        self.vae_scale = getattr(vae_config, "scale_factor_spatial", None) or 2 ** len(vae_config.temperal_downsample)
        self.patch = components.transformer.config.patch_size[1]
        self.latents_mean = torch.tensor(vae_config.latents_mean).view(1, self.z_dim, 1, 1, 1)
        self.latents_std = torch.tensor(vae_config.latents_std).view(1, self.z_dim, 1, 1, 1)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.text_cache_size = text_cache_size
        self.experts = experts_of(components)
        self.replicas = [Replica(self.device, self.experts), *replicas]  # where branches run: this device first

    @classmethod
    def from_pretrained(
        cls,
        model_path=None,
        teacher_path=None,
        *,
        performance: str | PerformanceSettings = "default",
        gpu_memory_gb: float | None = None,
        devices: Sequence[str | torch.device] | None = None,
        compile_cache: str | None = None,
        warm_up: bool = True,
        **kwargs,
    ) -> WanT2IPipeline:
        """Load with `wan_t2i.loading.load_components` (same arguments); no paths loads the embedded demo model.

        `performance` names a preset of `wan_t2i.performance` ("default", "fastest", "low_memory", "fp8"), applied
        to the loaded modules for their device, or is a PerformanceSettings of one's own; see docs/performance.md
        for what each buys. `gpu_memory_gb`, with
        low_memory: the GPU memory it may plan for (default: the whole card). `devices` (instead of `device`), e.g.
        ["cuda:0", "cuda:1"]: load on the first and copy the transformers onto the others, so that the branches of
        a pair or a sweep run split over them, one thread per device (`wan_t2i.replicas`). `compile_cache`, a
        folder: run the transformers ahead-of-time compiled, each input shape's package built once (minutes) and
        loaded by every later start in its place (`wan_t2i.aot`), instead of any tracing the preset would do.
        `warm_up`: on a GPU, encode a few prompts in a thread of its own while the transformers load
        (`warm_text_encoder`), and run each compiled block read ahead from `compile_cache` once on a stand-in
        (`aot.warm_block`), so that the first request does not pay for loading their kernels; False leaves that to
        the first request. While it loads, Python's thread switch interval is LOADING_SWITCH_INTERVAL_S, so that
        the loading waits less for the interpreter's lock beside those threads.
        """
        device = kwargs.pop("device", None)
        if devices is not None:
            if device is not None:
                raise ValueError("give device or devices, not both: the model loads on devices[0]")
            devices = check_devices(devices)
            device = devices[0]
        device = resolve_device(device)
        if isinstance(performance, PerformanceSettings):
            if gpu_memory_gb is not None:
                raise ValueError("gpu_memory_gb goes with the low_memory preset's name, not with PerformanceSettings")
            settings = performance
        else:
            settings = preset(performance, device, gpu_memory_gb)
        if compile_cache is not None:
            settings = replace(settings, compile=False, compile_cache=str(compile_cache))
        with switch_interval(LOADING_SWITCH_INTERVAL_S):
            if settings.compile_cache is not None and aot.default_kind(device) == "blocks":
                apply_switches(settings)  # as the blocks will run: the warm-up's runs need them
                aot.preload(settings.compile_cache, device, warm=warm_up)  # read (and warmed) while the weights load
            with text_encoder_warm_up(device, enabled=warm_up and not settings.low_memory) as on_encoders:
                components = load_components(
                    model_path, teacher_path, device=device, offload=settings.low_memory, on_encoders=on_encoders,
                    **kwargs,
                )  # fmt: skip
        replicas = [replicate(components, d, settings) for d in (devices or [])[1:]]  # copied before `apply`
        apply(components, settings)
        return cls(components, replicas=replicas)

    def replicate_to(self, devices: Sequence[str | torch.device], *, performance: str = "default") -> None:
        """Copy the transformers onto `devices`, under the `performance` preset there, so that the branches of a
        pair or a sweep run split over these devices and those already in use (`wan_t2i.replicas`)."""
        devices = check_devices([*(r.device for r in self.replicas), *devices])[len(self.replicas) :]
        self.replicas += [replicate(self.components, d, preset(performance, d)) for d in devices]

    @property
    def size_multiple(self) -> int:
        return self.vae_scale * self.patch

    @property
    def spec(self) -> ModelSpec:
        """What this model accepts: its defaults, its sizes, whether a teacher is loaded."""
        return ModelSpec(self.defaults, self.size_multiple, self.vae_scale, self.patch, self.components.has_teacher)

    def request(self, prompt: str, **settings: Any) -> GenerationRequest:
        """A validated request for this model, its defaults filled in (not the seed); ValueError if anything is off.

        `settings` are GenerationRequest fields (samplers, models, negative_prompt, steps, shift, guidance_scale,
        guidance_scale_2, seed, height, width); None means the model's default. A server calls this before it asks
        for a GPU (ZeroGPU).
        """
        return self.spec.request(prompt, **settings)

    # The call, in stages ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        request: GenerationRequest | str,
        /,
        *,
        progress: Progress | None = None,
        preview_every: int | None = None,
        preview_decode_every: int | None = None,
        on_preview: PreviewCallback | None = None,
        on_step: StepCallback | None = None,
        **settings: Any,
    ) -> Generation:
        """Render a request: each sampler (on the student, or the teacher where the request says so) from the same
        seeded noise and the same text embeddings.

        `preview_every` k: every k steps (and at the last) a cheap preview of each branch's predicted clean image
        (`wan_t2i.previews`, the model's latent -> RGB map), passed to `on_preview` and kept in
        `Generation.previews`; none by default, and then nothing is computed for them. `preview_decode_every` m:
        every m steps the preview is the full VAE decode instead (slower; for a coarser interval than k).
        `on_step(i, total, {label: diagnostics})` after every step sees each branch's diagnostics so far (the latent
        std per step), for a plot that grows as the render runs.

        `request` is a GenerationRequest, or a prompt with `settings` as for `request()`. Branches on one model share
        one transformer forward per step, and the first step's evaluation (every grid starts at t = 999);
        legacy_ddim's last step (t = 0, prediction unused) runs none. A request without a seed draws one, returned
        in the result. Raises ValueError for a request this model cannot render.

        Returns:
            A Generation: per branch the image, final latents, diagnostics, time and parameters; the seed used.
        """
        if isinstance(request, GenerationRequest):
            self.spec.check(request)
        else:
            request = self.request(request, **settings)
        if request.seed is None:
            request = request.with_seed(secrets.randbelow(MAX_SEED + 1))
        recorder = None  # previews, only where asked for: a run without them computes none
        if preview_decode_every is not None and preview_every is None:
            raise ValueError("preview_decode_every needs preview_every: the steps between cheap previews")
        if preview_every is not None:
            recorder = Previews(
                self.preview_map(), preview_every, request.labels(), on_preview, self.vae_scale,
                decode=self.decode, decode_every=preview_decode_every,
            )  # fmt: skip
        start = time.perf_counter()

        # 1. Encode the prompt, and the negative prompt where an expert is guided.
        cond = self.encode_prompt(request.prompt)
        uncond = self.encode_prompt(request.negative_prompt) if request.guided else None
        encoded = self._clock()

        # 2. Draw the noise on the CPU from the seed, so that a seed gives the same image on every device.
        generator = torch.Generator("cpu").manual_seed(request.seed)
        noise = self.prepare_noise(request, generator)

        # 3. Denoise every branch in lock-step from that noise (flow_lcm's fresh noise continues the seeded stream).
        labels = request.labels()
        by_label = None if on_step is None else lambda i, n, diags: on_step(i, n, dict(zip(labels, diags, strict=True)))
        latents, diagnostics = self.denoise(request, noise, cond, uncond, progress, generator, recorder, by_label)
        denoised = self._clock()

        # 4. Decode one frame per branch.
        images = self.decode(torch.cat(latents))
        end = time.perf_counter()

        # 5. Package each branch with its parameters, diagnostics and share of the time.
        timings = {"encode": encoded - start, "denoise": denoised - encoded, "decode": end - denoised}
        generation = self._package(request, latents, images, diagnostics, timings | {"total": end - start})
        generation.previews = recorder.frames if recorder else {}
        return generation

    def sweep(self, request: GenerationRequest | str, axes: dict[str, Sequence], **options: Any) -> Sweep:
        """Every combination of `axes` (sampler, shift, steps, guidance, seed, model, timesteps: lists of values)
        over `request` or a prompt, rendered together; see `wan_t2i.sweep.run_sweep` for `options`.

        Returns a Sweep: its cells (each its parameters, image, diagnostics, seconds), `grid()` and `write()`.
        """
        from wan_t2i.sweep import run_sweep

        if not isinstance(request, GenerationRequest):
            request = self.request(request)
        return run_sweep(self, request, axes, **options)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """UMT5 embedding (1, 512, D), trimmed to the prompt's tokens and zero-padded as Wan does; LRU-cached."""
        prompt = clean_prompt(prompt)
        if prompt in self._text_cache:
            self._text_cache.move_to_end(prompt)
            return self._text_cache[prompt]
        embedding = encode_text(self.components.text_encoder, self.components.tokenizer, prompt, self.device)
        self._text_cache[prompt] = embedding
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return embedding

    def prepare_noise(self, request: GenerationRequest, generator: torch.Generator | None = None) -> torch.Tensor:
        """The seeded starting noise (1, C, 1, H/8, W/8), drawn on the CPU (from `generator`, default: a new one from
        the request's seed) and moved to the device."""
        shape = (1, self.z_dim, 1, request.height // self.vae_scale, request.width // self.vae_scale)  # (B, C, F, H, W)
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(request.seed)
        return torch.randn(shape, generator=generator).to(self.device)

    def denoise(
        self,
        request: GenerationRequest,
        noise: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        progress: Progress | None = None,
        generator: torch.Generator | None = None,
        previews: Previews | None = None,
        on_step: Callable[[int, int, list[Diagnostics]], None] | None = None,
    ) -> tuple[list[torch.Tensor], list[Diagnostics]]:
        """Every branch of `request` from `noise`; returns the final latents and the diagnostics per branch.

        `generator` (CPU) seeds flow_lcm's fresh noise: each flow_lcm branch draws from its own copy of its state.
        """
        guidance = (request.guidance_scale, request.guidance_scale_2)
        branches = [
            Branch(sampler, model, request.steps, request.shift, request.timesteps or None, guidance, noise, generator)
            for sampler, model in zip(request.samplers, request.models, strict=True)
        ]
        return self.denoise_branches(branches, cond, uncond, guidance, progress, previews, on_step)

    def denoise_branches(
        self,
        branches: Sequence[Branch],
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance: tuple[float, float],
        progress: Progress | None = None,
        previews: Previews | None = None,
        on_step: Callable[[int, int, list[Diagnostics]], None] | None = None,
    ) -> tuple[list[torch.Tensor], list[Diagnostics]]:
        """The one denoising loop (`samplers.sample_many`) over any branches: a request's, or a sweep's cells.

        Branches whose guidance is not `guidance` run with their own (`guidance.Row` keys), in the same forwards.
        `on_step(i, total, diagnostics)` sees every branch's diagnostics after each step.
        """
        diagnostics = [Diagnostics() for _ in branches]
        total = max(len(b.timesteps) if b.timesteps else b.steps for b in branches)

        def each_step(i: int, ts: list, xs: list, x0s: list) -> None:
            for k, diag in enumerate(diagnostics):
                if xs[k] is not None:  # None once a branch has finished
                    diag.record_step(ts[k], xs[k], x0s[k])
            if previews is not None:
                previews.record(i + 1, total, x0s)
            if progress is not None:
                progress(i + 1, total)
            if on_step is not None:
                on_step(i + 1, total, diagnostics)

        keys = [b.model if b.guidance == guidance else Row(b.model, b.guidance) for b in branches]

        def sample(replica: Replica, members: list[int], callback: Callable) -> list[torch.Tensor]:
            on, mine = replica.device, [branches[k] for k in members]  # text and noise: made once, copied here
            noises = {id(b.noise): b.noise.to(on) for b in mine}  # branches that share a noise tensor still do
            return sample_many(
                guided_model_fn(replica.experts, cond.to(on), None if uncond is None else uncond.to(on), guidance),
                [noises[id(b.noise)] for b in mine],
                samplers=[b.sampler for b in mine],
                steps=[b.steps for b in mine],
                shift=[b.shift for b in mine],
                timesteps=[b.timesteps for b in mine],
                models=[keys[k] for k in members],
                generator=[b.generator for b in mine],
                callback=callback,
            )

        # One device: every branch in one loop. Several (`replicate_to`): each device's share in a thread of its own.
        latents = run_on_replicas(self.replicas, branches, sample, each_step)
        return latents, diagnostics

    def preview_map(self) -> LatentRGB:
        """The model's latent -> RGB preview map: its bundle's own, else the Wan 2.1 VAE's published one."""
        if self.defaults.latent_rgb:
            return LatentRGB.from_dict(self.defaults.latent_rgb)
        if self.z_dim == len(WAN21_FACTORS):
            return LatentRGB.wan21()
        raise ValueError(
            f"no latent -> RGB preview map for this VAE ({self.z_dim} latent channels): fit one with "
            "wan_t2i.previews.fit_latent_rgb and store it as latent_rgb in the model's wan_t2i.json"
        )

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Normalised latents (B, C, 1, h, w) -> PIL images, through the frozen VAE with T = 1."""
        vae = self.components.vae
        std, mean = self.latents_std.to(self.device, vae.dtype), self.latents_mean.to(self.device, vae.dtype)
        z = latents.to(self.device, vae.dtype) * std + mean  # undo the normalisation, as diffusers' WanPipeline does
        n = len(z)
        if n == 1 and self.device.type == "cpu":
            # PyTorch's CPU conv3d takes a slow path at batch 1 (measured on the demo VAE: 0.51 s for one latent,
            # 0.36 s for two), so a lone latent is decoded beside a copy of itself.
            z = z.expand(2, *z.shape[1:])
        frames = vae.decode(z, return_dict=False)[0][:n, :, 0]  # (B, 3, H, W) in [-1, 1]
        pixels = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return [Image.fromarray(p.numpy()) for p in pixels]

    def _package(
        self,
        request: GenerationRequest,
        latents: list[torch.Tensor],
        images: list[Image.Image],
        diagnostics: list[Diagnostics],
        timings: dict[str, float],
    ) -> Generation:
        share = timings["total"] / len(request.samplers)
        results = {}
        for i, (label, x, image, diag) in enumerate(zip(request.labels(), latents, images, diagnostics, strict=True)):
            parameters = request.branch(i).to_parameters(self.defaults.name)
            diag.finish(x)
            diag.expert_handover = expert_handover(self.experts[request.models[i]], diag.t)
            results[label] = SamplerResult(
                label=label,
                sampler=request.samplers[i],
                model=request.models[i],
                image=with_parameters(image, parameters),
                latents=x.cpu(),
                diagnostics=diag,
                seconds=share,
                parameters=parameters,
            )
        return Generation(results=results, seed=request.seed, timings=timings, request=request)

    def _clock(self) -> float:
        """Now, once the device has finished the work queued so far: phase timings that a GPU run can trust."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class Previews:
    """Step previews of each branch's predicted clean image, every `every` steps and at the last: by the linear
    latent -> RGB map, or, every `decode_every` steps, by `decode` (the full VAE)."""

    def __init__(
        self,
        latent_rgb: LatentRGB,
        every: int,
        labels: Sequence[str],
        on_preview: PreviewCallback | None = None,
        scale: int = 8,
        decode: Callable[[torch.Tensor], list[Image.Image]] | None = None,
        decode_every: int | None = None,
    ):
        """`scale`: the VAE's stride, so that a preview has the image's size."""
        for name, value in (("preview_every", every), ("preview_decode_every", decode_every)):
            if value is not None and (not is_integer(value) or value < 1):
                raise ValueError(f"{name} must be a whole number of steps >= 1, got {value!r}")
        if decode_every is not None and decode is None:
            raise ValueError("preview_decode_every needs the VAE's decode")
        self.latent_rgb, self.every, self.labels, self.on_preview = latent_rgb, every, list(labels), on_preview
        self.scale, self.decode, self.decode_every = scale, decode, decode_every
        self.frames: dict[str, list[tuple[int, Image.Image]]] = {label: [] for label in self.labels}

    def record(self, step: int, total: int, x0s: Sequence[torch.Tensor | None]) -> None:
        decoded = self.decode_every is not None and step % self.decode_every == 0
        if step % self.every and step != total and not decoded:
            return
        live = [(label, x0) for label, x0 in zip(self.labels, x0s, strict=True) if x0 is not None]
        if not live:
            return
        x0 = torch.cat([x0 for _, x0 in live])
        images = self.decode(x0) if decoded else self.latent_rgb.images(x0, self.scale)
        shown = {}
        for (label, _), image in zip(live, images, strict=True):
            self.frames[label].append((step, image))
            shown[label] = image
        if self.on_preview is not None:
            self.on_preview(step, total, shown)
