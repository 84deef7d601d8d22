"""Files: every weight file readable and complete, shapes as the config asks, no NaN/Inf, dtypes, parameter counts,
and a student that fits its teacher's VAE and text encoder. Read from the files alone, before anything is loaded, so
that a checkpoint the loader refuses is still diagnosed."""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors import SafetensorError, safe_open
from transformers import UMT5Config, UMT5EncoderModel

from wan_t2i import native

# safetensors' dtype names (the `dtype` of each header entry) and their sizes in bytes.
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
SAFETENSORS_DTYPE_BYTES |= {"BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
DIFFUSERS_CLASSES = {"WanTransformer3DModel": WanTransformer3DModel, "AutoencoderKLWan": AutoencoderKLWan}
MAX_NAMED = 5  # tensors named per problem; the rest are counted


@dataclass
class WeightFile:
    """One weight file, read from its header (shapes, dtypes) and, unless it is damaged, its data (NaN/Inf)."""

    path: str
    size_bytes: int
    tensors: int = 0
    parameters: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> number of values
    nonfinite: dict[str, int] = field(default_factory=dict)  # tensor -> number of NaN/Inf values in it
    error: str | None = None  # why it cannot be read, in plain words


@dataclass
class ComponentFiles:
    """The weight files of one component (the student, the VAE, one expert...) against its config."""

    name: str  # "student", "transformer", "transformer_2", "vae", "text_encoder", ...
    folder: str
    class_name: str | None  # from its config; None where the loader infers the config from the shapes
    config: dict = field(default_factory=dict, repr=False)  # its config.json, where it has one
    files: list[WeightFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # tensors the config needs that no file holds
    unexpected: list[str] = field(default_factory=list)  # tensors in the files that the config does not know
    mismatched: list[str] = field(default_factory=list)  # "name: file (a, b), config (c, d)"
    shapes_checked: bool = False  # False: native names, checked by the loader when it maps them
    problems: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(f.parameters for f in self.files)

    @property
    def dtypes(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.dtypes)
        return dict(total)


@dataclass
class FilesReport:
    components: list[ComponentFiles]
    compatibility: list[str]  # one line per student/teacher pairing checked, with both numbers
    problems: list[str]  # every problem of every component, and every incompatibility

    @property
    def ok(self) -> bool:
        return not self.problems

    def component(self, name: str) -> ComponentFiles:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict:
        components = [asdict(c) | {"parameters": c.parameters, "dtypes": c.dtypes} for c in self.components]
        for component in components:
            del component["config"]  # the model's own files hold it
        return asdict(self) | {"components": components}


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The header of a safetensors file and the byte size the header says the file has."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > path.stat().st_size:
            raise ValueError(f"its header claims {length:,} bytes, more than the file holds")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    return header, 8 + length + end


def check_safetensors(path: Path, *, scan: bool = True) -> tuple[WeightFile, dict[str, tuple[int, ...]]]:
    """Check one safetensors file; return it and its tensor shapes (empty when unreadable)."""
    size = path.stat().st_size
    result = WeightFile(path=str(path), size_bytes=size)
    try:
        header, expected = read_safetensors_header(path)
    except (ValueError, OSError, KeyError, TypeError) as error:  # json errors are ValueErrors
        result.error = f"{path} is not a readable safetensors file ({error})"
        return result, {}
    if size < expected:
        result.error = (
            f"{path} is truncated: {size:,} of {expected:,} bytes ({100 * (1 - size / expected):.0f}% missing); "
            "download or copy it again"
        )
        return result, {}
    shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}
    dtypes: Counter[str] = Counter()
    for entry in header.values():
        dtypes[entry["dtype"]] += math.prod(entry["shape"])
    result.tensors, result.parameters, result.dtypes = len(header), sum(dtypes.values()), dict(dtypes)
    if scan:
        try:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point():
                        bad = int((~torch.isfinite(tensor)).sum())
                        if bad:
                            result.nonfinite[name] = bad
        except (SafetensorError, OSError) as error:
            result.error = f"{path} is damaged: {error}"
    return result, shapes


def check_pth(path: Path, *, scan: bool = True) -> WeightFile:
    """Check one native `.pth` state dict (memory-mapped: read tensor by tensor)."""
    result = WeightFile(path=str(path), size_bytes=path.stat().st_size)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... depending on the damage
        result.error = f"{path} is truncated or not a PyTorch state dict ({error})"
        return result
    dtypes: Counter[str] = Counter()
    for name, tensor in state_dict.items():
        dtypes[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()
        if scan and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                result.nonfinite[name] = bad
    result.tensors, result.parameters, result.dtypes = len(state_dict), sum(dtypes.values()), dict(dtypes)
    return result


def _expected_shapes(folder: Path, config: dict) -> tuple[dict[str, tuple[int, ...]], set[str]] | None:
    """Shapes of every tensor the config's class holds (built on the meta device), and the names that may be absent
    because the class ties them to another; None for a class this project does not load."""
    class_name = config.get("_class_name") or (config.get("architectures") or [None])[0]
    with init_empty_weights():
        if class_name in DIFFUSERS_CLASSES:
            model = DIFFUSERS_CLASSES[class_name].from_config(config)
        elif class_name == "UMT5EncoderModel":
            model = UMT5EncoderModel(UMT5Config.from_pretrained(folder))
        else:
            return None
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}, set(tied)


def _weight_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The safetensors files of a component folder, and problems with its shard index."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if not indexes:
        return sorted(folder.glob("*.safetensors")), []
    problems = []
    listed: set[Path] = set()
    for index in indexes:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{index} is not a readable shard index ({error})")
            continue
        listed |= {folder / name for name in weight_map.values()}
        missing = sorted({name for name in weight_map.values() if not (folder / name).is_file()})
        if missing:
            problems.append(f"{index} lists shards that are missing: {', '.join(missing)}")
    return sorted(f for f in listed if f.is_file()), problems


def check_component(name: str, folder: Path, *, scan: bool = True) -> ComponentFiles:
    """Check the weight files of one component folder (config.json + safetensors, sharded or not)."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    class_name = config.get("_class_name") or (config.get("architectures") or [None])[0]
    component = ComponentFiles(name=name, folder=str(folder), class_name=class_name, config=config)
    files, component.problems = _weight_files(folder)
    if not files and not component.problems:
        component.problems.append(f"{folder} holds no .safetensors weights")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        result, file_shapes = check_safetensors(path, scan=scan)
        component.files.append(result)
        shapes |= file_shapes
        if result.error:
            component.problems.append(result.error)
        if result.nonfinite:
            names = list(result.nonfinite)
            listed = ", ".join(f"{n} ({result.nonfinite[n]:,})" for n in names[:MAX_NAMED])
            more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
            component.problems.append(f"{path} holds NaN/Inf values in {listed}{more}")
    expected = _expected_shapes(folder, config) if config and not any(f.error for f in component.files) else None
    if expected is not None:
        wanted, tied = expected
        component.shapes_checked = True
        component.missing = [n for n in wanted if n not in shapes and n not in tied]
        component.unexpected = [n for n in shapes if n not in wanted]
        component.mismatched = [
            f"{n}: file {shapes[n]}, config {wanted[n]}" for n in wanted if n in shapes and shapes[n] != wanted[n]
        ]
        for label, names in (
            ("tensors the config needs are missing", component.missing),
            ("tensors the config does not know", component.unexpected),
            ("shapes differ from the config", component.mismatched),
        ):
            if names:
                more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
                component.problems.append(f"{name} ({folder}): {label}: {', '.join(names[:MAX_NAMED])}{more}")
    return component


def _single_file(name: str, path: Path, *, scan: bool) -> ComponentFiles:
    component = ComponentFiles(name=name, folder=str(path.parent), class_name=None)
    result, _ = check_safetensors(path, scan=scan)
    component.files.append(result)
    component.problems += [result.error] if result.error else []
    if result.nonfinite:
        component.problems.append(f"{path} holds NaN/Inf values in {', '.join(list(result.nonfinite)[:MAX_NAMED])}")
    return component


def _teacher_components(folder: Path, *, scan: bool) -> list[ComponentFiles]:
    """The components of a teacher in the Diffusers or native layout."""
    if (folder / "model_index.json").is_file():
        index = json.loads((folder / "model_index.json").read_text())
        names = [n for n in ("transformer", "transformer_2", "vae", "text_encoder") if index.get(n, [None])[0]]
        return [check_component(n, folder / n, scan=scan) for n in names if (folder / n).is_dir()]
    components = []
    for name, file in (("text_encoder", native.T5_CHECKPOINT), ("vae", native.VAE_CHECKPOINT)):
        if (folder / file).is_file():
            result = check_pth(folder / file, scan=scan)
            component = ComponentFiles(name=name, folder=str(folder), class_name=None, files=[result])
            component.problems += [result.error] if result.error else []
            if result.nonfinite:
                component.problems.append(f"{result.path} holds NaN/Inf values in {', '.join(result.nonfinite)}")
            components.append(component)
    experts = [(native.HIGH_NOISE_FOLDER, "transformer"), (native.LOW_NOISE_FOLDER, "transformer_2")]
    for sub, name in experts if (folder / native.HIGH_NOISE_FOLDER).is_dir() else [(".", "transformer")]:
        if list((folder / sub).glob("*.safetensors")):
            components.append(check_component(name, folder / sub, scan=scan))
    return components


def check_compatibility(student: dict, vae: dict, text_encoder: dict, *, what: str) -> tuple[list[str], list[str]]:
    """Lines comparing a transformer config (Diffusers or native names) with the VAE's and text encoder's, and the
    problems among them."""
    lines, problems = [], []
    pairs = [
        ("in_channels", student.get("in_channels", student.get("in_dim")), "the VAE's z_dim", vae.get("z_dim")),
        ("out_channels", student.get("out_channels", student.get("out_dim")), "the VAE's z_dim", vae.get("z_dim")),
        ("text_dim", student.get("text_dim"), "the text encoder's d_model", text_encoder.get("d_model")),
    ]
    for name, mine, theirs_name, theirs in pairs:
        if mine is None or theirs is None:
            continue
        line = f"{what}'s {name} {mine} {'=' if mine == theirs else '!='} {theirs_name} {theirs}"
        lines.append(line)
        if mine != theirs:
            kind = "VAE (latent channels)" if "z_dim" in theirs_name else "text encoder (text width)"
            problems.append(f"{line}: {what} was made for another {kind}")
    return lines, problems


def check_files(model_path: Path | None, teacher_path: Path, *, scan: bool = True) -> FilesReport:
    """Check a student (folder or .safetensors file, or None) and its teacher, both local.

    Args:
        model_path: the student: a Diffusers or native transformer folder, or one .safetensors file; None when the
            teacher's own transformer(s) are the model.
        teacher_path: a Wan model folder in the Diffusers or native layout.
        scan: also read every tensor to look for NaN/Inf (reads all the weights once; off: headers only).

    Returns:
        A FilesReport: per component its files, parameter count, dtypes, and shape problems against its config; the
        student's fit to the teacher's VAE and text encoder; every problem in plain words.
    """
    components = _teacher_components(Path(teacher_path), scan=scan)
    if model_path is not None:
        path = Path(model_path)
        student = _single_file("student", path, scan=scan) if path.is_file() else None
        if student is None:
            folder = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
            student = check_component("student", folder, scan=scan)
        components.insert(0, student)
    by_name = {c.name: c for c in components}
    vae, text_encoder = (by_name[n].config if n in by_name else {} for n in ("vae", "text_encoder"))
    compatibility, problems = [], [p for c in components for p in c.problems]
    for name in ("student", "transformer", "transformer_2"):
        if name in by_name:
            what = "the student" if name == "student" else f"the teacher's {name}"
            lines, mismatches = check_compatibility(by_name[name].config, vae, text_encoder, what=what)
            compatibility += lines
            problems += mismatches
    return FilesReport(components=components, compatibility=compatibility, problems=problems)
