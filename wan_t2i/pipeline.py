"""Text-to-image with a Wan student: encode, prepare latents, denoise (one or several samplers), decode one frame."""

from __future__ import annotations

import html
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from wan_t2i.constants import BOUNDARY_RATIO, NUM_TRAIN_TIMESTEPS, TEXT_LEN
from wan_t2i.diagnostics import Diagnostics
from wan_t2i.images import with_parameters
from wan_t2i.loading import ModelDefaults, WanComponents, default_device, load_components
from wan_t2i.performance import apply, preset
from wan_t2i.samplers import SAMPLERS, BatchModelFn, check_sampler, sample_many, validate_sampling_args

MODELS = ("student", "teacher")
MAX_PROMPT_CHARS = 2000  # UMT5 reads at most 512 tokens (about 2000 characters of English); longer is a mistake
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0

Progress = Callable[[int, int], None]


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
    parameters: dict


@dataclass
class Generation:
    results: dict[str, SamplerResult]  # label -> result, in the order asked for
    seed: int
    timings: dict[str, float] = field(default_factory=dict)  # encode, denoise, decode, total (seconds)

    def __getitem__(self, label: str) -> SamplerResult:
        return self.results[label]

    @property
    def images(self) -> dict[str, Image.Image]:
        return {label: result.image for label, result in self.results.items()}


def clean_prompt(text: str) -> str:
    """Wan's whitespace cleaning (wan/modules/tokenizers.py): unescape HTML, collapse runs of whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class WanT2IPipeline:
    """A loaded Wan text-to-image model that renders one sampler, or several from the same noise and text."""

    def __init__(self, components: WanComponents, *, text_cache_size: int = 32):
        """Args: `text_cache_size` prompts kept encoded (LRU)."""
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

    @classmethod
    def from_pretrained(
        cls,
        model_path=None,
        teacher_path=None,
        *,
        performance: str = "default",
        gpu_memory_gb: float | None = None,
        **kwargs,
    ) -> WanT2IPipeline:
        """Load with `wan_t2i.loading.load_components` (same arguments); no paths loads the embedded demo model.

        `performance` names a preset of `wan_t2i.performance` ("default", "fastest", "low_memory"), applied to the
        loaded modules for their device; see benchmarks/RESULTS.md for what each buys. `gpu_memory_gb`, with
        low_memory: the GPU memory it may plan for (default: the whole card).
        """
        device = kwargs.pop("device", None)
        device = torch.device(device) if device is not None else default_device()
        settings = preset(performance, device, gpu_memory_gb)
        components = load_components(model_path, teacher_path, device=device, offload=settings.low_memory, **kwargs)
        apply(components, settings)
        return cls(components)

    @property
    def size_multiple(self) -> int:
        return self.vae_scale * self.patch

    # 1. Text -------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """UMT5 embedding (1, 512, D), trimmed to the prompt's tokens and zero-padded as Wan does; LRU-cached."""
        prompt = clean_prompt(prompt)
        if prompt in self._text_cache:
            self._text_cache.move_to_end(prompt)
            return self._text_cache[prompt]
        tokens = self.components.tokenizer(
            [prompt],
            padding="max_length",
            max_length=TEXT_LEN,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        embedding = self.components.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state
        embedding = embedding * mask.unsqueeze(-1).to(embedding.dtype)  # zeros past the prompt's own tokens
        self._text_cache[prompt] = embedding
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return embedding

    # 2. Arguments --------------------------------------------------------------------------------------------------
    def _check_size(self, height: int, width: int) -> None:
        multiple, low, high = self.size_multiple, self.defaults.min_side, self.defaults.max_side
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer number of pixels, got {value!r}")
            if value % multiple:
                raise ValueError(
                    f"{name} must be a multiple of {multiple} (VAE stride {self.vae_scale} x patch {self.patch}), "
                    f"got {value}; try {max(multiple, int(value / multiple + 0.5) * multiple)}"
                )
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high} pixels for this model, got {value}")

    def _check_branches(self, samplers: Sequence[str], models: Sequence[str] | None) -> list[tuple[str, str]]:
        if isinstance(samplers, str):
            samplers = [samplers]
        if not samplers:
            raise ValueError(f"choose at least one sampler from {', '.join(SAMPLERS)}")
        models = list(models) if models is not None else ["student"] * len(samplers)
        if len(models) != len(samplers):
            raise ValueError(f"got {len(models)} models for {len(samplers)} samplers; give one model per sampler")
        for sampler, model in zip(samplers, models, strict=True):
            check_sampler(sampler)
            if model not in MODELS:
                raise ValueError(f"unknown model {model!r}; choose 'student' or 'teacher'")
            if model == "teacher" and not self.components.has_teacher:
                raise ValueError("no teacher transformer is loaded: load with with_teacher=True (CLI: --with_teacher)")
        branches = list(zip(samplers, models, strict=True))
        if len(set(branches)) != len(branches):
            raise ValueError(f"each sampler/model pair may appear once, got {branches}")
        return branches

    @staticmethod
    def _check_guidance(name: str, value: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number from 1 to {MAX_GUIDANCE:g}, got {value!r}")
        if not 1 <= value <= MAX_GUIDANCE:
            raise ValueError(f"{name} must be from 1 (no guidance) to {MAX_GUIDANCE:g}, got {value}")
        return float(value)

    # 3. Denoising --------------------------------------------------------------------------------------------------
    def _experts(self, model: str) -> tuple[torch.nn.Module, torch.nn.Module | None, float | None]:
        c = self.components
        if model == "teacher":
            return c.teacher_transformer, c.teacher_transformer_2, c.teacher_boundary_ratio
        return c.transformer, c.transformer_2, c.boundary_ratio

    def _make_model_fn(
        self,
        models: Sequence[str],
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance: tuple[float, float],
    ) -> BatchModelFn:
        """`model_fn(x, t, row_models)` for `sample_many` over branches on `models`: guidance branches and experts
        batched into as few forwards as possible.

        Row r of x belongs to `row_models[r]`; each row is routed to that model's expert for its own t (Wan 2.2: the
        high-noise expert while t >= boundary), and with guidance > 1 it is also run unconditionally, in the same
        forward, then combined as uncond + g (cond - uncond) with the expert's own guidance scale g.
        """

        def route(model: str, t: int | None) -> tuple[torch.nn.Module, float]:
            high, low, boundary = self._experts(model)
            if low is not None and t < (boundary or BOUNDARY_RATIO) * NUM_TRAIN_TIMESTEPS:
                return low, guidance[1]
            return high, guidance[0]

        # Index tensors and guidance scales repeat from step to step: each is made on the device once, because
        # making one (or indexing with a Python list) copies from the host and waits for the GPU to catch up.
        constants: dict[tuple, torch.Tensor] = {}

        def constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
            if key not in constants:
                constants[key] = make()
            return constants[key]

        def indices(values: list[int], device: torch.device) -> torch.Tensor:
            return constant(("index", *values), lambda: torch.tensor(values, device=device))

        two_experts = any(self._experts(model)[1] is not None for model in models)

        def model_fn(x: torch.Tensor, t: torch.Tensor, row_models: list[str]) -> torch.Tensor:
            # Expert routing needs the timesteps on the host: one read per step, for two-expert models only.
            t_host = t.tolist() if two_experts else [None] * len(x)
            routes = [route(model, t_r) for model, t_r in zip(row_models, t_host, strict=True)]
            g_values = tuple(g for _, g in routes)
            guided = [r for r, g in enumerate(g_values) if g != 1 and uncond is not None]
            rows = list(range(len(x))) + guided  # conditional rows, then the unconditional twins of guided rows
            parts = [cond.expand(len(x), -1, -1)] + ([uncond.expand(len(guided), -1, -1)] if guided else [])
            context = constant(("context", len(x), *guided), lambda: torch.cat(parts))
            x_rows = x.index_select(0, indices(rows, x.device)) if guided else x
            t_rows = t.index_select(0, indices(rows, x.device)) if guided else t
            modules = [routes[r][0] for r in rows]
            groups = {module: [i for i, m in enumerate(modules) if m is module] for module in dict.fromkeys(modules)}

            def forward(module: torch.nn.Module, index: torch.Tensor | None) -> torch.Tensor:
                def pick(rows_tensor: torch.Tensor) -> torch.Tensor:
                    return rows_tensor if index is None else rows_tensor.index_select(0, index)

                return module(
                    hidden_states=pick(x_rows).to(module.dtype),
                    timestep=pick(t_rows),
                    encoder_hidden_states=pick(context).to(module.dtype),
                    return_dict=False,
                )[0].float()

            if len(groups) == 1:  # one model for every row: the usual case
                out = forward(modules[0], None)
            else:  # two experts or student and teacher: one forward each
                out = torch.empty((len(rows), *x.shape[1:]), device=x.device, dtype=torch.float32)
                for module, idx in groups.items():
                    index = indices(idx, x.device)
                    out.index_copy_(0, index, forward(module, index))
            pred = out[: len(x)]
            if guided:
                g_rows = indices(guided, x.device)
                scales = constant(("scales", *g_values), lambda: torch.tensor(g_values, device=x.device))
                scales = scales.index_select(0, g_rows).view(-1, *[1] * (x.dim() - 1))
                uncond_pred = out[len(x) :]
                pred = pred.index_copy(0, g_rows, uncond_pred + scales * (pred.index_select(0, g_rows) - uncond_pred))
            return pred

        return model_fn

    # 4. Decoding ---------------------------------------------------------------------------------------------------
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

    def _clock(self) -> float:
        """Now, once the device has finished the work queued so far: phase timings that a GPU run can trust."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # The whole call --------------------------------------------------------------------------------------------------
    def check_arguments(
        self,
        prompt: str,
        *,
        samplers: Sequence[str] = ("flow_unipc",),
        models: Sequence[str] | None = None,
        negative_prompt: str | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> dict:
        """Validate `generate`'s arguments without sampling and fill in the model's defaults (not the seed).

        Raises the ValueError `generate` would; a server calls it before it asks for a GPU (ZeroGPU).
        """
        d = self.defaults
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: describe the image you want, e.g. 'A serene lake at sunset'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS} "
                f"(the text encoder reads at most {TEXT_LEN} tokens)"
            )
        negative_prompt = d.negative_prompt if negative_prompt is None else negative_prompt
        if not isinstance(negative_prompt, str) or len(negative_prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the negative prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        branches = self._check_branches(samplers, models)
        steps = d.steps if steps is None else steps
        shift = d.shift if shift is None else shift
        for sampler, _ in branches:
            validate_sampling_args(sampler, steps, shift)
        g_high = self._check_guidance("guidance_scale", d.guidance_scale if guidance_scale is None else guidance_scale)
        g_low_default = g_high if d.guidance_scale_2 is None or guidance_scale is not None else d.guidance_scale_2
        g_low = self._check_guidance(
            "guidance_scale_2", g_low_default if guidance_scale_2 is None else guidance_scale_2
        )
        height, width = d.height if height is None else height, d.width if width is None else width
        self._check_size(height, width)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        return dict(
            prompt=prompt,
            branches=branches,
            negative_prompt=negative_prompt,
            steps=steps,
            shift=shift,
            g_high=g_high,
            g_low=g_low,
            seed=seed,
            height=height,
            width=width,
        )

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        *,
        samplers: Sequence[str] = ("flow_unipc",),
        models: Sequence[str] | None = None,
        negative_prompt: str | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        progress: Progress | None = None,
    ) -> Generation:
        """Render `prompt` with each sampler (on the student, or the teacher where `models` says so).

        Every branch starts from the same seeded noise and the same text embeddings, and all branches share one
        transformer forward per step where their models coincide; branches on one model share the first step's
        evaluation too (every grid starts at t = 999), and legacy_ddim's last step (t = 0, prediction unused) runs
        none. Raises ValueError for any bad argument (see `check_arguments`); `seed=None` draws one, returned in the
        result.

        Returns:
            A Generation: per branch the image, final latents, diagnostics, time and parameters; the seed used.
        """
        d = self.defaults
        args = self.check_arguments(
            prompt,
            samplers=samplers,
            models=models,
            negative_prompt=negative_prompt,
            steps=steps,
            shift=shift,
            guidance_scale=guidance_scale,
            guidance_scale_2=guidance_scale_2,
            seed=seed,
            height=height,
            width=width,
        )
        branches, negative_prompt, steps, shift = (
            args["branches"],
            args["negative_prompt"],
            args["steps"],
            args["shift"],
        )
        g_high, g_low, height, width = args["g_high"], args["g_low"], args["height"], args["width"]
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed

        start = time.perf_counter()
        cond = self.encode_prompt(prompt)
        uncond = self.encode_prompt(negative_prompt) if max(g_high, g_low) != 1 else None
        encoded = self._clock()

        # Noise is drawn on the CPU from the seed, so a seed gives the same image on every device.
        shape = (1, self.z_dim, 1, height // self.vae_scale, width // self.vae_scale)  # (B, C, F, H, W)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).to(self.device)
        diagnostics = [Diagnostics() for _ in branches]

        def each_step(i: int, ts: list, xs: list, x0s: list) -> None:
            for k, diag in enumerate(diagnostics):
                diag.record_step(ts[k], xs[k], x0s[k])
            if progress is not None:
                progress(i + 1, steps)

        branch_models = [m for _, m in branches]
        latents = sample_many(
            self._make_model_fn(branch_models, cond, uncond, (g_high, g_low)),
            [noise] * len(branches),
            samplers=[s for s, _ in branches],
            steps=steps,
            shift=shift,
            models=branch_models,
            callback=each_step,
        )
        denoised = self._clock()
        images = self.decode(torch.cat(latents))
        end = time.perf_counter()

        share = (end - start) / len(branches)
        results = {}
        for (sampler, model), x, image, diag in zip(branches, latents, images, diagnostics, strict=True):
            label = sampler if models is None else f"{model}/{sampler}"
            parameters = {
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "sampler": sampler,
                "model": d.name if model == "student" else f"{d.name} (teacher)",
                "steps": steps,
                "shift": float(shift),
                "guidance_scale": g_high,
                "guidance_scale_2": g_low,
                "seed": seed,
                "height": height,
                "width": width,
            }
            results[label] = SamplerResult(
                label=label,
                sampler=sampler,
                model=model,
                image=with_parameters(image, parameters),
                latents=x.cpu(),
                diagnostics=diag.finish(x),
                seconds=share,
                parameters=parameters,
            )
        timings = {"encode": encoded - start, "denoise": denoised - encoded, "decode": end - denoised}
        return Generation(results=results, seed=seed, timings=timings | {"total": end - start})
