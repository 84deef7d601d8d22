"""The app's one request handler: form or API values -> a GenerationRequest -> a render on the GPU -> outputs.

Every event that samples (the page's Generate, `/generate`, `/compare`) goes through `Handler.run`: the values are
turned into a request and validated before a GPU is asked for (ZeroGPU counts every call of the decorated function
against a visitor's quota), and every ValueError comes back as a one-line message for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import torch

from wan_t2i.pipeline import Generation, WanT2IPipeline
from wan_t2i.request import GenerationRequest
from wan_t2i.zerogpu import gpu_seconds, on_gpu

Shape = Callable[[Generation, dict[str, Any]], Any]  # (generation, the request's values) -> the event's outputs


class Handler:
    """Turns the values of any sampling event into a request, renders it, and shapes the outputs."""

    def __init__(self, pipe: WanT2IPipeline):
        self.pipe = pipe

        @on_gpu(duration=gpu_seconds)
        def render(request: GenerationRequest, progress: gr.Progress | None = None) -> Generation:
            """The one place that samples; on ZeroGPU it runs on a GPU granted for `gpu_seconds(request)`."""

            def step(i: int, total: int) -> None:
                if progress is not None:
                    progress((i, total), desc="sampling", unit="steps")

            return pipe.generate(request, progress=step)

        self.render = render

    def request(self, values: dict[str, Any]) -> GenerationRequest:
        """A validated request from an event's values; raises ValueError naming what to change.

        `values` holds GenerationRequest fields under their own names, except: `sampler`/`model` (one branch) or
        `sampler_a`, `sampler_b`, `model_a`, `model_b` (a pair; with `side_by_side` false only B renders),
        `resolution` ("832x480", width x height) for height and width, and `randomize_seed`.
        """
        v = dict(values)
        randomize_seed = v.pop("randomize_seed", False)
        if not isinstance(randomize_seed, bool):
            raise ValueError(f"randomize_seed must be true or false, got {randomize_seed!r}")
        if "resolution" in v:
            v["height"], v["width"] = parse_resolution(v.pop("resolution"))
        if "sampler" in v:
            v["samplers"], v["models"] = (v.pop("sampler"),), (v.pop("model", "student"),)
        else:
            side = ("a", "b") if v.pop("side_by_side", True) else ("b",)
            v["samplers"] = tuple(v.pop(f"sampler_{s}") for s in side)
            v["models"] = tuple(v.get(f"model_{s}", "student") for s in side)
            for s in ("a", "b"):
                v.pop(f"model_{s}", None)
        for name in ("steps", "seed", "height", "width"):
            v[name] = as_integer(v.get(name))
        if randomize_seed:
            v["seed"] = None
        return self.pipe.request(v.pop("prompt", None), **v)

    def run(self, values: dict[str, Any], progress: gr.Progress | None = None) -> Generation:
        """Validate, then render; every ValueError becomes a message for the user and the app goes on serving."""
        try:
            return self.render(self.request(values), progress)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except torch.OutOfMemoryError as error:
            raise gr.Error("out of GPU memory: try a smaller resolution, or a GPU with more memory") from error

    def endpoint(self, shape: Shape) -> Callable[..., Any]:
        """An event function over keyword values (Gradio's `inputs_kwargs`), with Gradio's progress bar."""

        def handle(progress: gr.Progress = gr.Progress(), **values: Any) -> Any:  # noqa: B008 (Gradio's way)
            return shape(self.run(values, progress), values)

        return handle


def as_integer(value: Any) -> Any:
    """JSON has one number type: pass 20.0 on as 20, leave anything else for the request to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_resolution(value: str) -> tuple[int, int]:
    """`"832x480"` -> (height 480, width 832)."""
    try:
        width, height = (int(side) for side in str(value).split("x"))
    except ValueError:
        raise ValueError(f"resolution must be WIDTHxHEIGHT in pixels, such as 832x480, got {value!r}") from None
    return height, width
