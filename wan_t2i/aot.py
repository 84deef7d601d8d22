"""Transformers compiled ahead of time and kept on disk, so that a later start loads them instead of tracing again.

`torch.compile` traces every start anew (Dynamo; measured on an H200 for the 1.3B at 480x832: 15.1 s to the first
image cold, 5.0 s with PyTorch's warm caches). `torch.export` plus AOTInductor (`aoti_compile_and_package`) instead
write a package that a new process loads in milliseconds: what ZeroGPU's `spaces.aoti_*` apply, and what this module
does for any device. A package holds the compiled code, not the weights (`aot_inductor.package_constants_in_so` off,
as `spaces.aoti_compile` sets it): loading one binds the transformer's own parameters and buffers (user-managed
constants, no copy), so one package serves every checkpoint of the same architecture.

Each package is filed under a fingerprint of what it was built for: the torch version, the device (the CPU, or the
CUDA card's name and capability), the transformer's config and dtype, and the input shapes (latent channels, frames,
height and width; text length and width); the batch is dynamic (1 to `MAX_BATCH` rows). Anything else has another
fingerprint, so its package is not found and is built anew: a package is never applied to what it was not built for.
A package that fails to load is built again; one that fails to build leaves that shape eager, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

# Loading any AOTInductor package on CUDA crashes the process (SIGSEGV in PyTorch's own loader, `_load_aoti`) with
# torch 2.11.0+cu130 on an H100, even a single nn.Linear packaged with AOTInductor's defaults:
# benchmarks/records/2026-12-07-h100-aoti. A crash cannot be caught, so the cache runs on the CPU only; where
# `python -m benchmarks.aoti_cuda --sizes linear` passes, set True to use it on CUDA.
ALLOW_CUDA = False
# AOTInductor's options for a package without its weights. `package_constants_in_so` off: the package binds the
# transformer's own tensors at load (see `AotForward._bind`). Constant folding off and every tensor constant kept, as
# `spaces.aoti_compile` (ZeroGPU) sets them: a folded constant (a weight transposed or cast at build time) would be a
# tensor the package needs but no parameter provides. (They did not cure the CUDA crash above: that is PyTorch's.)
INDUCTOR_OPTIONS: dict[str, Any] = {
    "aot_inductor.package_constants_in_so": False,
    "always_keep_tensor_constants": True,
    "joint_graph_constant_folding": False,
}
MAX_BATCH = 64  # rows of one forward (a sweep's chunk at most): the dynamic batch dimension's upper bound
FORMAT = 2  # of the package folder; a change here builds every package anew
log = logging.getLogger(__name__)


def fingerprint(transformer: torch.nn.Module, hidden_states: torch.Tensor, context: torch.Tensor) -> dict[str, Any]:
    """What a package for `transformer` at these input shapes is built for (see the module's docstring)."""
    device = hidden_states.device
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"cuda {props.name} sm{props.major}{props.minor}"
    else:
        where = device.type
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    return {
        "format": FORMAT,
        "torch": torch.__version__,
        "device": where,
        "dtype": str(transformer.dtype),
        "config": json.loads(json.dumps(config, default=str)),
        "latents": list(hidden_states.shape[1:]),
        "text": list(context.shape[1:]),
        "timestep_dtype": "int64",
    }


def key_of(facts: dict[str, Any]) -> str:
    """A fingerprint's file name: the first 24 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


class _Exported(torch.nn.Module):
    """The transformer's own forward with plain tensors in and out: what `torch.export` traces."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        forward = type(self.transformer).forward  # the class's, not the AotForward put on the instance
        return forward(self.transformer, hidden_states, timestep, context, return_dict=False)[0]


class AotForward:
    """Stands in for a transformer's `forward`: each input shape runs a package loaded from (or built into) `cache`.

    Calls it cannot serve (image embeddings, attention kwargs) run the transformer's own forward, eagerly.
    `built`, `loaded`: how many packages this instance compiled, and loaded from disk.
    """

    def __init__(self, transformer: torch.nn.Module, cache: str | os.PathLike):
        self.transformer, self.cache = transformer, Path(cache)
        self.models: dict[str, Any] = {}  # fingerprint key -> loaded package, or None where the build failed
        self.built = self.loaded = 0
        self._lock = threading.Lock()

    def __call__(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ) -> Any:
        eager = encoder_hidden_states_image is not None or attention_kwargs is not None
        model = None if eager else self.model_for(hidden_states, encoder_hidden_states)
        if model is None:
            return type(self.transformer).forward(
                self.transformer, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                return_dict, attention_kwargs,
            )  # fmt: skip
        out = model(hidden_states, timestep.to(torch.int64), encoder_hidden_states)
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)

    def model_for(self, hidden_states: torch.Tensor, context: torch.Tensor) -> Any:
        """The loaded package for these shapes: from memory, from the cache folder, or built now (minutes)."""
        facts = fingerprint(self.transformer, hidden_states, context)
        key = key_of(facts)
        with self._lock:
            if key not in self.models:
                self.models[key] = self._load_or_build(key, facts, hidden_states, context)
            return self.models[key]

    def _load_or_build(self, key: str, facts: dict, hidden_states: torch.Tensor, context: torch.Tensor) -> Any:
        folder = self.cache / key
        if (folder / "fingerprint.json").is_file():
            try:
                if json.loads((folder / "fingerprint.json").read_text()) != facts:
                    raise ValueError("its fingerprint is not this model's")
                model = self._bind(load_package(folder / "package.pt2", hidden_states.device))
                self.loaded += 1
                return model
            except Exception as error:  # a package from elsewhere, truncated, or of another torch: built anew
                log.warning("compiled package %s not used (%s): building it again", folder, error)
        try:
            package = build(self.transformer, hidden_states, context, folder, facts)
        except Exception as error:  # an architecture torch.export cannot trace: this shape runs eagerly
            log.warning("ahead-of-time compilation failed (%s): running eagerly", error)
            return None
        self.built += 1
        return self._bind(load_package(package, hidden_states.device))

    def _bind(self, model: Any) -> Any:
        """Give a loaded package the transformer's own parameters and buffers (no copy)."""
        owned = dict(self.transformer.named_parameters()) | dict(self.transformer.named_buffers())
        constants = {}
        for fqn in model.get_constant_fqns():
            name = fqn.removeprefix("transformer.")
            if name not in owned:
                raise ValueError(f"the package needs {fqn}, which this transformer does not have")
            constants[fqn] = owned[name]
        model.load_constants(constants, check_full_update=True, user_managed=True)
        return model


def load_package(path: Path, device: torch.device) -> Any:
    """A package loaded for `device` (a package built on one card runs on any card of its fingerprint)."""
    index = device.index if device.type == "cuda" and device.index is not None else -1
    return torch._inductor.aoti_load_package(str(path), device_index=index)


def build(
    transformer: torch.nn.Module, hidden_states: torch.Tensor, context: torch.Tensor, folder: Path, facts: dict
) -> Path:
    """Export the transformer at these shapes (dynamic batch), compile it with AOTInductor, and write the package and
    its fingerprint to `folder`, whole or not at all; returns the package's path."""
    rows = max(2, hidden_states.shape[0])  # export specialises a batch of 1; a dynamic batch needs an example of 2+
    example = (
        hidden_states[:1].expand(rows, *hidden_states.shape[1:]).contiguous(),
        torch.full((rows,), 500, dtype=torch.int64, device=hidden_states.device),
        context[:1].expand(rows, *context.shape[1:]).contiguous(),
    )
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(_Exported(transformer), example, dynamic_shapes=({0: batch},) * 3)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(staging / "package.pt2"),
                                                 inductor_configs=dict(INDUCTOR_OPTIONS))  # fmt: skip
        (staging / "fingerprint.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
        if folder.exists():  # a package that did not load, or of another fingerprint: replaced
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / "package.pt2"


def check_device(device: str | torch.device) -> None:
    """ValueError, in one line, for a device the cache does not run on yet (CUDA: see ALLOW_CUDA)."""
    if torch.device(device).type == "cuda" and not ALLOW_CUDA:
        raise ValueError(
            "compile_cache runs on the CPU only for now: on CUDA, PyTorch's loader crashed on any compiled package "
            "(H100, torch 2.11+cu130; docs/performance.md#compiled-once-not-at-every-start): use the fastest preset"
        )


def compile_ahead(transformer: torch.nn.Module, cache: str | os.PathLike) -> AotForward:
    """Make `transformer` run ahead-of-time compiled packages kept in `cache` (a folder), shape by shape; returns the
    stand-in forward. `uncompile_ahead` undoes it."""
    forward = AotForward(transformer, cache)
    transformer.forward = forward
    return forward


def uncompile_ahead(transformer: torch.nn.Module) -> None:
    if isinstance(transformer.__dict__.get("forward"), AotForward):
        del transformer.forward
