"""Load a Wan student plus the frozen VAE, text encoder and tokenizer of its teacher, from folders or Hub ids."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5EncoderModel

from wan_t2i import native
from wan_t2i.choices import DTYPES
from wan_t2i.constants import BOUNDARY_RATIO, DEFAULT_GUIDANCE_SCALE, DEFAULT_SHIFT, WAN_NEGATIVE_PROMPT
from wan_t2i.samplers import check_sampler
from wan_t2i.schedules import check_timesteps
from wan_t2i.values import is_finite_number, is_integer

# The embedded demo model ships inside the package (package data), so an installed wan-t2i finds it from any directory.
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
DEFAULTS_FILE = "wan_t2i.json"  # this project's optional per-model defaults, at the top of a bundle
BF16_MIN_CAPABILITY = (8, 0)  # bf16 tensor cores: Ampere (A100, RTX 30xx) and later
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What this project reads from a Diffusers-layout teacher; transformer folders only when they are used.
TEACHER_FILES = ("model_index.json", DEFAULTS_FILE, "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*")
TRANSFORMER_FILES = ("transformer/*", "transformer_2/*")
# The same parts in Wan's native layout (shared/reference/wan_native_layout.md).
NATIVE_TEACHER_FILES = (native.T5_CHECKPOINT, f"{native.T5_TOKENIZER}/*", native.VAE_CHECKPOINT)
NATIVE_TRANSFORMER_FILES = (
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "high_noise_model/*",
    "low_noise_model/*",
)


class ModelLoadError(ValueError):
    """A model path, Hub id or checkpoint that cannot be used, with what to do about it."""


# Config sanity: the sizes a config.json may ask for, checked before a model is built from it. Each is an integer from
# 1 to a bound far above any Wan model (Wan 2.1 14B: 40 layers, dim 5120, ffn 13824): a `num_layers` of 1e7 would
# otherwise build ten million blocks, gigabytes of Python objects even on the meta device, before a weight is read.
TRANSFORMER_SIZES = {  # diffusers' WanTransformer3DModel
    "num_layers": 256, "num_attention_heads": 1024, "attention_head_dim": 1024, "in_channels": 1024,
    "out_channels": 1024, "text_dim": 65536, "freq_dim": 65536, "ffn_dim": 1 << 20, "rope_max_seq_len": 1 << 20,
    "patch_size": 64,
}  # fmt: skip
NATIVE_TRANSFORMER_SIZES = {  # Wan's own WanModel config.json
    "num_layers": 256, "num_heads": 1024, "dim": 1 << 18, "ffn_dim": 1 << 20, "in_dim": 1024, "out_dim": 1024,
    "text_dim": 65536, "freq_dim": 65536, "text_len": 65536, "patch_size": 64,
}  # fmt: skip
VAE_SIZES = {"base_dim": 4096, "z_dim": 1024, "num_res_blocks": 64, "dim_mult": 64}  # AutoencoderKLWan
TEXT_ENCODER_SIZES = {  # transformers' UMT5EncoderModel
    "d_model": 65536, "d_ff": 1 << 20, "d_kv": 4096, "num_layers": 256, "num_heads": 1024, "vocab_size": 1 << 22,
    "relative_attention_num_buckets": 4096, "relative_attention_max_distance": 1 << 20,
}  # fmt: skip


def read_config(path: Path) -> dict:
    """A JSON object from `path`; ModelLoadError naming the file if it is unreadable, not JSON, or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from error
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} must hold a JSON object {{...}}, got {type(value).__name__}")
    return value


def check_config(path: Path, sizes: dict[str, int]) -> dict:
    """The config at `path`, after checking that each size it sets is an integer (or a list of them) in 1..bound.

    Raises ModelLoadError naming the file, the key and the bound, before anything is allocated.
    """
    config = read_config(path)
    for key, bound in sizes.items():
        value = config.get(key)
        if value is None:  # absent, or null where the class allows it (image_dim, added_kv_proj_dim)
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ModelLoadError(f"{path}: {key} must be an integer (or a list of them), got {value!r}")
            if not 1 <= item <= bound:
                raise ModelLoadError(f"{path}: {key} {item} is outside 1..{bound}: a damaged file, or not a Wan config")
    return config


def check_native_configs(folder: Path) -> None:
    """Check the config.json of a native Wan transformer (and of each Wan 2.2 expert folder) where present."""
    for config in (
        folder / "config.json",
        *(folder / name / "config.json" for name in (native.HIGH_NOISE_FOLDER, native.LOW_NOISE_FOLDER)),
    ):
        if config.is_file():
            check_config(config, NATIVE_TRANSFORMER_SIZES)


def _is_sizes(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(size, list) and len(size) == 2 and all(map(is_integer, size)) for size in value
    )


def check_defaults_types(values: dict, path: Path) -> None:
    """ModelLoadError naming `path` for a ModelDefaults field of the wrong JSON type (`"steps": "many"`)."""
    kinds = {
        "int": (is_integer, "an integer"),
        "float": (is_finite_number, "a number"),
        "str": (lambda v: isinstance(v, str), "text"),
        "dict": (lambda v: isinstance(v, dict), "a JSON object"),
        "tuple[int, ...]": (lambda v: isinstance(v, list) and all(map(is_integer, v)), "a list of integers"),
        "tuple[tuple[int, int], ...]": (_is_sizes, "a list of [height, width] pairs of integers"),
    }
    for f in fields(ModelDefaults):
        if f.name not in values:
            continue
        value, kind = values[f.name], str(f.type).removesuffix(" | None")
        if (value is None and str(f.type).endswith("| None")) or kind not in kinds:
            continue
        accepts, what = kinds[kind]
        if not accepts(value):
            raise ModelLoadError(f"{path}: {f.name} must be {what}, got {value!r}")


# Wan2.2 wan/configs/wan_t2v_A14B.py: sample_steps = 40, sample_guide_scale = (3.0, 4.0) for the (low-noise,
# high-noise) expert, boundary = 0.875 (constants.BOUNDARY_RATIO). Its sample_shift = 12.0 is for 81-frame video; a
# single frame keeps the shift 5 of Wan2.1's t2i-14B (DEFAULT_SHIFT), as the seed story does.
WAN22_A14B_DEFAULTS = {"steps": 40, "guidance_scale": 4.0, "guidance_scale_2": 3.0}


@dataclass(frozen=True)
class ModelDefaults:
    """Generation defaults of one model; a bundle overrides them in `wan_t2i.json`."""

    name: str = "Wan model"
    sampler: str = "flow_unipc"  # Wan's default solver (generate.py `--sample_solver unipc`); a student's may differ
    steps: int = 50  # Wan2.1 generate.py, t2i-14B
    shift: float = DEFAULT_SHIFT
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE  # the only expert, or the high-noise expert of a two-expert model
    guidance_scale_2: float | None = None  # the low-noise expert; None means the same as guidance_scale
    height: int = 480
    width: int = 832
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    resolutions: tuple[tuple[int, int], ...] = ((480, 832), (832, 480), (720, 1280), (1280, 720), (1024, 1024))
    min_side: int = 128
    max_side: int = 2048
    vocabulary_note: str | None = None  # for small models that understand a fixed vocabulary
    vocabulary: dict | None = None  # such a model's phrases by what they choose: {"time of day": ["at dawn", ...]}
    # What a public app accepts from one request (wan_t2i.request.Limits); the library accepts the ranges above.
    public_max_side: int | None = None  # pixels per side; None: the longest side of `resolutions`
    public_max_work: float | None = None  # megapixel-steps (steps x branches x pixels); None: what the page can ask
    # A few-step student's fixed model timesteps (e.g. (1000, 750, 500, 250)); steps is then their count. Requests
    # that keep the default steps and shift sample on them (wan_t2i.request.ModelSpec.request).
    timesteps: tuple[int, ...] | None = None
    latent_rgb: dict | None = None  # the VAE's latent -> RGB preview map (wan_t2i.previews.LatentRGB.to_dict())

    @classmethod
    def read(cls, folder: Path | None, **overrides) -> ModelDefaults:
        """Defaults for the model in `folder`: its `wan_t2i.json` where present, then `overrides`."""
        values: dict = {}
        if folder is not None and (folder / DEFAULTS_FILE).is_file():
            values = read_config(folder / DEFAULTS_FILE)
            check_defaults_types(values, folder / DEFAULTS_FILE)
        if values.get("timesteps"):  # a fixed list sets the step count, whatever the overrides say
            values.setdefault("steps", len(values["timesteps"]))
        if "guidance_scale" in values:  # a bundle's own guidance applies to both experts unless it sets the second
            overrides.pop("guidance_scale_2", None)
        values |= {k: v for k, v in overrides.items() if v is not None and k not in values}
        known = {f.name for f in fields(cls)}
        if "resolutions" in values:
            values["resolutions"] = tuple(tuple(r) for r in values["resolutions"])
        if values.get("timesteps") is not None:
            values["timesteps"] = tuple(values["timesteps"]) or None
        return cls(**{k: v for k, v in values.items() if k in known})

    def __post_init__(self) -> None:
        try:
            check_sampler(self.sampler)
            if self.timesteps is not None:
                check_timesteps(self.timesteps)
        except ValueError as error:
            raise ValueError(f"the defaults of {self.name} ({DEFAULTS_FILE}): {error}") from None
        if self.timesteps is not None and self.steps != len(self.timesteps):
            raise ValueError(
                f"the defaults of {self.name} ({DEFAULTS_FILE}) set {len(self.timesteps)} timesteps and steps "
                f"{self.steps}: set steps to {len(self.timesteps)} or leave it out"
            )


@dataclass
class WanComponents:
    """Everything a generation needs, loaded, frozen and placed on `device`."""

    transformer: WanTransformer3DModel  # the student, or the high-noise expert of a two-expert model
    vae: AutoencoderKLWan
    text_encoder: UMT5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    transformer_2: WanTransformer3DModel | None = None  # low-noise expert, used while t < boundary
    boundary_ratio: float | None = None
    teacher_transformer: WanTransformer3DModel | None = None  # the teacher's own, for student-vs-teacher A/B
    teacher_transformer_2: WanTransformer3DModel | None = None
    teacher_boundary_ratio: float | None = None

    @property
    def has_teacher(self) -> bool:
        return self.teacher_transformer is not None


def default_device() -> torch.device:
    """The GPU when this torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """What this machine can run on, as `--device` spells it: cpu, then each visible accelerator (cuda:0, ...)."""
    devices = ["cpu"]
    if torch.accelerator.is_available():
        kind = torch.accelerator.current_accelerator().type
        devices += [f"{kind}:{i}" for i in range(torch.accelerator.device_count())]
    return devices


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: `default_device()`); ModelLoadError, in one line saying what is available,
    for a device this machine does not have (cuda on a CPU-only torch, a GPU index past the last)."""
    if device is None:
        return default_device()
    available = f"available here: {', '.join(available_devices())}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {str(device)!r}; {available}") from None
    if resolved.type == "cpu":
        return resolved
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != resolved.type:
        why = f"no {resolved.type.upper()} device is visible"
        if resolved.type == "cuda" and torch.version.cuda is None:
            why = f"this torch ({torch.__version__}) is a CPU-only build (docs/install.md: installing for a GPU)"
        raise ModelLoadError(f"device {str(resolved)!r} is not available: {why}; {available}")
    count = torch.accelerator.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise ModelLoadError(
            f"device {str(resolved)!r} does not exist: {count} {resolved.type.upper()} device(s) visible; {available}"
        )
    return resolved


def check_dtype(dtype: torch.dtype, device: torch.device, *, name: str = "dtype") -> None:
    """ModelLoadError, in one line, for a dtype `device` cannot run well: fp16 on a CPU, bf16 on a GPU without it."""
    if device.type == "cpu" and dtype == torch.float16:
        # PyTorch's CPU fp16 kernels are fallbacks: the demo model's VAE decode took 184 s in fp16 against 0.5 s.
        raise ModelLoadError(f"{name} fp16 is for GPUs; on the CPU use fp32 (its default) or bf16")
    if device.type == "cuda" and dtype == torch.bfloat16 and torch.version.hip is None:
        # The capability of `device` itself: torch.cuda.is_bf16_supported() asks about the current GPU, not cuda:1.
        capability = torch.cuda.get_device_capability(device)
        if capability < BF16_MIN_CAPABILITY:
            raise ModelLoadError(
                f"{name} bf16 needs a GPU of compute capability 8.0 or newer; {torch.cuda.get_device_name(device)} is "
                f"{capability[0]}.{capability[1]}: use fp16 or fp32"
            )


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """'bf16' / 'bfloat16' / 'fp16' / 'float16' / 'fp32' / 'float32' (or a torch.dtype) to a torch.dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    aliases = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    aliases |= {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if not isinstance(name, str) or name.lower() not in aliases:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return aliases[name.lower()]


def resolve_folder(path_or_id: str | Path, *, allow_patterns: tuple[str, ...] | None = None) -> Path:
    """A local folder as given, or a Hub id downloaded (or found in the Hugging Face cache) to a local snapshot."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_id)
    if not HUB_ID.fullmatch(text) or text.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"model path {text!r} does not exist (and is not a Hub id such as 'Wan-AI/Wan2.1-T2V-1.3B')"
        )
    from huggingface_hub import snapshot_download  # imported here: only Hub ids need it
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, allow_patterns=list(allow_patterns) if allow_patterns else None))
    except LocalEntryNotFoundError as error:
        raise ModelLoadError(
            f"cannot reach the Hugging Face Hub to download {text!r}, and it is not in the local Hugging Face cache. "
            "Pass a local folder instead, or download it once on a machine with network access: "
            "the cache then serves it offline (HF_HUB_OFFLINE=1)."
        ) from error
    except HfHubHTTPError as error:
        raise ModelLoadError(
            f"the Hugging Face Hub refused {text!r}: {error}. "
            "Check the id, and set HF_TOKEN for private or gated models."
        ) from error


def check_diffusers_folder(folder: Path, *, need_transformer: bool) -> None:
    """Raise ModelLoadError naming what is missing from a Diffusers-layout Wan folder."""
    expected = ["model_index.json", "vae", "text_encoder", "tokenizer"] + (["transformer"] if need_transformer else [])
    missing = [name for name in expected if not (folder / name).exists()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a Wan model in the Diffusers layout: missing {', '.join(missing)} "
            "(expected model_index.json and the folders transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Inference only: eval mode, no gradients."""
    return module.eval().requires_grad_(False)


def load_transformer(path: Path, *, dtype: torch.dtype, device: torch.device) -> WanTransformer3DModel:
    """A `WanTransformer3DModel` folder (config.json + safetensors, sharded or not), or a pipeline's transformer/."""
    subfolder = "transformer" if not (path / "config.json").exists() and (path / "transformer").is_dir() else None
    root = path / subfolder if subfolder else path
    if not (root / "config.json").is_file():
        raise ModelLoadError(
            f"{path} holds no transformer: expected config.json with diffusion_pytorch_model*.safetensors"
        )
    check_config(root / "config.json", TRANSFORMER_SIZES)
    try:
        model = WanTransformer3DModel.from_pretrained(
            path, subfolder=subfolder, torch_dtype=dtype, use_safetensors=True
        )
    except (OSError, ValueError, TypeError) as error:  # TypeError: a config value of a type the class cannot take
        raise ModelLoadError(f"cannot load the transformer in {root}: {error}") from error
    return freeze(model).to(device)


def load_components(
    model_path: str | Path | None = None,
    teacher_path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    vae_dtype: str | torch.dtype | None = None,
    with_teacher: bool = False,
    offload: bool = False,
    on_encoders: Callable[[torch.nn.Module, Any], None] | None = None,
) -> WanComponents:
    """Load a student and its teacher's frozen VAE, text encoder and tokenizer (Diffusers or native Wan layout).

    Args:
        model_path: the student transformer (folder or Hub id); None uses the teacher's own transformer(s).
        teacher_path: a Wan model in the Diffusers or native layout (folder or Hub id); None with no model_path
            loads the embedded demo model.
        device: defaults to CUDA when available, else CPU.
        dtype: transformer and text-encoder dtype; defaults to bf16 on GPU, fp32 on CPU.
        vae_dtype: defaults to fp32 everywhere.
        with_teacher: also load the teacher's transformer(s) beside the student, for student-vs-teacher A/B.
        offload: keep the transformers and the text encoder in CPU memory (the VAE still goes to `device`), for
            `performance.apply` with `low_memory` to stream them to the GPU layer by layer: a model larger than the
            GPU then loads at all.
        on_encoders: called with the text encoder (frozen, where it will stay: `device`, or the CPU with `offload`)
            and the tokenizer before any transformer loads; `WanT2IPipeline.from_pretrained` starts the text
            encoder's warm-up there, beside the transformers' loading.
    """
    device = resolve_device(device)
    dtype = parse_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    vae_dtype = parse_dtype(vae_dtype) or torch.float32
    check_dtype(dtype, device)
    check_dtype(vae_dtype, device, name="vae_dtype")
    place = torch.device("cpu") if offload else device  # where the large modules live between uses
    if teacher_path is None:
        if model_path is not None:
            raise ModelLoadError("model_path needs teacher_path: the student uses its teacher's VAE and text encoder")
        if not (DEMO_MODEL_DIR / "model_index.json").exists():
            raise ModelLoadError(
                f"the embedded demo model is missing from {DEMO_MODEL_DIR}; pass teacher_path, or rebuild it with "
                "`python -m wan_t2i.demo.train --out wan_t2i/demo_model`"
            )
        teacher_path = DEMO_MODEL_DIR

    def encoders_loaded(text_encoder: torch.nn.Module, tokenizer: Any) -> None:
        if on_encoders is not None:
            on_encoders(freeze(text_encoder).to(place), tokenizer)

    need_teacher_transformer = model_path is None or with_teacher
    patterns = TEACHER_FILES + NATIVE_TEACHER_FILES
    if need_teacher_transformer:
        patterns += TRANSFORMER_FILES + NATIVE_TRANSFORMER_FILES
    teacher = resolve_folder(teacher_path, allow_patterns=patterns)
    layout = _layout(teacher)
    if layout == "native":
        check_native_configs(teacher)
        parts = _load(
            native.load_native_teacher,
            teacher,
            device=place,
            dtype=dtype,
            vae_dtype=vae_dtype,
            with_transformers=need_teacher_transformer,
            on_encoders=encoders_loaded,
        )
    elif layout == "diffusers":
        parts = load_diffusers_teacher(
            teacher, device=place, dtype=dtype, vae_dtype=vae_dtype, with_transformers=need_teacher_transformer,
            on_encoders=encoders_loaded,
        )  # fmt: skip
    else:
        raise ModelLoadError(
            f"{teacher} holds a single transformer; teacher_path needs a whole Wan model (Diffusers or native "
            "layout) for the VAE and text encoder. Pass this one as model_path."
        )
    vae, text_encoder = freeze(parts["vae"]).to(device), freeze(parts["text_encoder"]).to(place)
    experts = [freeze(m).to(place) if m is not None else None for m in (parts["transformer"], parts["transformer_2"])]
    for expert in experts:
        if expert is not None:
            _check_compatible(expert, vae, text_encoder, what="the teacher's transformer")
    teacher_boundary = parts["boundary_ratio"] if experts[1] is not None else None
    common = dict(vae=vae, text_encoder=text_encoder, tokenizer=parts["tokenizer"], device=device)
    wan_defaults = WAN22_A14B_DEFAULTS if parts["boundary_ratio"] is not None else {}  # else Wan2.1's, the dataclass's
    defaults = ModelDefaults.read(teacher, name=_model_name(teacher_path), **wan_defaults)
    if model_path is None:
        return WanComponents(
            transformer=experts[0],
            transformer_2=experts[1],
            boundary_ratio=teacher_boundary,
            defaults=defaults,
            **common,
        )
    student_folder = resolve_folder(model_path)
    student = load_student(student_folder, dtype=dtype, device=place)
    _check_compatible(student, vae, text_encoder, what="the student")
    return WanComponents(
        transformer=student,
        defaults=ModelDefaults.read(student_folder, **asdict(defaults) | {"name": _model_name(model_path)}),
        teacher_transformer=experts[0] if with_teacher else None,
        teacher_transformer_2=experts[1] if with_teacher else None,
        teacher_boundary_ratio=teacher_boundary if with_teacher else None,
        **common,
    )


def load_diffusers_teacher(
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    with_transformers: bool,
    on_encoders: Callable[[torch.nn.Module, Any], None] | None = None,
) -> dict:
    """The parts of a Diffusers-layout Wan folder, named as diffusers' WanPipeline names them; `on_encoders(text
    encoder, tokenizer)` is called once these are loaded, before the transformers."""
    check_diffusers_folder(folder, need_transformer=with_transformers)
    index = read_config(folder / "model_index.json")
    check_config(folder / "vae" / "config.json", VAE_SIZES)
    check_config(folder / "text_encoder" / "config.json", TEXT_ENCODER_SIZES)
    try:
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype, use_safetensors=True)
        text_encoder = UMT5EncoderModel.from_pretrained(
            folder, subfolder="text_encoder", dtype=dtype, use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    except (OSError, ValueError, TypeError) as error:  # TypeError: a config value of a type the class cannot take
        raise ModelLoadError(f"cannot load the VAE / text encoder / tokenizer of {folder}: {error}") from error
    if on_encoders is not None:
        on_encoders(text_encoder, tokenizer)
    transformer = transformer_2 = None
    if with_transformers:
        transformer = load_transformer(folder / "transformer", dtype=dtype, device=device)
        if (folder / "transformer_2").is_dir():
            transformer_2 = load_transformer(folder / "transformer_2", dtype=dtype, device=device)
    boundary = index.get("boundary_ratio") or (BOUNDARY_RATIO if transformer_2 is not None else None)
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=boundary,
    )


def load_student(path: Path, *, dtype: torch.dtype, device: torch.device) -> WanTransformer3DModel:
    """A student as a Diffusers transformer folder, a native WanModel folder, or one .safetensors file."""
    layout = _layout(path)
    if layout in ("transformer-diffusers", "diffusers"):
        return load_transformer(path, dtype=dtype, device=device)
    check_native_configs(path)
    return freeze(_load(native.load_native_transformer, path, device=device, dtype=dtype))


def _layout(path: Path) -> str:
    try:
        return native.detect_layout(path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(str(error)) from error


def _load(loader, *args, **kwargs):
    """Call a native loader, turning its file errors into ModelLoadError (they already name the file)."""
    try:
        return loader(*args, **kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(str(error)) from error


def _check_compatible(transformer, vae, text_encoder, *, what: str) -> None:
    try:
        native.check_compatible(transformer, vae, text_encoder)
    except ValueError as error:
        raise ModelLoadError(f"{what} does not fit the teacher: {error}") from error


def _model_name(path_or_id: str | Path) -> str:
    path = Path(path_or_id)
    if path.resolve() == DEMO_MODEL_DIR:
        return "wan-t2i demo (tiny)"
    return str(path_or_id) if not path.exists() else path.resolve().name
