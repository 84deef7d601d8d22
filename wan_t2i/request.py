"""One generation request: every setting of a render, typed, validated once, and stored in the PNGs it produces.

`GenerationRequest` is what the CLI, the app, its API endpoints and ZeroGPU's worker build and pass down whole;
`WanT2IPipeline.request(prompt, **settings)` makes one with the model's defaults filled in, and
`GenerationRequest.from_png(path)` reads back the request that reproduces an image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wan_t2i.constants import TEXT_LEN
from wan_t2i.images import PARAMETERS_KEY
from wan_t2i.loading import ModelDefaults
from wan_t2i.samplers import MAX_STEPS, SAMPLERS, check_sampler
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
        model_defaults = dict(
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
    """Raise ValueError for a prompt that is not text, is empty, or is longer than the text encoder reads."""
    if not isinstance(prompt, str) or not prompt.strip():
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


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(f"{what} must be a list of names, got {value!r}") from None
