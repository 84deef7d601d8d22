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

On CUDA, AOTInductor's loader crashed on every package (torch 2.11.0+cu130, H100: benchmarks/records/
2026-12-07-h100-aoti-bare), so there the cache keeps blocks instead (`PrecompiledBlocks`): the repeated block that
`torch.compile`'s regional compilation compiles once for all layers, compiled by Dynamo's own ahead-of-time path
(`torch.compile(...).aot_compile`, `save_compiled_function`) and loaded by a later start with
`torch.compiler.load_compiled_function`, no tracing and none of AOTInductor's C++ runtime. One function per input
shape, taking the block as its first argument, serves every block; it is filed under the same kind of fingerprint
(the block's input shapes, the grad mode, TF32 and the attention backends' order too, and its weights' kinds) and
checks its own guards before it is used. Blocks quantised to fp8 by the fp8 preset are kept the same way, once
`make_serialisable` has mended what keeps Dynamo from saving their guards. A restart reads its blocks in a background
thread while it loads the weights (`preload`). The kernels the blocks were compiled to are kept in the folder too
(Inductor's and Triton's caches, `keep_kernels`): without them a restart compiles them again.

On a ZeroGPU Space (`wan_t2i.zerogpu.aoti`), which runs no `torch.compile`, the cache keeps packages, compiled and
loaded by ZeroGPU's own functions (`spaces`' `aoti_compile_and_save` and `LazyAOTIModel`), and builds them only
while warming up (`warming_up`: the app's start-up job, which asks ZeroGPU for the time): a visitor's request never
waits minutes for a build, and a shape without a package runs eagerly.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

# Loading any AOTInductor package on CUDA crashes the process (SIGSEGV in PyTorch's own loader, `_load_aoti`) with
# torch 2.11.0+cu130 on an H100, even a single nn.Linear packaged with AOTInductor's defaults:
# benchmarks/records/2026-12-07-h100-aoti. A crash cannot be caught, so on CUDA the cache keeps Dynamo-compiled
# blocks instead (PrecompiledBlocks); where `python -m benchmarks.aoti_cuda --sizes linear` passes, set True to use
# packages on CUDA too.
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
_WARMING_UP = [0]  # how many `warming_up` blocks are open, in any thread (a pair's branches may run in others)


@contextlib.contextmanager
def warming_up() -> Iterator[None]:
    """While inside: a stand-in that builds only at warm-up (on ZeroGPU) builds what it lacks."""
    _WARMING_UP[0] += 1
    try:
        yield
    finally:
        _WARMING_UP[0] -= 1


def may_build(at_warm_up_only: bool) -> bool:
    """Whether a missing package may be built now: always, or only inside `warming_up`."""
    return not at_warm_up_only or _WARMING_UP[0] > 0


def model_facts(transformer: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """What any code compiled for `transformer` on `device` is built for: the torch version, the device (the CPU, or
    the CUDA card's name and capability), the transformer's dtype and config, and whether its attention projections
    are fused (`performance.fuse_projections`)."""
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    facts = {
        "format": FORMAT,
        "torch": torch.__version__,
        "device": device_facts(device),
        "dtype": str(transformer.dtype),
        "config": json.loads(json.dumps(config, default=str)),
    }
    if are_fused(transformer):
        facts["fused_projections"] = True  # other layers, another graph (named only where fused: others stay found)
    return facts


def device_facts(device: torch.device) -> str:
    """The device as a fingerprint names it: the CPU, or the CUDA card's name and compute capability."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda {props.name} sm{props.major}{props.minor}"
    return device.type


def fingerprint(transformer: torch.nn.Module, hidden_states: torch.Tensor, context: torch.Tensor) -> dict[str, Any]:
    """What a package for `transformer` at these input shapes is built for (see the module's docstring)."""
    return model_facts(transformer, hidden_states.device) | {
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

    Calls it cannot serve (image embeddings, attention kwargs) run the transformer's own forward, eagerly, and so do
    shapes with no package while building is not allowed (`at_warm_up_only`, outside `warming_up`). `built`,
    `loaded`: how many packages this instance compiled, and loaded from disk. `zerogpu`: ZeroGPU's AoT module
    (`wan_t2i.zerogpu.aoti`), which then compiles and loads the packages, or None.
    """

    def __init__(
        self, transformer: torch.nn.Module, cache: str | os.PathLike, *, zerogpu: Any = None,
        at_warm_up_only: bool = False,
    ) -> None:  # fmt: skip
        self.transformer, self.cache = transformer, Path(cache)
        self.zerogpu, self.at_warm_up_only = zerogpu, at_warm_up_only
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
                loaded = self._load_or_build(key, facts, hidden_states, context)
                if loaded is _NOT_YET:  # looked for again at the next call: warm-up may build it meanwhile
                    return None
                self.models[key] = loaded
            return self.models[key]

    def _load_or_build(self, key: str, facts: dict, hidden_states: torch.Tensor, context: torch.Tensor) -> Any:
        folder = self.cache / key
        if (folder / "fingerprint.json").is_file():
            try:
                check_filed(folder, facts)
                model = self._load(folder / "package.pt2", hidden_states.device)
                self.loaded += 1
                return model
            except Exception as error:  # a package from elsewhere, truncated, or of another torch: built anew
                log.warning("compiled package %s not used (%s): building it again", folder, error)
        if not may_build(self.at_warm_up_only):
            log.info("no compiled package for these shapes yet (it is built at warm-up): running eagerly")
            return _NOT_YET
        try:
            package = build(self.transformer, hidden_states, context, folder, facts, zerogpu=self.zerogpu)
        except Exception as error:  # an architecture torch.export cannot trace: this shape runs eagerly
            log.warning("ahead-of-time compilation failed (%s): running eagerly", error)
            return None
        self.built += 1
        return self._load(package, hidden_states.device)

    def _load(self, package: Path, device: torch.device) -> Any:
        """The package, ready to run on the transformer's own parameters and buffers (bound, not copied): loaded
        here, or on ZeroGPU by ZeroGPU's lazy loader, in each GPU worker at its first call."""
        if self.zerogpu is not None:
            return self.zerogpu.LazyAOTIModel(package).with_weights(self._constants())
        return self._bind(load_package(package, device))

    def _constants(self) -> dict[str, torch.Tensor]:
        """The transformer's parameters and buffers by the names a package gives them (under `_Exported`)."""
        owned = dict(self.transformer.named_parameters()) | dict(self.transformer.named_buffers())
        return {f"transformer.{name}": tensor for name, tensor in owned.items()}

    def _bind(self, model: Any) -> Any:
        """Give a loaded package the transformer's own parameters and buffers (no copy)."""
        owned = self._constants()
        constants = {}
        for fqn in model.get_constant_fqns():
            if fqn not in owned:
                raise ValueError(f"the package needs {fqn}, which this transformer does not have")
            constants[fqn] = owned[fqn]
        model.load_constants(constants, check_full_update=True, user_managed=True)
        return model


def load_package(path: Path, device: torch.device) -> Any:
    """A package loaded for `device` (a package built on one card runs on any card of its fingerprint)."""
    index = device.index if device.type == "cuda" and device.index is not None else -1
    return torch._inductor.aoti_load_package(str(path), device_index=index)


def build(
    transformer: torch.nn.Module, hidden_states: torch.Tensor, context: torch.Tensor, folder: Path, facts: dict,
    *, zerogpu: Any = None,
) -> Path:  # fmt: skip
    """Export the transformer at these shapes (dynamic batch), compile it with AOTInductor (through ZeroGPU's
    `aoti_compile_and_save` where `zerogpu` is its module), and write the package and its fingerprint to `folder`,
    whole or not at all; returns the package's path."""
    rows = max(2, hidden_states.shape[0])  # export specialises a batch of 1; a dynamic batch needs an example of 2+
    example = (
        hidden_states[:1].expand(rows, *hidden_states.shape[1:]).contiguous(),
        torch.full((rows,), 500, dtype=torch.int64, device=hidden_states.device),
        context[:1].expand(rows, *context.shape[1:]).contiguous(),
    )
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(_Exported(transformer), example, dynamic_shapes=({0: batch},) * 3)
    with filed(folder, facts) as staging:
        if zerogpu is not None:  # writes <dir>/root/package.pt2 (wan_t2i.zerogpu.AOTI_MODULE)
            zerogpu.aoti_compile_and_save(staging / "zerogpu", program, dict(INDUCTOR_OPTIONS))
            (staging / "zerogpu" / "root" / "package.pt2").rename(staging / "package.pt2")
            shutil.rmtree(staging / "zerogpu")
        else:
            torch._inductor.aoti_compile_and_package(program, package_path=str(staging / "package.pt2"),
                                                     inductor_configs=dict(INDUCTOR_OPTIONS))  # fmt: skip
    return folder / "package.pt2"


@contextlib.contextmanager
def filed(folder: Path, facts: dict) -> Iterator[Path]:
    """A staging folder to write compiled code into; on leaving without an error it becomes `folder`, with `facts`
    as its fingerprint.json, replacing what was there (code that did not load, or of another fingerprint): the
    folder is written whole or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        yield staging
        (staging / "fingerprint.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_filed(folder: Path, facts: dict) -> None:
    """ValueError unless `folder` was filed for exactly `facts` (see `filed`)."""
    if json.loads((folder / "fingerprint.json").read_text()) != facts:
        raise ValueError("its fingerprint is not this model's")


_NOT_YET = object()  # AotForward: no package for these shapes, and none may be built now


def repeated_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer's repeated blocks (diffusers' `_repeated_blocks`: what regional compilation compiles once)."""
    names = set(getattr(transformer, "_repeated_blocks", None) or [])
    return [m for m in transformer.modules() if type(m).__name__ in names]


class PrecompiledBlocks:
    """Stands in for every repeated block's forward: each input shape runs one function compiled by Dynamo ahead of
    time, loaded from (or built into) `cache`, with the block as its first argument (see the module's docstring).

    A shape whose function cannot be built runs eagerly, with a warning. `built`, `loaded`: how many functions this
    instance compiled, and loaded from disk; `preloaded`: how many of those loaded had been read ahead by `preload`.
    """

    def __init__(self, transformer: torch.nn.Module, cache: str | os.PathLike, options: dict | None = None):
        self.transformer, self.cache = transformer, Path(cache)
        self.options = options  # Inductor options the blocks are compiled with (a part of each fingerprint)
        for block in repeated_blocks(transformer):
            make_serialisable(block)
        # block_inputs -> loaded function, or None where the build failed: a block call hashes no fingerprint
        self.functions: dict[tuple, Any] = {}
        self.built = self.loaded = self.preloaded = 0
        self._lock = threading.Lock()

    def __call__(self, block: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        function = self.function_for(block, args, kwargs)
        if function is None:
            return type(block).forward(block, *args, **kwargs)
        return function(block, *args, **kwargs)

    def function_for(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        inputs = block_inputs(args, kwargs)  # with the transformer, all a fingerprint holds: one function each
        if inputs in self.functions:  # 30-40 block calls a forward
            return self.functions[inputs]
        with self._lock:
            if inputs not in self.functions:
                facts = block_fingerprint(self.transformer, block, args, kwargs, self.options)
                self.functions[inputs] = self._load_or_build(key_of(facts), facts, block, args, kwargs)
            return self.functions[inputs]

    def _load_or_build(self, key: str, facts: dict, block: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        folder = self.cache / key
        if (folder / "fingerprint.json").is_file():
            try:
                check_filed(folder, facts)
                function, preloaded = preloaded_block(folder)
                if not preloaded:
                    function = read_block(folder, facts)
                if not function.guard_check(block, *args, **kwargs):
                    raise ValueError("its guards do not hold for these inputs")
                self.loaded += 1
                self.preloaded += preloaded
                return function
            except Exception as error:  # from elsewhere, truncated, or of another torch: built anew
                log.warning("compiled block %s not used (%s): building it again", folder, error)
        try:
            function = build_block(block, args, kwargs, folder, facts, self.options)
        except Exception as error:  # a block Dynamo cannot compile ahead of time: this shape runs eagerly
            log.warning("ahead-of-time compilation of the blocks failed (%s): running them eagerly", error)
            return None
        self.built += 1
        return function


def read_block(folder: Path, facts: dict) -> Any:
    """The compiled function filed in `folder` (by `build_block`) for `facts`, read from disk; its guards not yet
    checked. Read under the grad and inference modes it was built for: its guards on tensors are made relative to the
    reading thread's modes, so one read elsewhere (in `preload`'s thread) would not hold for the block's calls."""
    with torch.inference_mode(facts["inference_mode"]), torch.set_grad_enabled(facts["grad"]):
        with open(folder / "block.bin", "rb") as file:
            return torch.compiler.load_compiled_function(file)


# Blocks being read ahead by `preload`, by folder, each taken (and forgotten) by the first PrecompiledBlocks that needs
# it. One reader thread: reading imports Inductor and loads the Triton kernels, work that would only contend with
# itself (and with the weights' loading) in more threads.
_PRELOADS: dict[Path, Future] = {}
_PRELOADS_LOCK = threading.Lock()
_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-t2i-preload")


def preload(cache: str | os.PathLike, device: str | torch.device, warm: bool = True) -> list[Path]:
    """Start reading, in a background thread, every compiled block filed in `cache` for this torch and `device`;
    returns their folders. A restart calls it before it loads the weights (`WanT2IPipeline.from_pretrained` does), so
    that what reading a block costs (seconds on a GPU: Inductor's import, the block's Triton kernels) overlaps the
    loading. With `warm`, on a GPU, each block read is also run once on a stand-in (`warm_block`) in that thread,
    so that what its first call costs overlaps the loading too. A PrecompiledBlocks takes a block read ahead in place
    of reading it then, and checks it the same way (its fingerprint against the model's, its guards against the
    inputs); one that failed to read is read or built again as usual, and one no model asks for is left unused."""
    keep_kernels(cache)
    where = device_facts(torch.device(device))
    folders = []
    for path in sorted(Path(cache).glob("*/fingerprint.json")):
        try:
            facts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # PrecompiledBlocks rebuilds what is damaged, when it is asked for
        wanted = {"kind": "block", "format": FORMAT, "torch": torch.__version__, "device": where}
        if not isinstance(facts, dict) or any(facts.get(k) != v for k, v in wanted.items()):
            continue
        folder = path.parent.resolve()
        with _PRELOADS_LOCK:
            if folder not in _PRELOADS:
                _PRELOADS[folder] = _READER.submit(read_ahead, folder, facts, warm)
        folders.append(folder)
    return folders


def read_ahead(folder: Path, facts: dict, warm: bool) -> Any:
    """`preload`'s work for one block: read it, and with `warm`, on a GPU, run it once on a stand-in."""
    function = read_block(folder, facts)
    device = device_of(facts["args"])
    if warm and device is not None and device.type == "cuda":
        warm_block(function, facts)
    return function


def describes_tensor(description: Any) -> bool:
    """Whether a description of an input, as fingerprint.json holds `_describe`'s, is a tensor's: [device, shape,
    dtype]."""
    return (
        isinstance(description, list)
        and len(description) == 3
        and isinstance(description[0], str)
        and isinstance(description[1], list)
    )


def device_of(description: Any) -> torch.device | None:
    """The device of the first tensor in `_describe`'s description of inputs (as fingerprint.json holds it)."""
    if describes_tensor(description):
        return torch.device(description[0])
    if isinstance(description, list):
        for item in description:
            if (device := device_of(item)) is not None:
                return device
    return None


# The transformer whose one block stands in for a model's blocks at a warm-up (`stand_in_block`), by block class
STAND_IN_MODELS = {"WanTransformerBlock": "WanTransformer3DModel"}


def warm_block(function: Any, facts: dict) -> bool:
    """Run a compiled block `function` (filed with `facts`) once, on a stand-in block (`stand_in_block`) and random
    inputs of the shapes it was compiled for, and wait for it; True if it ran. What a new process's first call of a
    block costs beyond its compute (on an H100, about 1 s of a restart's first image at 1.3B: loading its kernels
    onto the GPU, timing those Triton kernels that have several configurations, the first calls into cuBLAS and
    cuDNN) is then paid here, in `preload`'s thread while the weights load, and the function keeps what it chose.
    Skipped (False) where no stand-in can be made, where the process's TF32 and attention order are not those the
    block was compiled with (`performance.apply_switches` sets them before the loading), or where its guards do not
    hold; a failure is logged, not raised: the first image then pays as before."""
    try:
        *_, tf32, order = block_inputs((), {})  # the process-wide part of what the block was compiled for
        if tf32 != facts["tf32"] or list(order) != facts["attention_order"]:
            return False
        block = stand_in_block(facts)
        if block is None:
            return False
        with torch.inference_mode(facts["inference_mode"]), torch.set_grad_enabled(facts["grad"]):
            # made here, as the model's inputs are (inference tensors under inference mode: the guards tell)
            args = [example_input(d) for d in facts["args"]]
            kwargs = {name: example_input(d) for name, d in facts["kwargs"].items()}
            if not function.guard_check(block, *args, **kwargs):
                return False
            function(block, *args, **kwargs)
        if (device := device_of(facts["args"])).type == "cuda":
            torch.cuda.synchronize(device)
        return True
    except Exception as error:  # noqa: BLE001 - a warm-up; the first image then pays for it
        log.warning(
            "compiled block's warm-up failed (%s: %s); the first image pays for it", type(error).__name__, error
        )
        return False


def stand_in_block(facts: dict) -> torch.nn.Module | None:
    """A block of the architecture `facts` names, with random weights, on the device of its inputs, made what the
    model's blocks were when compiled (attention projections fused, linears in fp8) so that its weights' kinds are
    those filed; None where it cannot be (an unknown block class, other weights' kinds)."""
    import diffusers

    from wan_t2i import performance

    name = STAND_IN_MODELS.get(facts["block"])
    if name is None:
        return None
    device = device_of(facts["args"])
    if device is None:
        return None
    with torch.device("meta"):
        model = getattr(diffusers, name).from_config(dict(facts["config"], num_layers=1))
    dtype = getattr(torch, facts["dtype"].removeprefix("torch."))
    keep = getattr(model, "_keep_in_fp32_modules", None) or []  # as from_pretrained keeps them (diffusers' rule)
    for parameter_name, parameter in model.named_parameters():
        fp32 = any(module in parameter_name.split(".") for module in keep)
        parameter.data = parameter.data.to(torch.float32 if fp32 else dtype)
    model.eval().requires_grad_(False)  # as loaded (`loading.freeze`): the guards hold for nothing else
    if facts.get("fused_projections"):
        performance.fuse_projections(model)
    block = repeated_blocks(model)[0]
    block.to_empty(device=device)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(std=0.02)
    if any("torchao" in kind for kind in facts["weights"]):
        scales = "row" if any("blocks of [1," in kind for kind in facts["weights"]) else "tensor"
        with torch.inference_mode():
            performance.quantize_blocks_fp8(model, scales=scales)
        block = repeated_blocks(model)[0]
    make_serialisable(block)
    return block if weight_kinds(block) == facts["weights"] else None


def example_input(description: Any) -> Any:
    """Random inputs as `_describe` described them (a tensor: [device, shape, dtype]; a tuple of them; a literal)."""
    if isinstance(description, str):
        return ast.literal_eval(description)
    if describes_tensor(description):
        device, shape, dtype = description
        dtype = getattr(torch, dtype.removeprefix("torch."))
        if dtype.is_floating_point:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.zeros(shape, dtype=dtype, device=device)
    return tuple(example_input(d) for d in description)


def keep_kernels(cache: str | os.PathLike) -> None:
    """Keep Inductor's and Triton's caches in `cache`/inductor, for this whole process. A block saved by Dynamo holds
    its graph and guards, but its kernels are compiled again where they are not found in these caches: on the CPU
    every C++ kernel of the block (a second start of the tiny model compiled 27 of them into a new, empty Inductor
    cache), and on an H100 the fp8 block's, which took 100 s of a restart's first forward
    (benchmarks/records/2026-12-07-h100-ttfi-disk). Kept beside the blocks, they come with the folder to a restart or
    to a new machine; Inductor's and Triton's own keys tell kernels of other torch versions or cards apart."""
    inductor = str(Path(cache).resolve() / "inductor")
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") == inductor:
        return
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        log.info("compile_cache: Inductor's cache moves from %s to %s", os.environ["TORCHINDUCTOR_CACHE_DIR"], inductor)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor
    os.environ["TRITON_CACHE_DIR"] = os.path.join(inductor, "triton")
    utils = sys.modules.get("torch._inductor.utils")  # what Inductor already derived from the old folder, forgotten
    if utils is not None and hasattr(utils, "clear_caches"):
        utils.clear_caches()


def preloaded_block(folder: Path) -> tuple[Any, bool]:
    """(the function `preload` read from `folder`, True), waiting for it if it is being read; (None, False) if it was
    not asked for or not yet started (then the caller reads it itself, rather than wait behind other blocks). Raises
    what reading it raised."""
    with _PRELOADS_LOCK:
        future = _PRELOADS.pop(folder.resolve(), None)
    if future is None or future.cancel():
        return None, False
    return future.result(), True


def _describe(value: Any) -> Any:
    """A block input as the fingerprint keeps it: a tensor's device, shape and dtype; other values by repr."""
    if isinstance(value, torch.Tensor):
        return (str(value.device), tuple(value.shape), str(value.dtype))
    if isinstance(value, tuple | list):
        return tuple(_describe(v) for v in value)
    return repr(value)


def block_inputs(args: tuple, kwargs: dict) -> tuple:
    """What besides the model a compiled block depends on, as a hashable tuple: its inputs (`_describe`), the grad
    mode, TF32, and the attention backends' order (the attention kernel is chosen when the block is traced)."""
    order = tuple(torch._C._get_sdp_priority_order()) if hasattr(torch._C, "_get_sdp_priority_order") else ()
    return (_describe(args), tuple((k, _describe(v)) for k, v in sorted(kwargs.items())),
            torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.backends.cuda.matmul.allow_tf32,
            tuple(int(b) for b in order))  # fmt: skip


def block_fingerprint(
    transformer: torch.nn.Module, block: torch.nn.Module, args: tuple, kwargs: dict, options: dict | None = None
) -> dict:
    """What a compiled block is built for: `model_facts`, the block's class, its weights' kinds (`weight_kinds`: bf16,
    or quantised to fp8 and how), `block_inputs` and the Inductor `options` it is compiled with (only where there are
    any, so that blocks built without stay found), as JSON values."""
    tensor = next(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
    facts = model_facts(transformer, tensor.device)
    arguments, keywords, grad, inference, tf32, order = block_inputs(args, kwargs)
    facts |= {"kind": "block", "block": type(block).__name__, "weights": weight_kinds(block), "args": arguments,
              "kwargs": dict(keywords), "grad": grad, "inference_mode": inference, "tf32": tf32,
              "attention_order": order}  # fmt: skip
    if options:
        facts["inductor_options"] = dict(sorted(options.items()))
    return json.loads(json.dumps(facts))  # tuples as lists: as read back from fingerprint.json


def weight_kinds(block: torch.nn.Module) -> list[str]:
    """The kinds of tensor the block's parameters are: their dtype, and for a quantised one (a torchao tensor, as
    the fp8 preset makes) its class, torchao's version and the shape of its scale blocks (per row or per tensor)."""
    kinds = set()
    for parameter in block.parameters():
        kind = str(parameter.dtype)
        if quantised(parameter):
            version = getattr(sys.modules.get(type(parameter).__module__.partition(".")[0]), "__version__", "")
            kind = f"{type(parameter).__module__}.{type(parameter).__qualname__} {version} {kind}"
            stored = getattr(getattr(parameter, "qdata", None), "dtype", None)
            kind += f" stored as {stored}, blocks of {list(getattr(parameter, 'block_size', []))}"
        kinds.add(kind)
    return sorted(kinds)


def quantised(tensor: torch.Tensor) -> bool:
    """Whether a weight is a torchao quantised tensor (as the fp8 preset makes them)."""
    return type(tensor).__module__.startswith("torchao")


def are_fused(transformer: torch.nn.Module) -> bool:
    """Whether the transformer's attention projections are fused (`performance.fuse_projections`)."""
    return any(getattr(module, "fused_projections", False) for module in transformer.modules())


def is_quantized(transformer: torch.nn.Module) -> bool:
    """Whether any of the transformer's weights is a torchao quantised tensor (the fp8 preset was applied)."""
    return any(quantised(p) for p in transformer.parameters())


def make_serialisable(block: torch.nn.Module) -> None:
    """Let Dynamo save the guards of a block whose linears torchao quantised (the fp8 preset), which it cannot as
    torchao leaves them (torch 2.11-2.13, torchao 0.17-0.18): its guard pickler copies every tensor in the guards to
    the meta device with `torch.empty_like`, which torchao's tensors do not implement, and it cannot pickle the
    `extra_repr` that torchao binds to each quantised Linear (a functools.partial made a method). So: `empty_like`
    for those tensor classes, built from their inner tensors as their own `__tensor_flatten__` lists them
    (registered through torchao's `implements`, and only where torchao has none), and the instances' `extra_repr`
    dropped, for the Linear's own (the weight's description is all it loses). A block of plain tensors is left
    as it is."""
    for module in block.modules():
        if isinstance(module.__dict__.get("extra_repr"), types.MethodType):
            del module.extra_repr
    for kind in {type(p) for p in block.parameters() if quantised(p)}:
        table = getattr(kind, "_ATEN_OP_TABLE", {}).get(kind, {})
        if hasattr(kind, "implements") and torch.ops.aten.empty_like.default not in table:
            kind.implements([torch.ops.aten.empty_like.default])(_empty_like)


def _empty_like(_func: Any, _types: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """`torch.empty_like` of a torchao tensor: the same class around empty copies of its inner tensors."""
    tensor, kwargs = args[0], {k: v for k, v in kwargs.items() if k != "memory_format"}
    names, context = tensor.__tensor_flatten__()
    inner = {name: torch.empty_like(getattr(tensor, name), **kwargs) for name in names}
    return type(tensor).__tensor_unflatten__(inner, context, tensor.shape, tensor.stride())


def build_block(
    block: torch.nn.Module, args: tuple, kwargs: dict, folder: Path, facts: dict, options: dict | None = None
) -> Any:
    """Compile `block`'s forward for these inputs with Dynamo's ahead-of-time path (and Inductor `options`) and write
    it, with its fingerprint, to `folder`, whole or not at all; returns the compiled function (the block is its first
    argument)."""
    if hasattr(torch._dynamo.config, "enable_aot_compile"):
        torch._dynamo.config.enable_aot_compile = True
    # The block's stand-in forward leads to this cache's lock, which the saved guards could not hold: set aside.
    stand_in = block.__dict__.pop("forward", None)
    try:
        compile = torch.compile(type(block).forward, fullgraph=True, dynamic=False, options=options)
        compiled = compile.aot_compile(((block, *args), kwargs))
    finally:
        if stand_in is not None:
            block.forward = stand_in
    with filed(folder, facts) as staging:
        compiled.save_compiled_function(str(staging / "block.bin"))
    return compiled


class _BlockForward(functools.partial):
    """A block's forward while PrecompiledBlocks stands in for it (a partial that `uncompile_ahead` recognises)."""


def compile_ahead(
    transformer: torch.nn.Module, cache: str | os.PathLike, kind: str | None = None, options: dict | None = None
) -> AotForward | PrecompiledBlocks:
    """Make `transformer` run ahead-of-time compiled code kept in `cache` (a folder), shape by shape: AOTInductor
    packages of the whole forward (`kind="packages"`, the CPU's default) or Dynamo-compiled blocks (`"blocks"`,
    CUDA's default, where AOTInductor's loader crashed; ALLOW_CUDA=True makes packages CUDA's default again; and
    always for blocks quantised to fp8, which packages cannot hold). `options`: Inductor options for blocks (packages
    are compiled with INDUCTOR_OPTIONS). Returns the stand-in; `uncompile_ahead` undoes it."""
    in_fp8 = is_quantized(transformer)
    kind = kind or ("blocks" if in_fp8 else default_kind(next(transformer.parameters()).device))
    if kind == "packages" and in_fp8:
        raise ValueError("AOTInductor packages cannot hold quantised (fp8) weights: compile_ahead(kind='blocks')")
    if kind == "packages":
        zerogpu = zerogpu_aoti()
        forward = AotForward(transformer, cache, zerogpu=zerogpu, at_warm_up_only=zerogpu is not None)
        transformer.forward = forward
        return forward
    if kind != "blocks":
        raise ValueError(f"kind must be 'packages' or 'blocks', got {kind!r}")
    keep_kernels(cache)
    blocks = PrecompiledBlocks(transformer, cache, options)
    for block in repeated_blocks(transformer):
        block.forward = _BlockForward(blocks, block)
    return blocks


def default_kind(device: str | torch.device) -> str:
    """What `compile_ahead` keeps for a transformer on `device` unless told: "blocks" on CUDA, "packages" elsewhere
    and on ZeroGPU (which runs no torch.compile, and compiles packages with its own functions)."""
    if zerogpu_aoti() is not None:
        return "packages"
    return "blocks" if torch.device(device).type == "cuda" and not ALLOW_CUDA else "packages"


def zerogpu_aoti() -> Any:
    """ZeroGPU's AoT module on a ZeroGPU Space that has it, else None (`wan_t2i.zerogpu.aoti`)."""
    from wan_t2i import zerogpu  # here: zerogpu's imports reach the request module, which needs none of this

    return zerogpu.aoti()


def ahead_of(transformer: torch.nn.Module) -> AotForward | PrecompiledBlocks | None:
    """What `compile_ahead` put on `transformer`, or None."""
    forward = transformer.__dict__.get("forward")
    if isinstance(forward, AotForward):
        return forward
    for block in repeated_blocks(transformer):
        forward = block.__dict__.get("forward")
        if isinstance(forward, _BlockForward):
            return forward.func
    return None


def uncompile_ahead(transformer: torch.nn.Module) -> None:
    if isinstance(transformer.__dict__.get("forward"), AotForward):
        del transformer.forward
    for block in repeated_blocks(transformer):
        if isinstance(block.__dict__.get("forward"), _BlockForward):
            del block.forward
