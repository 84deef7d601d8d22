"""One generation request: every setting of a render, typed, validated once, and stored in the PNGs it produces.

`GenerationRequest` is what the CLI, the app, its API endpoints and ZeroGPU's worker build and pass down whole;
`WanT2IPipeline.request(prompt, **settings)` makes one with the model's defaults filled in, and
`GenerationRequest.from_png(path)` reads back the request that reproduces an image.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wan_t2i.constants import TEXT_LEN
from wan_t2i.images import PARAMETERS_KEY
from wan_t2i.loading import ModelDefaults
from wan_t2i.samplers import MAX_STEPS, SAMPLERS, check_sampler
from wan_t2i.schedules import check_timesteps
from wan_t2i.values import is_finite_number, is_integer

MODELS = ("student", "teacher")
MAX_PROMPT_CHARS = 2000  # UMT5 reads at most 512 tokens (about 2000 characters of English); longer is a mistake
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0


@dataclass(frozen=True)
class GenerationRequest:
    """A render of one prompt by one or several samplers ("branches") from the same seed and text encoding.

    Made valid or not at all: `__post_init__` raises ValueError naming the bad field and what it accepts.
    """

    prompt: str
    negative_prompt: str  # "" for none; models default to their own (Wan's for Wan models)
    samplers: tuple[str, ...] = ("flow_unipc",)  # one branch per sampler, in this order
    models: tuple[str, ...] = ()  # "student" or "teacher" per sampler; () means the student for every one
    steps: int = 50
    shift: float = 5.0  # Wan's timestep shift; legacy_ddim ignores it
    # Explicit model timesteps (strictly decreasing, in 1..1000), for students distilled on a fixed list: they replace
    # every flow sampler's grid of steps and shift, and set steps to their count; () for none.
    timesteps: tuple[int, ...] = ()
    guidance_scale: float = 5.0  # classifier-free guidance of the model (or of Wan 2.2's high-noise expert)
    guidance_scale_2: float = 5.0  # Wan 2.2's low-noise expert; the same as guidance_scale for one-expert models
    seed: int | None = None  # None draws one at render time; the one used comes back with the result
    height: int = 480
    width: int = 832

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the containers once, here
        set_(self, "samplers", _names(self.samplers, "samplers"))
        set_(self, "models", _names(self.models, "models") or ("student",) * len(self.samplers))
        check_prompt(self.prompt)
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the negative prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        check_branches(self.samplers, self.models)
        set_(self, "timesteps", _timesteps(self.timesteps))
        if self.timesteps:
            set_(self, "steps", len(self.timesteps))
        if not is_integer(self.steps) or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if not is_finite_number(self.shift) or self.shift <= 0:
            raise ValueError(f"shift must be a finite number > 0, got {self.shift!r}")
        for name in ("guidance_scale", "guidance_scale_2"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise ValueError(f"{name} must be a number from 1 to {MAX_GUIDANCE:g}, got {value!r}")
            if not 1 <= value <= MAX_GUIDANCE:
                raise ValueError(f"{name} must be from 1 (no guidance) to {MAX_GUIDANCE:g}, got {value}")
        if self.seed is not None and (not is_integer(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("height", "width"):
            if not is_integer(getattr(self, name)):
                raise ValueError(f"{name} must be an integer number of pixels, got {getattr(self, name)!r}")
        for name in ("steps", "seed", "height", "width"):  # numpy integers become Python ints, for JSON
            if getattr(self, name) is not None:
                set_(self, name, int(getattr(self, name)))
        for name in ("shift", "guidance_scale", "guidance_scale_2"):
            set_(self, name, float(getattr(self, name)))

    @property
    def branches(self) -> list[tuple[str, str]]:
        """(sampler, model) per branch."""
        return list(zip(self.samplers, self.models, strict=True))

    @property
    def uses_teacher(self) -> bool:
        return "teacher" in self.models

    @property
    def guided(self) -> bool:
        """Whether any expert runs classifier-free guidance (and so needs the negative prompt encoded)."""
        return max(self.guidance_scale, self.guidance_scale_2) != 1

    def labels(self) -> list[str]:
        """A name per branch: the sampler, prefixed with its model when a teacher takes part."""
        if not self.uses_teacher:
            return list(self.samplers)
        return [f"{model}/{sampler}" for sampler, model in self.branches]

    def with_seed(self, seed: int | None) -> GenerationRequest:
        return replace(self, seed=seed)

    def branch(self, index: int) -> GenerationRequest:
        """The single-sampler request that renders branch `index` alone (the same image, up to batching)."""
        return replace(self, samplers=(self.samplers[index],), models=(self.models[index],))

    def to_parameters(self, model_name: str) -> dict[str, Any]:
        """The JSON a single-branch request stores in its PNGs: `sampler`, `model` (the model's name) and
        `transformer` (student or teacher) stand for the one branch."""
        (sampler, model), *rest = self.branches
        if rest:
            raise ValueError("only a single-branch request is stored in an image; use request.branch(i)")
        values = asdict(self)
        del values["samplers"], values["models"]
        values["timesteps"] = list(self.timesteps)  # as the PNG's JSON stores it
        name = model_name if model == "student" else f"{model_name} (teacher)"
        return values | {"sampler": sampler, "model": name, "transformer": model}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> GenerationRequest:
        """The request stored by `to_parameters` (extra keys, such as the model's name, are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in parameters.items() if k in known}
        if "sampler" in parameters:
            values["samplers"] = (parameters["sampler"],)
            values["models"] = (parameters.get("transformer", "student"),)
        return cls(**values)

    @classmethod
    def from_png(cls, path: str | Path) -> GenerationRequest:
        """The request that reproduces a PNG written by this project (its `parameters` text chunk)."""
        from PIL import Image

        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PARAMETERS_KEY)
        if text is None:
            raise ValueError(f"{path} carries no '{PARAMETERS_KEY}' chunk: it was not written by wan-t2i")
        return cls.from_parameters(json.loads(text))


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model accepts beyond any request's own rules: its defaults, sizes and transformers."""

    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    size_multiple: int = 16  # VAE stride x patch size
    vae_scale: int = 8
    patch: int = 2
    has_teacher: bool = False

    def request(self, prompt: str, **settings: Any) -> GenerationRequest:
        """A request for this model: `settings` (any GenerationRequest field; None means the model's default).

        Raises ValueError naming the first bad value.
        """
        d = self.defaults
        unknown = set(settings) - {f.name for f in fields(GenerationRequest)}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        given = {k: v for k, v in settings.items() if v is not None}
        if "guidance_scale_2" not in given:  # an explicit guidance_scale applies to both experts
            g2 = d.guidance_scale_2 if d.guidance_scale_2 is not None and "guidance_scale" not in given else None
            given["guidance_scale_2"] = g2 if g2 is not None else given.get("guidance_scale", d.guidance_scale)
        if "timesteps" not in given and d.timesteps and own_grid(d, given):
            given["timesteps"] = d.timesteps
        model_defaults = dict(
            samplers=(d.sampler,),
            negative_prompt=d.negative_prompt,
            steps=d.steps,
            shift=d.shift,
            guidance_scale=d.guidance_scale,
            height=d.height,
            width=d.width,
        )
        request = GenerationRequest(prompt=prompt, **(model_defaults | given))
        self.check(request)
        return request

    def check(self, request: GenerationRequest) -> None:
        """Raise ValueError where `request` asks for what this model cannot do (size, a teacher that is missing)."""
        multiple, low, high = self.size_multiple, self.defaults.min_side, self.defaults.max_side
        for name in ("height", "width"):
            value = getattr(request, name)
            if value % multiple:
                raise ValueError(
                    f"{name} must be a multiple of {multiple} (VAE stride {self.vae_scale} x patch {self.patch}), "
                    f"got {value}; try {max(multiple, int(value / multiple + 0.5) * multiple)}"
                )
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high} pixels for this model, got {value}")
        if request.uses_teacher and not self.has_teacher:
            raise ValueError("no teacher transformer is loaded: load the pipeline with with_teacher=True")


def check_prompt(prompt: Any) -> None:
    """Raise ValueError for a prompt that is not text, shows no character, or is longer than the text encoder reads.

    "Shows no character" is judged after the HTML unescaping the pipeline applies (`&nbsp;` is a space) and counts
    zero-width and other invisible characters as nothing: such a prompt would be encoded as an empty one.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__} {_shorten(prompt)}")
    visible = html.unescape(html.unescape(prompt or ""))
    if not any(ch.isprintable() and not ch.isspace() for ch in visible):
        raise ValueError("the prompt is empty: describe the image you want, e.g. 'A serene lake at sunset'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS} "
            f"(the text encoder reads at most {TEXT_LEN} tokens)"
        )


def check_branches(samplers: tuple[str, ...], models: tuple[str, ...]) -> None:
    """Raise ValueError unless there is one known model per known sampler and no branch twice."""
    if not samplers:
        raise ValueError(f"choose at least one sampler from {', '.join(SAMPLERS)}")
    if len(models) != len(samplers):
        raise ValueError(f"got {len(models)} models for {len(samplers)} samplers; give one model per sampler")
    for sampler, model in zip(samplers, models, strict=True):
        check_sampler(sampler)
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose 'student' or 'teacher'")
    branches = list(zip(samplers, models, strict=True))
    if len(set(branches)) != len(branches):
        raise ValueError(f"each sampler/model pair may appear once, got {branches}")


def own_grid(defaults: ModelDefaults, settings: dict[str, Any]) -> bool:
    """Whether `settings` keep the model's steps and shift, and so its default timesteps; asking for another step
    count or shift means a grid computed from them."""
    return (
        settings.get("steps", defaults.steps) == defaults.steps
        and settings.get("shift", defaults.shift) == defaults.shift
    )


def _timesteps(value: Any) -> tuple[int, ...]:
    """Explicit timesteps, checked: a list of integers, or text such as "1000,750,500,250" (a flag or a form field);
    None, "", "none" and [] mean none."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return ()
        try:
            value = [int(part) for part in re.split(r"[\s,]+", text) if part]
        except ValueError:
            raise ValueError(
                f"timesteps must be whole numbers separated by commas, such as 1000,750,500,250, got {text!r}"
            ) from None
    if isinstance(value, list | tuple) and not value:
        return ()
    return check_timesteps(value)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(f"{what} must be a list of names, got {value!r}") from None


def _shorten(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters, for messages that echo what a user sent."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _first_set(*values: Any) -> Any:
    return next(value for value in values if value is not None)


# Public limits: what a shared server accepts from one request ------------------------------------------------------
PUBLIC_STEPS = 100  # the app's Steps slider ends here; the default work budget lets the page ask for it
RENDER_SECONDS = 300.0  # default wall clock of one render on a public app: minutes of a GPU shared by everyone


def work(request: GenerationRequest) -> float:
    """A request's work in megapixel-steps: steps x branches x height x width / 1e6.

    Every branch denoises its own latent through every step, and a step costs at least in proportion to the pixels
    (attention grows faster), so this bounds the GPU time a request can take.
    """
    return request.steps * len(request.samplers) * request.height * request.width / 1e6


@dataclass(frozen=True)
class Limits:
    """What a public app accepts from one request beyond what the model can render: its size, its work, its time.

    The library accepts all the model can do (1..1000 steps, min_side..max_side pixels); one request to a server
    that visitors share must not take it for hours (docs/reliability.md).
    """

    max_side: int  # pixels per side
    max_work: float  # megapixel-steps per request, see `work`
    max_seconds: float = RENDER_SECONDS  # wall clock of one render, checked after every step

    def __post_init__(self) -> None:
        for name in ("max_side", "max_work", "max_seconds"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {_shorten(value)}")

    @classmethod
    def for_model(
        cls, defaults: ModelDefaults, *, max_work: float | None = None, max_seconds: float | None = None
    ) -> Limits:
        """The model's public limits (`public_max_side`, `public_max_work` of its wan_t2i.json), with a deployment's
        own `max_work` and `max_seconds` (flags) over them.

        Unset, the side is the longest of the model's presets and the budget what the page can ask for: PUBLIC_STEPS
        steps of two samplers at the largest preset. So the API can ask the GPU for no more than the page can.
        """
        presets = (*defaults.resolutions, (defaults.height, defaults.width))
        height, width = max(presets, key=lambda size: size[0] * size[1])
        page_budget = PUBLIC_STEPS * 2 * height * width / 1e6
        return cls(  # None is unset; 0 is a value, refused by __post_init__
            max_side=_first_set(defaults.public_max_side, max(max(size) for size in presets)),
            max_work=_first_set(max_work, defaults.public_max_work, page_budget),
            max_seconds=_first_set(max_seconds, RENDER_SECONDS),
        )

    def check(self, request: GenerationRequest) -> None:
        """Raise ValueError, naming the limit and what to change, where `request` asks for more than these limits."""
        for name in ("height", "width"):
            value = getattr(request, name)
            if value > self.max_side:
                raise ValueError(
                    f"{name} must be at most {self.max_side} pixels on this app (public_max_side), got {value}"
                )
        asked = work(request)
        if asked > self.max_work:
            branches = len(request.samplers)

            def work_of(steps: int) -> float:  # `work` of the request with other steps, in its order of operations
                return steps * branches * request.height * request.width / 1e6

            fits = int(self.max_work / work_of(1))  # steps that fit at this size and branch count
            fits += work_of(fits + 1) <= self.max_work  # where the division rounded down past a whole number
            advice = f"use at most {fits} steps here, or " if fits else "use "
            raise ValueError(
                f"{request.steps} steps x {branches} sampler(s) x {request.width}x{request.height} pixels is "
                f"{asked:.3g} megapixel-steps, over this app's budget of {self.max_work:.3g} per request (max_work): "
                f"{advice}fewer samplers or a smaller size"
            )
