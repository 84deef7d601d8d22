"""Speed and memory settings for a loaded model: regional compilation, CUDA graphs, attention kernel, VAE precision,
offloading.

`apply(components, settings)` changes the loaded modules in place, before the first generation; with `low_memory`,
load with `load_components(..., offload=True)` so that the large modules never have to fit on the GPU at once
(`WanT2IPipeline.from_pretrained(performance="low_memory")` does both). None of this changes what a model computes
beyond bf16 rounding (`benchmarks/gpu.py` checks each image against the eager one, PSNR >= 35 dB), except `fp8`,
which rounds the blocks' matmul inputs and weights to float8 (its error is measured in benchmarks/records/).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from wan_t2i.aot import are_fused, compile_ahead, is_quantized, quantised, repeated_blocks, uncompile_ahead
from wan_t2i.loading import WanComponents
from wan_t2i.single_frame import flatten_vae, unflatten_vae
from wan_t2i.text_graphs import graph_text_encoder, ungraph_text_encoder

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = {"cudnn": torch.nn.attention.SDPBackend.CUDNN_ATTENTION}
RECOMPILE_LIMIT = 64  # one compiled block serves every layer; each (batch, resolution) pair is one more graph
GB = 1e9
# What low_memory needs on the GPU besides the blocks it keeps there: the streamed layers in flight, UMT5's 2.1 GB
# token embedding while a prompt is encoded, activations and the fp32 VAE decode. Measured on the 14B
# (benchmarks/RESULTS.md): 4.6 GB at 480x832 and 9.2 GB at 1024x1024, where the decode dominates; the rest is slack
# for the allocator and for what CUDA itself keeps on a card.
LOW_MEMORY_HEADROOM_GB = 12.0
FP8_MIN_CAPABILITY = (8, 9)  # float8 matrix instructions: Ada (8.9), Hopper (9.0) and later
FP8_ALIGNMENT = 16  # torch._scaled_mm needs both sides of a float8 weight to be multiples of 16
FP8_SCALES = ("row", "tensor")  # the float8 scale granularities torchao offers for dynamic quantisation
# compile_mode "auto" (fastest's): CUDA graphs where the records show they pay. The 1.3B at 480x832, one image, took
# 0.57-0.93x the time without graphs on four H100/H200 hosts (the more launch-bound the host, the more they save),
# while the pair, a 2x2 sweep and live previews took 0.99-1.02x and the peak rose by 10-11 GB (16 -> 28 GB); the
# 14B spends 0.4% of its loop beyond its forwards at 1024x1024, nothing for graphs to save, and graphs were never
# measured on a card under 80 GB (docs/performance.md#cuda-graphs).
GRAPHS_MAX_PARAMS = 3e9
GRAPHS_MIN_GPU_GB = 64.0
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class PerformanceSettings:
    """How to run a loaded model; every field's off value leaves the modules exactly as loaded."""

    compile: bool = False  # torch.compile each transformer block (regional: one block compiled, reused by all)
    # torch.compile mode; "reduce-overhead" adds CUDA graphs, "auto" adds them where they pay (`graphs_pay`)
    compile_mode: str = "default"
    fullgraph: bool = True  # fail loudly on a graph break instead of silently running part of a block eagerly
    vae_dtype: torch.dtype | None = None  # None keeps the VAE's loaded dtype (fp32 by default)
    # One frame through the VAE with 2D convolutions (wan_t2i.single_frame): 0.3-0.65x its time, the same to rounding
    vae_2d: bool = False
    tf32: bool = False  # True: TF32 for float32 matmuls (process-wide); False leaves PyTorch's setting alone
    attention: str | None = None  # "cudnn": prefer cuDNN's fused attention (faster on Hopper); None: PyTorch's order
    low_memory: bool = False  # stream the layers of the transformers and the text encoder from pinned CPU memory
    resident_gb: float = 0.0  # with low_memory: GB of transformer blocks kept on the GPU instead, split between them
    fp8: bool = False  # torchao float8 dynamic quantisation (per-row scales) of the blocks' linear layers; no undo
    fp8_scales: str = "row"  # with fp8: "row" (a scale per row: torchao's, diffusers' documented choice) or "tensor"
    # A folder: run the transformers ahead-of-time compiled (wan_t2i.aot), each input shape's package built once and
    # loaded from here by every later start; in place of `compile`, which traces anew at every start.
    compile_cache: str | None = None
    # Replay the text encoder from CUDA graphs, one per prompt length (wan_t2i.text_graphs); on CUDA only
    text_graphs: bool = False
    # With compile or compile_cache: Inductor's multi_kernel for the blocks, each reduction compiled both persistent
    # (one pass over a row held in registers) and looped, the faster kept by timing both at its first call; GPU only
    multi_kernel: bool = False
    # diffusers' fused attention projections (`fuse_projections`): one q|k|v linear in self-attention and one k|v in
    # cross-attention, so that fp8 quantises each attention's input once, not three (two) times; no undo
    fused_projections: bool = False

    def __post_init__(self):
        if self.compile and self.low_memory:
            raise ValueError("compile and low_memory cannot be combined: offloaded blocks move weights inside forward")
        if self.text_graphs and self.low_memory:
            raise ValueError("text_graphs and low_memory cannot be combined: low_memory streams the text encoder")
        if self.fp8 and self.low_memory:
            raise ValueError("fp8 and low_memory cannot be combined: low_memory streams the bf16 layers as loaded")
        if self.compile_cache is not None and self.low_memory:
            raise ValueError(
                "compile_cache cannot be combined with low_memory: its compiled code runs the layers where they were "
                "loaded, on one device"
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.fp8_scales not in FP8_SCALES:
            raise ValueError(f"fp8_scales must be one of {', '.join(FP8_SCALES)}, got {self.fp8_scales!r}")
        if not _is_finite_number(self.resident_gb) or self.resident_gb < 0:
            raise ValueError(f"resident_gb must be a number of GB >= 0, got {self.resident_gb!r}")
        if self.attention is not None and self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention must be None or one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}"
            )

    @classmethod
    def default_for(cls, device: str | torch.device) -> PerformanceSettings:
        """What costs nothing up front and changes the image only by rounding: the VAE's one-frame convolutions in
        2D everywhere (`vae_2d`), and TF32 for the fp32 parts on CUDA.

        Compilation is off by default: it costs tens of seconds before the first image (see benchmarks/RESULTS.md),
        which a one-image CLI run never earns back. Long-running servers should use `fastest`.
        """
        return cls(tf32=True, vae_2d=True) if torch.device(device).type == "cuda" else cls(vae_2d=True)

    @classmethod
    def fastest(cls, device: str | torch.device) -> PerformanceSettings:
        """For a server that renders many images: compiled blocks (with CUDA graphs where they pay: `graphs_pay`),
        the text encoder replayed from CUDA graphs, cuDNN attention on Hopper, bf16 VAE decode."""
        device = torch.device(device)
        if device.type != "cuda":
            return cls.default_for(device)  # on CPU, compiling and bf16 are slower at the sizes that run there
        # cuDNN's fused attention was measured faster on Hopper (sm90) only; Blackwell (sm100, ZeroGPU's sm120) and
        # older cards keep PyTorch's own order.
        hopper = torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] == 9
        attention = "cudnn" if hopper else None
        return cls(
            compile=True, compile_mode="auto", vae_dtype=torch.bfloat16, vae_2d=True, tf32=True, attention=attention,
            text_graphs=True,
        )  # fmt: skip

    @classmethod
    def low_memory_for(cls, device: str | torch.device, gpu_gb: float | None = None) -> PerformanceSettings:
        """For GPUs of 24 GB: transformer and text-encoder layers streamed from pinned CPU memory as they run, but
        for as many transformer blocks as fit in `gpu_gb` (default: the card's memory) less LOW_MEMORY_HEADROOM_GB,
        which stay on the GPU: a 24 GB card keeps 12 GB of blocks there and streams only the rest."""
        device = torch.device(device)
        if device.type != "cuda":
            return cls.default_for(device)
        if gpu_gb is None:  # unknown without a visible card: stream everything, which fits any
            gpu_gb = torch.cuda.get_device_properties(device).total_memory / GB if torch.cuda.is_available() else 0.0
        return cls(low_memory=True, tf32=True, vae_2d=True, resident_gb=max(0.0, gpu_gb - LOW_MEMORY_HEADROOM_GB))

    @classmethod
    def fp8_for(cls, device: str | torch.device) -> PerformanceSettings:
        """`fastest` with the blocks' linear layers in float8 (torchao, per-row scales) and the attention
        projections fused (`fused_projections`): for GPUs with FP8 matrix units (compute capability >= 8.9).
        ValueError, in one line, where it cannot run: on the CPU, on an older GPU, or without torchao (the `gpu`
        extra).

        It pays where the matmuls are large: on an H200 the 14B at 1024x1024 took 0.67x the bf16 time, while the
        1.3B at 480x832 took 1.68x (the activations' quantisation costs more than small fp8 matmuls save); its
        first image compiles for 10-20 s on an H100 (docs/performance.md#fp8)."""
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(f"the fp8 preset needs a CUDA GPU with FP8 (compute capability >= 8.9), not {device}")
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(
                f"the fp8 preset needs compute capability >= 8.9 (Ada, Hopper or later); "
                f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}: use fastest"
            )
        if importlib.util.find_spec("torchao") is None:
            raise ValueError("the fp8 preset needs torchao: pip install 'wan-t2i[gpu]' (or torchao)")
        # Fused projections: each attention input quantised once; the 14B's forward at 1024x1024 0.2605 s against
        # 0.2646 s unfused, in one run on an H100 (benchmarks/records/2026-12-08-h100-fp8-fused); in bf16 no gain
        return replace(cls.fastest(device), fp8=True, compile_mode="default", fused_projections=True)


PRESETS = {
    "default": PerformanceSettings.default_for,
    "fastest": PerformanceSettings.fastest,
    "low_memory": PerformanceSettings.low_memory_for,
    "fp8": PerformanceSettings.fp8_for,
}

# The presets that fall back to the default off CUDA, and why they would not help there.
GPU_ONLY_PRESETS = {
    "fastest": "compiled blocks and a bf16 VAE are slower than eager fp32 on the CPU at the sizes that run there",
    "low_memory": "it streams layers from CPU memory to a GPU; here the model is in CPU memory already",
}


def preset(name: str, device: str | torch.device, gpu_memory_gb: float | None = None) -> PerformanceSettings:
    """The named preset (`default`, `fastest`, `low_memory`, `fp8`) for `device`; the CLI's and app's --performance.

    `gpu_memory_gb`: with `low_memory`, the GPU memory to plan for instead of the whole card (a shared card).
    Off CUDA, `fastest` and `low_memory` are the default preset: a warning (logger `wan_t2i.performance`) says so,
    once per call, in `fallback_note`'s words.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown performance preset {name!r}; choose one of {', '.join(PRESETS)}")
    if gpu_memory_gb is not None:
        if not _is_finite_number(gpu_memory_gb) or gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb must be a number of GB > 0, got {gpu_memory_gb!r}")
        if name != "low_memory":
            raise ValueError(f"gpu_memory_gb is for the low_memory preset; {name!r} keeps the whole model on the GPU")
        settings = PerformanceSettings.low_memory_for(device, gpu_gb=float(gpu_memory_gb))
    else:
        settings = PRESETS[name](device)
    note = fallback_note(name, device)
    if note:  # logged, not raised: the run goes on with the default; the CLI and the app show it on stderr
        logger.warning(note)
    return settings


def fallback_note(name: str, device: str | torch.device) -> str | None:
    """One line saying that preset `name` changes nothing on `device` and the default runs instead, and why; None
    where the preset does what its name says (or fails: fp8 off a GPU is an error, not a fallback)."""
    device = torch.device(device)
    if name not in GPU_ONLY_PRESETS or device.type == "cuda":
        return None
    return (
        f"performance preset {name!r} is for CUDA GPUs: on {device} the default preset runs instead "
        f"({GPU_ONLY_PRESETS[name]})"
    )


def _is_finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def transformers_of(components: WanComponents) -> list[torch.nn.Module]:
    """Every transformer a generation may run: student or experts, and the teacher's."""
    c = components
    candidates = (c.transformer, c.transformer_2, c.teacher_transformer, c.teacher_transformer_2)
    return [m for m in candidates if m is not None]


def apply(components: WanComponents, settings: PerformanceSettings) -> None:
    """Put `settings` into effect on `components` in place; process-wide switches (TF32, attention order) too.

    Call it before the first generation: compilation happens lazily at the first forward of each shape.
    """
    apply_switches(settings)
    if settings.vae_dtype is not None and components.vae.dtype != settings.vae_dtype:
        components.vae.to(settings.vae_dtype)
    if settings.vae_2d:
        flatten_vae(components.vae)
    else:
        unflatten_vae(components.vae)
    if settings.text_graphs and components.device.type == "cuda":
        graph_text_encoder(components.text_encoder)
    else:
        ungraph_text_encoder(components.text_encoder)
    for transformer in transformers_of(components):
        if settings.fused_projections:
            if is_quantized(transformer) and not are_fused(transformer):
                raise ValueError(
                    "this model's blocks are in fp8 unfused, which cannot be undone: load it again to fuse"
                )
            fuse_projections(transformer)
        elif are_fused(transformer):
            raise ValueError(
                "this model's attention projections are fused, which cannot be undone: load it again for other settings"
            )
        if settings.fp8:
            # Under a compile cache, as inference tensors: the compiled blocks' guards on a torchao weight, made in
            # inference mode and read back by a later start, hold only for weights made in it (wan_t2i.aot).
            with torch.inference_mode(settings.compile_cache is not None):
                quantize_blocks_fp8(transformer, scales=settings.fp8_scales)
        elif is_quantized(transformer):
            raise ValueError("this model's blocks are in fp8, which cannot be undone: load it again for other settings")
        uncompile_ahead(transformer)
        if settings.compile_cache is not None:  # ahead of time, in place of tracing: see wan_t2i.aot
            uncompile_blocks(transformer)
            compile_ahead(transformer, settings.compile_cache, options=inductor_options(settings))
        elif settings.compile:
            mode = settings.compile_mode
            if mode == "auto":
                mode = "reduce-overhead" if graphs_pay(transformer, components.device) else "default"
            compile_blocks(transformer, mode=mode, fullgraph=settings.fullgraph, options=inductor_options(settings))
        else:
            uncompile_blocks(transformer)
    if settings.low_memory and components.device.type == "cuda":
        transformers = transformers_of(components)
        budget = settings.resident_gb * GB / len(transformers)
        for transformer in transformers:
            stream_layers(transformer, components.device, resident=resident_blocks(transformer, budget))
        stream_layers(components.text_encoder, components.device)
        torch.cuda.empty_cache()


def apply_switches(settings: PerformanceSettings) -> None:
    """The process-wide part of `settings` (TF32, the attention backends' order), which needs no model: `apply` sets
    it, and `from_pretrained` before the loading, so that compiled blocks warmed up meanwhile run as they will."""
    if settings.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if settings.attention is not None:
        prefer_attention_backend(settings.attention)


def inductor_options(settings: PerformanceSettings) -> dict | None:
    """The Inductor options `settings` compile the blocks with, beyond their compile mode's; None: none."""
    return {"triton.multi_kernel": 1} if settings.multi_kernel else None


def graphs_pay(transformer: torch.nn.Module, device: str | torch.device) -> bool:
    """compile_mode "auto"'s rule: CUDA graphs for a transformer of at most GRAPHS_MAX_PARAMS parameters on a CUDA
    card of at least GRAPHS_MIN_GPU_GB, where the records measured them paying (see the constants)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    card_gb = torch.cuda.get_device_properties(device).total_memory / GB
    return card_gb >= GRAPHS_MIN_GPU_GB and sum(p.numel() for p in transformer.parameters()) <= GRAPHS_MAX_PARAMS


def resident_blocks(transformer: torch.nn.Module, budget_bytes: float) -> list[torch.nn.Module]:
    """As many of the transformer's blocks as `budget_bytes` holds, spread evenly over its depth (so that the
    streamed blocks' copies overlap the compute of resident ones, not only of each other)."""
    blocks = repeated_blocks(transformer)
    if not blocks:
        return []
    size = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    keep = min(len(blocks), int(budget_bytes // size)) if size else len(blocks)
    return [blocks[(2 * j + 1) * len(blocks) // (2 * keep)] for j in range(keep)]


def stream_layers(
    module: torch.nn.Module,
    device: torch.device,
    *,
    use_stream: bool | None = None,
    resident: Sequence[torch.nn.Module] = (),
) -> None:
    """diffusers' group offloading at leaf level: every weight in pinned CPU memory, each layer copied to `device`
    just before it runs, the next one copied in on a side stream while this one computes. Works wherever the module
    is (CPU-loaded or on the GPU). The `resident` submodules are moved to `device` whole and never streamed.

    Leaf level, not block level: block level moves everything outside the blocks (UMT5's 2.1 GB token embedding,
    Wan's timestep and text embedders) without the side stream, from pageable memory, at every forward.
    `use_stream` defaults to True on CUDA; without it, layers are moved in turn.
    """
    device = torch.device(device)
    use_stream = device.type == "cuda" if use_stream is None else use_stream
    if is_offloaded(module):
        return
    from diffusers.hooks import apply_group_offloading

    # diffusers hooks every layer it finds under `module`, and records their order at the first forward for the
    # prefetching: resident parts are taken out of the tree while it looks, so that it never sees them.
    with _detached(module, resident):
        apply_group_offloading(
            module,
            onload_device=device,
            offload_type="leaf_level",
            use_stream=use_stream,
            non_blocking=use_stream,
            record_stream=use_stream,
        )
    for part in resident:
        part.to(device)


@contextlib.contextmanager
def _detached(module: torch.nn.Module, parts: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Replace `parts` (submodules of `module`) by empty placeholders for the duration, then put them back."""
    places = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent._modules.items()
        if any(child is part for part in parts)
    ]
    try:
        for parent, name, _ in places:
            parent._modules[name] = torch.nn.Identity()
        yield
    finally:
        for parent, name, child in places:
            parent._modules[name] = child


def compile_blocks(
    transformer: torch.nn.Module, *, mode: str = "default", fullgraph: bool = True, options: dict | None = None
) -> None:
    """Regional compilation: each block's forward is compiled once per input shape and shared by all layers.
    `options`: Inductor settings for these blocks alone (torch.compile's `options`), added to `mode`'s."""
    dynamo_config = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    if options and mode != "default":  # torch.compile takes a mode or options: the mode's own options, and these
        options = torch._inductor.list_mode_options(mode) | options
    choice = {"options": options} if options else {"mode": mode}
    transformer.compile_repeated_blocks(dynamic=False, fullgraph=fullgraph, **choice)
    if "reduce-overhead" in mode:
        # CUDA graphs reuse their output memory at the next replay, and each block's output is the next block's
        # input: every block call starts a new graph step and hands back a copy of its output. Done outside the
        # compiled call, which Dynamo would otherwise trace (it refuses the step marker).
        for block in repeated_blocks(transformer):
            block._compiled_call_impl = _graph_step_per_call(block._compiled_call_impl)


def _graph_step_per_call(compiled: Callable) -> Callable:
    def call(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return out.clone() if isinstance(out, torch.Tensor) else type(out)(o.clone() for o in out)

    call.marks_graph_steps = True
    return call


def quantize_blocks_fp8(transformer: torch.nn.Module, scales: str = "row") -> None:
    """torchao's float8 dynamic activation + weight quantisation with per-row scales (what diffusers' TorchAoConfig
    calls "float8dq_e4m3_row"; `scales="tensor"`: one scale per tensor, "float8dq_e4m3_tensor") on every linear layer
    of the repeated blocks, in place; the embedders, the output projection and layers whose sides are not multiples
    of 16 stay as they are. Quantised blocks are left alone."""
    if scales not in FP8_SCALES:
        raise ValueError(f"scales must be one of {', '.join(FP8_SCALES)}, got {scales!r}")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    def fits(module: torch.nn.Module, _name: str) -> bool:
        return (
            isinstance(module, torch.nn.Linear)
            and not quantised(module.weight)
            and module.in_features % FP8_ALIGNMENT == 0
            and module.out_features % FP8_ALIGNMENT == 0
        )

    # set_inductor_config=False: torchao would otherwise turn on Inductor's coordinate-descent tuning for the whole
    # process, which re-tuned every fp8 kernel at each start (115 s of a compile-cache restart's first image on an
    # H100, benchmarks/records/2026-12-07-h100-fp8-restart) and bought nothing measurable: the 14B image at 1024x1024
    # 0.673x stock with the same knobs without it, 0.68x with it (H100, across runs)
    granularity = PerRow() if scales == "row" else PerTensor()
    config = Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
    for block in repeated_blocks(transformer):
        quantize_(block, config, filter_fn=fits)


def fuse_projections(transformer: torch.nn.Module) -> None:
    """diffusers' fused attention projections: one linear for q, k and v in self-attention and one for k and v in
    cross-attention (`fuse_qkv_projections`), then the separate layers dropped, so that the weights are not held
    twice. The same numbers (each output column is its own dot product), one GEMM where there were three (two in
    cross-attention). No undo: load again for the separate layers. Fused already: nothing to do."""
    if are_fused(transformer):
        return
    transformer.fuse_qkv_projections()
    for module in transformer.modules():
        if not getattr(module, "fused_projections", False):
            continue
        fused = ("to_k", "to_v") if module.is_cross_attention else ("to_q", "to_k", "to_v")
        if getattr(module, "added_kv_proj_dim", None) is not None:
            fused += ("add_k_proj", "add_v_proj")
        for name in fused:
            if hasattr(module, name):
                delattr(module, name)


def uncompile_blocks(transformer: torch.nn.Module) -> None:
    """Undo `compile_blocks`: nn.Module.compile keeps the compiled call in `_compiled_call_impl` (no public undo)."""
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


def is_compiled(transformer: torch.nn.Module) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in transformer.modules())


def is_offloaded(module: torch.nn.Module) -> bool:
    """Whether diffusers' group offloading is on for `module`."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return _is_group_offload_enabled(module)


def prefer_attention_backend(name: str) -> None:
    """Put one SDPA backend first in PyTorch's (process-wide) order; inputs it cannot take fall to the next."""
    if not hasattr(torch._C, "_set_sdp_priority_order"):  # PyTorch < 2.6
        logger.warning("this PyTorch cannot reorder attention backends; keeping its default order")
        return
    first = int(ATTENTION_BACKENDS[name])
    getattr(torch.backends.cuda, f"enable_{name}_sdp")(True)
    torch._C._set_sdp_priority_order([first] + [b for b in torch._C._get_sdp_priority_order() if b != first])
