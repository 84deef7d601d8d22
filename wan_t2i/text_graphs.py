"""The text encoder replayed from CUDA graphs, one per input shape: `fastest`'s `text_graphs`.

UMT5-XXL encodes a prompt (64 tokens, see pipeline.TEXT_BUCKET) in a few milliseconds of GPU work but launches its 24
layers' kernels one by one: on an H100 the encoding took 0.027-0.033 s eagerly, bound by those launches, and 0.009 s
replayed from a graph, which launches them all at once (docs/performance.md#the-text-encoder). Prompts are encoded
at a few lengths (multiples of 64), so a few graphs cover every prompt. Each is recorded at the second prompt of its
length, which costs two eager runs and the recording (well under a second); the first runs eagerly. Recording at the
first prompt ran three forwards where one is needed in a new server's first image, for two lengths (the prompt's and
the negative prompt's), and the negative prompt, encoded once and cached by the pipeline, never replays its graph.

The graph runs exactly the kernels the eager forward runs, on copies of the inputs, so the embedding is the same
(benchmarks/gpu.py checks it bit for bit on the GPU). One exception, rounding only: a prompt whose tokens fill its
length exactly has an all-ones mask, which transformers' eager forward drops (checking it on the CPU, which a graph
cannot), free to pick another attention kernel, while the graph keeps the mask. Where a recording fails (a PyTorch
or transformers version whose forward synchronises with the CPU), that shape stays eager, with a warning, and the image
is unchanged.

A graph reads the weights at the addresses they had when it was recorded. Weights replaced since (a layer quantised, the
module moved) would be read from freed memory: the likely cause of an illegal memory access on an H100 in a benchmark
that quantised the encoder after its graphs were recorded (benchmarks/records/2026-12-07-h100-fp8-restart, run3; with
this check it ran through on an H100: 2026-12-08-h100-fp8-fused, run3). So each call compares the module's weights
(which tensors, at which addresses) with those the graphs were recorded on, and drops the graphs where they differ; each
shape is then recorded again as at first. Weights changed in place (`copy_`, load_state_dict) keep their addresses, and
the graphs read the new values.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import torch

logger = logging.getLogger(__name__)

WARMUP_RUNS = 2  # eager runs on a side stream before recording: lazy cuBLAS and allocator set-up must not be recorded
RECORD_AT_CALL = 2  # a shape's graph is recorded at its second call; its first runs eagerly


class GraphedForward:
    """Stands in for `module.forward`: a call with the same input shapes replays that shape's graph.

    Only calls of the pipeline's form, `(input_ids, attention_mask)` on CUDA, are graphed; any other call (other
    arguments, CPU tensors, autograd on) runs the module's own forward.
    """

    def __init__(self, forward: Callable):
        self.forward = forward  # the module's own (bound) forward
        self.graphs: dict[tuple, tuple | None] = {}  # shape key -> (graph, static inputs, output); None: stays eager
        self.calls: dict[tuple, int] = {}  # shape key -> its calls before it was recorded
        self.lock = threading.Lock()  # graphs replay into fixed buffers: one call at a time
        self.module = getattr(forward, "__self__", None)
        self.slots = slots_of(self.module)
        self.recorded_on = weights_key(self.slots)  # the weights the graphs in `graphs` read

    def __call__(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs):
        graphable = (
            not kwargs
            and isinstance(input_ids, torch.Tensor)
            and isinstance(attention_mask, torch.Tensor)
            and input_ids.is_cuda
            and attention_mask.device == input_ids.device
            and not torch.is_grad_enabled()
        )
        if not graphable:
            return self.forward(input_ids, attention_mask, **kwargs)
        key = (
            tuple(input_ids.shape), input_ids.dtype, attention_mask.dtype, input_ids.device,
            torch.is_inference_mode_enabled(),
        )  # fmt: skip
        with self.lock:
            if weights_key(self.slots) != self.recorded_on:  # replaced or moved: the graphs would read freed memory
                self.graphs.clear()
                self.calls.clear()
                self.slots = slots_of(self.module)
                self.recorded_on = weights_key(self.slots)
            if key not in self.graphs:
                self.calls[key] = self.calls.get(key, 0) + 1
                if self.calls[key] < RECORD_AT_CALL:
                    return self.forward(input_ids, attention_mask)
                self.graphs[key] = self.record(input_ids, attention_mask)
            recorded = self.graphs[key]
            if recorded is None:
                return self.forward(input_ids, attention_mask)
            graph, (static_ids, static_mask), output = recorded
            static_ids.copy_(input_ids)
            static_mask.copy_(attention_mask)
            graph.replay()
            # The next replay overwrites the graph's output: hand back a copy.
            return type(output)(last_hidden_state=output.last_hidden_state.clone())

    def record(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple | None:
        """The graph of one forward at these inputs' shapes, with its static inputs and output; None if it fails."""
        static_ids, static_mask = input_ids.clone(), attention_mask.clone()
        try:
            side = torch.cuda.Stream(input_ids.device)
            side.wait_stream(torch.cuda.current_stream(input_ids.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.forward(static_ids, static_mask)
            torch.cuda.current_stream(input_ids.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = self.forward(static_ids, static_mask)
        except Exception as err:  # noqa: BLE001 - any failure to record leaves this shape eager, which is correct
            logger.warning(
                "the text encoder could not be recorded as a CUDA graph at %s tokens (%s: %s); it runs eagerly",
                tuple(input_ids.shape), type(err).__name__, str(err).splitlines()[0] if str(err) else "",
            )  # fmt: skip
            torch.cuda.synchronize(input_ids.device)
            return None
        return graph, (static_ids, static_mask), output


def slots_of(module: torch.nn.Module | None) -> list[dict]:
    """Where `module` and its submodules hold their submodules, parameters and buffers (their dicts, listed once)."""
    if not isinstance(module, torch.nn.Module):
        return []
    return [d for m in module.modules() for d in (m._modules, m._parameters, m._buffers)]


def weights_key(slots: list[dict]) -> list:
    """What the `slots_of` a module hold and where their plain tensors' data lies: it changes when a weight or a layer
    is replaced (quantised) or moved, not when a weight is changed in place. A tensor subclass without storage of its
    own (torchao's) is known by its identity alone. About 0.15 ms for UMT5's 24 layers on a slow CPU."""
    values = [v for slot in slots for v in slot.values()]
    return [*map(id, values), *(v.data_ptr() for v in values if type(v) in (torch.Tensor, torch.nn.Parameter))]


def graph_text_encoder(text_encoder: torch.nn.Module) -> None:
    """Replay `text_encoder`'s forward from CUDA graphs, one recorded per input shape at its second call; idempotent."""
    if not is_graphed(text_encoder):
        text_encoder.forward = GraphedForward(text_encoder.forward)


def ungraph_text_encoder(text_encoder: torch.nn.Module) -> None:
    """Undo `graph_text_encoder`: the module's own forward again, its graphs (and their memory) released."""
    if is_graphed(text_encoder):
        del text_encoder.forward  # the instance attribute; the class's forward shows through again


@contextlib.contextmanager
def eager_text_encoder(text_encoder: torch.nn.Module) -> Iterator[None]:
    """For the duration, the module's own forward; then its graphs again, those recorded already kept."""
    graphed = text_encoder.__dict__.get("forward")
    ungraph_text_encoder(text_encoder)
    try:
        yield
    finally:
        if isinstance(graphed, GraphedForward):
            text_encoder.forward = graphed


def is_graphed(text_encoder: torch.nn.Module) -> bool:
    return isinstance(text_encoder.__dict__.get("forward"), GraphedForward)
