"""Load Wan checkpoints in Wan's native layout: the repositories as released, not their -Diffusers twins.

Each model is built with its parameters on the meta device (accelerate's `init_empty_weights`) and filled tensor by
tensor from files read lazily (safetensors through `safe_open`, `.pth` memory-mapped), renamed on the way by diffusers'
converters, so no model is ever held twice in memory. Buffers are built for real: some are computed in __init__ and
never saved (diffusers' rope.freqs_cos). Tensor names and configs live in `native_convert`.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5EncoderModel

from wan_t2i.constants import BOUNDARY_RATIO
from wan_t2i.native_convert import (
    diffusers_transformer_config,
    transformer_config_from_shapes,
    transformer_key_map,
    umt5_config_from_shapes,
    umt5_key_map,
    vae_config_from_shapes,
    vae_key_map,
)

# File names of a native Wan checkpoint (wan/configs/wan_t2v_A14B.py: t5_checkpoint, t5_tokenizer, vae_checkpoint,
# high_noise_checkpoint, low_noise_checkpoint; WanModel.save_pretrained names the transformer files).
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
WAN22_VAE_CHECKPOINT = "Wan2.2_VAE.pth"  # TI2V-5B's 48-channel VAE, which diffusers' converter does not handle
HIGH_NOISE_FOLDER = "high_noise_model"
LOW_NOISE_FOLDER = "low_noise_model"
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMER_INDEX = "diffusion_pytorch_model.safetensors.index.json"

Layout = Literal["diffusers", "native", "transformer-diffusers", "transformer-native", "safetensors-file"]
Device = torch.device | str


def detect_layout(path: Path) -> Layout:
    """Tell what `path` holds: a Diffusers pipeline folder, a native Wan folder, one transformer, or a file.

    Raises:
        FileNotFoundError: if `path` does not exist, or a native Wan folder lacks one of its parts (named).
        ValueError: if `path` is none of the above.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.suffix == ".safetensors":
            return "safetensors-file"
        raise ValueError(f"{path} is a file but not a .safetensors transformer; pass a checkpoint folder instead")
    if (path / "model_index.json").is_file():
        return "diffusers"
    if (path / WAN22_VAE_CHECKPOINT).is_file() and not (path / VAE_CHECKPOINT).is_file():
        raise ValueError(f"{path} uses {WAN22_VAE_CHECKPOINT} (Wan 2.2 TI2V-5B), which is not supported")
    native_parts = (T5_CHECKPOINT, T5_TOKENIZER, VAE_CHECKPOINT, HIGH_NOISE_FOLDER, LOW_NOISE_FOLDER)
    if any((path / part).exists() for part in native_parts):
        missing = [part for part in (T5_CHECKPOINT, VAE_CHECKPOINT) if not (path / part).is_file()]
        missing += [f"{T5_TOKENIZER}/"] if not (path / T5_TOKENIZER).is_dir() else []
        experts = [folder for folder in (HIGH_NOISE_FOLDER, LOW_NOISE_FOLDER) if (path / folder).exists()]
        if experts:
            missing += [
                f"{folder}/config.json"
                for folder in (HIGH_NOISE_FOLDER, LOW_NOISE_FOLDER)
                if not (path / folder / "config.json").is_file()
            ]
        elif not (path / "config.json").is_file():
            missing.append(f"config.json (Wan 2.1) or {HIGH_NOISE_FOLDER}/ + {LOW_NOISE_FOLDER}/ (Wan 2.2 A14B)")
        if missing:
            raise FileNotFoundError(f"{path} looks like a native Wan checkpoint but lacks {', '.join(missing)}")
        return "native"
    config_path = path / "config.json"
    if config_path.is_file():
        config = _read_json(config_path)
        if "num_attention_heads" in config:
            return "transformer-diffusers"
        if "dim" in config and "num_heads" in config:
            return "transformer-native"
        raise ValueError(
            f"{config_path} is not a Wan transformer config (neither num_attention_heads nor dim/num_heads)"
        )
    raise ValueError(
        f"{path} has no model_index.json (Diffusers layout), no {T5_CHECKPOINT} / {VAE_CHECKPOINT} (native Wan "
        "layout) and no config.json (a transformer folder)"
    )


# --- reading -----------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


WEIGHTS_ONLY_REFUSAL = "Weights only load failed"  # how torch.load(weights_only=True) begins a refusal (torch 2.6+)


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a `.pth` state dict: its tensors stay in the file until touched."""
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            # torch's legacy (pre-1.6, non-zip) format cannot be memory-mapped: read it whole
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... depending on the damage
        if isinstance(error, pickle.UnpicklingError) and WEIGHTS_ONLY_REFUSAL in str(error):
            raise ValueError(f"{path} was refused: {refused_objects(error)}") from None  # no chain: torch's advice
        raise ValueError(f"{path} is truncated or not a PyTorch state dict: {error}") from error
    if not isinstance(state_dict, dict) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        raise ValueError(f"{path} is not a PyTorch state dict of tensors")
    return state_dict


def refused_objects(error: pickle.UnpicklingError) -> str:
    """Why torch's weights_only load refused a file, without torch's advice to load it unsafely (which would run
    whatever code the file carries)."""
    found = re.search(r"\bGLOBAL ([\w.]+)", str(error))  # the callable it would have run
    what = f" ({found[1]})" if found else ""
    return (
        f"it holds a Python object other than tensors{what}, and wan-t2i loads nothing but tensors from a pickle: "
        "use the checkpoint as its publisher released it (Wan's .pth files hold only tensors) or in safetensors"
    )


class _SafetensorsReader:
    """Lazy view over one or more safetensors files: shapes up front, each tensor read when asked for."""

    def __init__(self, files: list[Path], stack: ExitStack) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.file_of: dict[str, Path] = {}
        self.metadata: dict[str, str] = {}
        self._handles: dict[Path, Any] = {}
        for file in files:
            try:
                handle = stack.enter_context(safe_open(file, framework="pt"))
                for key in handle.keys():
                    self.shapes[key] = tuple(handle.get_slice(key).get_shape())
                    self.file_of[key] = file
            except (SafetensorError, OSError) as error:
                raise ValueError(f"{file} is truncated or not a safetensors file: {error}") from error
            self._handles[file] = handle
            self.metadata.update(handle.metadata() or {})

    def read(self, key: str) -> torch.Tensor:
        file = self.file_of[key]
        try:
            return self._handles[file].get_tensor(key)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{file} is truncated or damaged: {error}") from error


def _transformer_files(folder: Path) -> tuple[list[Path], Path]:
    """The safetensors files of a transformer folder (shards listed by an index json, or one file) and its label."""
    index = folder / TRANSFORMER_INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map")
        files = sorted({folder / name for name in weight_map.values()})
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return files, index
    if (folder / TRANSFORMER_WEIGHTS).is_file():
        return [folder / TRANSFORMER_WEIGHTS], folder / TRANSFORMER_WEIGHTS
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return candidates, candidates[0]
    raise FileNotFoundError(f"{folder} has no {TRANSFORMER_WEIGHTS} (nor {TRANSFORMER_INDEX} listing shards)")


# --- building and filling ------------------------------------------------------------------------------------------


def _fill(
    model: torch.nn.Module,
    key_map: Mapping[str, str],
    read: Callable[[str], torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    label: str,
    device: Device,
    dtype: torch.dtype | None,
    keep_fp32: tuple[str, ...] = (),
    native_names: Mapping[str, str] | None = None,
    file_of: Mapping[str, Path] | None = None,
) -> None:
    """Assign the file's tensors (`key_map`: model name -> file name) to the meta parameters of `model`, in place.

    `native_names` (model name -> native name) names missing tensors; `file_of` names the shard holding a tensor.

    Raises:
        ValueError: naming `label`, for missing, unexpected or wrongly shaped tensors.
    """
    expected = model.state_dict()
    native_names = native_names or {}
    ignored = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
    unexpected = [
        file_key
        for key, file_key in key_map.items()
        if key not in expected and not any(pattern in key for pattern in ignored)
    ]
    if unexpected:
        raise ValueError(f"{label}: unexpected keys {_shorten(unexpected)}")
    missing = [native_names.get(key, key) for key in expected if key not in key_map]
    if missing:
        raise ValueError(f"{label}: missing keys {_shorten(missing)}")
    for key, file_key in key_map.items():
        if key in expected and tuple(expected[key].shape) != shapes[file_key]:
            raise ValueError(
                f"{(file_of or {}).get(file_key, label)}: {file_key} has shape {shapes[file_key]}, "
                f"the config asks for {tuple(expected[key].shape)}"
            )
    loaded: dict[str, torch.Tensor] = {}  # by file name, so tied names share one tensor
    state_dict = {}
    for key in expected:
        file_key = key_map[key]
        if file_key not in loaded:
            tensor = read(file_key)
            target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            if dtype is not None and any(part in keep_fp32 for part in key.split(".")):
                target = torch.float32
            loaded[file_key] = tensor.to(device=device, dtype=target)
        state_dict[key] = loaded[file_key]
    model.load_state_dict(state_dict, assign=True, strict=True)
    model.to(device)  # the buffers built in __init__
    model.eval()


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _native_block_names(keys: Iterable[str], key_map: Mapping[str, str]) -> dict[str, str]:
    """Native names of diffusers `blocks.{i}.` tensors, by analogy with the blocks the file has (for errors)."""

    def template(key: str) -> str:
        return _BLOCK.sub("blocks.{i}.", key)

    native_templates = {template(key): template(file_key) for key, file_key in key_map.items()}
    return {
        key: native_templates[template(key)].format(i=match[1])
        for key in keys
        if (match := _BLOCK.match(key)) and template(key) in native_templates
    }


def _shorten(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


# --- the public loaders --------------------------------------------------------------------------------------------


def load_native_transformer(
    path: Path, *, device: Device = "cpu", dtype: torch.dtype | None = None
) -> WanTransformer3DModel:
    """Load a Wan transformer from a native WanModel folder, a Diffusers transformer folder or one .safetensors file.

    A folder holds config.json and diffusion_pytorch_model.safetensors (or shards listed by an index json). A native
    config.json decides the fields it has (num_heads at least); the tensor shapes give the ones WanModel leaves out of
    it (patch_size, text_dim, qk_norm, cross_attn_norm). A single file may use native or diffusers tensor names; its
    config is read off the tensor shapes, with the number of heads taken from a `config` entry of the file's metadata
    if there is one, else from Wan's 128-wide heads.

    Args:
        path: the folder or file.
        device: where the weights go; they are moved there one tensor at a time.
        dtype: floating dtype of the weights (diffusers' `_keep_in_fp32_modules` stay float32); None keeps the file's.

    Returns:
        The transformer in eval mode.

    Raises:
        FileNotFoundError: if `path` or a file it lists is missing.
        ValueError: naming the file, if the number of heads cannot be told or the tensors do not fit the config.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "native" and (path / "config.json").is_file():
        layout = "transformer-native"  # Wan 2.1: the transformer sits at the checkpoint's root
    if layout == "safetensors-file":
        files, label, config = [path], path, None
    elif layout in ("transformer-native", "transformer-diffusers"):
        files, label = _transformer_files(path)
        config = _read_json(path / "config.json")
    else:
        raise ValueError(f"{path} is a whole {layout} checkpoint, not a transformer folder or .safetensors file")
    with ExitStack() as stack:
        reader = _SafetensorsReader(files, stack)
        native_named = "proj_out.weight" not in reader.shapes
        key_map = transformer_key_map(reader.shapes) if native_named else {key: key for key in reader.shapes}
        shapes = {key: reader.shapes[file_key] for key, file_key in key_map.items()}
        try:
            if config is None:
                stored = json.loads(reader.metadata["config"]) if "config" in reader.metadata else {}
                num_heads = stored.get("num_heads", stored.get("num_attention_heads"))
                model_config = transformer_config_from_shapes(shapes, num_heads)
            elif layout == "transformer-native":
                model_config = diffusers_transformer_config(config, shapes)
            else:
                model_config = {name: value for name, value in config.items() if not name.startswith("_")}
        except (ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"{label}: {error}") from error
        with init_empty_weights(include_buffers=False):
            model = WanTransformer3DModel.from_config(model_config)
        native_names = _native_block_names(model.state_dict(), key_map) if native_named else {}
        _fill(
            model,
            key_map,
            reader.read,
            reader.shapes,
            label=str(label),
            device=device,
            dtype=dtype,
            keep_fp32=tuple(model._keep_in_fp32_modules or ()),
            native_names=native_names,
            file_of=reader.file_of,
        )
    return model


def _read_pth_with_config(path: Path, config_from_shapes: Callable[[dict], Any]) -> tuple[dict, dict, Any]:
    """Memory-map a `.pth` state dict and infer its model config from the tensor shapes (errors name the file)."""
    state_dict = _read_pth(path)
    shapes = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    try:
        return state_dict, shapes, config_from_shapes(shapes)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path}: {error}") from error


def load_native_vae(folder: Path, *, device: Device = "cpu", dtype: torch.dtype | None = None) -> AutoencoderKLWan:
    """Load Wan 2.1's VAE from `folder`/Wan2.1_VAE.pth (or that file itself), memory-mapped.

    Returns:
        The AutoencoderKLWan in eval mode; its config is read off the tensor shapes.
    """
    folder = Path(folder)
    path = folder if folder.is_file() else folder / VAE_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (Wan's VAE)")
    state_dict, shapes, config = _read_pth_with_config(path, vae_config_from_shapes)
    with init_empty_weights(include_buffers=False):
        vae = AutoencoderKLWan(**config)
    _fill(vae, vae_key_map(state_dict), state_dict.__getitem__, shapes, label=str(path), device=device, dtype=dtype)
    return vae


def load_native_text_encoder(
    folder: Path, *, device: Device = "cpu", dtype: torch.dtype | None = None
) -> tuple[UMT5EncoderModel, PreTrainedTokenizerBase]:
    """Load Wan's UMT5 encoder (`models_t5_umt5-xxl-enc-bf16.pth`, memory-mapped) and `google/umt5-xxl/` tokenizer.

    Returns:
        (text_encoder in eval mode, tokenizer).
    """
    folder = Path(folder)
    path, tokenizer_folder = folder / T5_CHECKPOINT, folder / T5_TOKENIZER
    for needed in (path, tokenizer_folder):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found (Wan's UMT5 text encoder)")
    state_dict, shapes, config = _read_pth_with_config(path, umt5_config_from_shapes)
    with init_empty_weights(include_buffers=False):
        text_encoder = UMT5EncoderModel(config)
    # transformers keeps `_keep_in_fp32_modules` (UMT5's `wo`) in float32 only for float16.
    keep_fp32 = tuple(text_encoder._keep_in_fp32_modules or ()) if dtype == torch.float16 else ()
    _fill(
        text_encoder,
        umt5_key_map(state_dict),
        state_dict.__getitem__,
        shapes,
        label=str(path),
        device=device,
        dtype=dtype,
        keep_fp32=keep_fp32,
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    return text_encoder, tokenizer


def load_native_teacher(
    folder: Path,
    *,
    device: Device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    vae_dtype: torch.dtype | None = torch.float32,
    with_transformers: bool = True,
    on_encoders: Callable[[torch.nn.Module, Any], None] | None = None,
) -> dict[str, Any]:
    """Load a native Wan checkpoint folder (Wan 2.1 with the transformer at the root, or Wan 2.2 A14B's experts);
    `on_encoders(text encoder, tokenizer)` is called once these are loaded, before the transformers.

    Returns:
        dict with text_encoder, tokenizer, vae, transformer (A14B: the high-noise expert), transformer_2 (A14B: the
        low-noise expert, else None; both None unless `with_transformers`) and boundary_ratio (0.875 for A14B, else
        None), as diffusers' WanPipeline names them.
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    if layout != "native":
        raise ValueError(f"{folder} is a {layout} checkpoint, not a native Wan folder")
    text_encoder, tokenizer = load_native_text_encoder(folder, device=device, dtype=dtype)
    vae = load_native_vae(folder, device=device, dtype=vae_dtype)
    if on_encoders is not None:
        on_encoders(text_encoder, tokenizer)
    is_a14b = (folder / HIGH_NOISE_FOLDER).is_dir()
    transformer = transformer_2 = None
    if with_transformers:
        if is_a14b:
            transformer = load_native_transformer(folder / HIGH_NOISE_FOLDER, device=device, dtype=dtype)
            transformer_2 = load_native_transformer(folder / LOW_NOISE_FOLDER, device=device, dtype=dtype)
        else:
            transformer = load_native_transformer(folder, device=device, dtype=dtype)
        for model in (transformer, transformer_2):
            if model is not None:
                check_compatible(model, vae, text_encoder)
    return {
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "vae": vae,
        "transformer": transformer,
        "transformer_2": transformer_2,
        "boundary_ratio": BOUNDARY_RATIO if is_a14b else None,
    }


def check_compatible(
    transformer: WanTransformer3DModel, vae: AutoencoderKLWan | None, text_encoder: UMT5EncoderModel | None
) -> None:
    """Check that a transformer (a student) fits the teacher's VAE latents and text-encoder width.

    Raises:
        ValueError: naming both numbers of the first mismatch.
    """
    config = transformer.config
    if vae is not None:
        for name in ("in_channels", "out_channels"):
            if config[name] != vae.config.z_dim:
                raise ValueError(
                    f"the transformer's {name} is {config[name]} but the VAE's z_dim is {vae.config.z_dim}: "
                    "the transformer was made for another VAE"
                )
    if text_encoder is not None and config.text_dim != text_encoder.config.d_model:
        raise ValueError(
            f"the transformer's text_dim is {config.text_dim} but the text encoder's d_model is "
            f"{text_encoder.config.d_model}: the transformer was made for another text encoder"
        )
