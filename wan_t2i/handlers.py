"""The app's one request handler: form or API values -> a GenerationRequest -> a render on the GPU -> outputs.

Every event that samples (the page's Generate, `/generate`, `/compare`) goes through `Handler.endpoint`: the values
are turned into a request and checked against the model and this app's public limits before a GPU is asked for
(ZeroGPU counts every call of the decorated function against a visitor's quota), and every failure comes back as a
one-line message saying what to change.

Renders run one at a time on the handler's own worker thread, and each stops at its next step once it is stopped or
past the wall-clock limit: the per-step callback raises `RenderStopped`. The event function is an async generator
that yields nothing-to-show while it waits, because those are the two places where Gradio 6 ends an event: a cancel
raises CancelledError at its `await`, a client that went away closes it at a `yield`. A plain function in Gradio's
worker thread sees neither and renders on, beside the next one (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gradio as gr
import torch

from wan_t2i.pipeline import Generation, WanT2IPipeline
from wan_t2i.request import GenerationRequest, Limits
from wan_t2i.zerogpu import gpu_seconds, on_gpu

Shape = Callable[[Generation, dict[str, Any]], Any]  # (generation, the request's values) -> the event's outputs
Preview = Callable[[int, int, dict[str, Any]], Any]  # (step, steps, {label: preview image}) -> the event's outputs
PREVIEWS_PER_RENDER = 10  # live previews of a render shown while it runs (each costs one latent -> RGB map)
POLL_SECONDS = 0.1  # how often a waiting event yields to Gradio, which is when Gradio notices a client that left
MAX_MESSAGE_CHARS = 400
log = logging.getLogger(__name__)


class RenderStopped(Exception):
    """Raised from a render's step callback once the render is stopped; the message says why."""


class Render:
    """One render on the worker: `stop(reason)` ends it after the step that is running."""

    def __init__(self, request: GenerationRequest, max_seconds: float):
        self.request = request
        self.max_seconds = max_seconds
        self.deadline: float | None = None  # set when the worker starts it: the wait in line does not count
        self.reason: str | None = None
        self.preview: tuple[int, int, dict[str, Any]] | None = None  # the latest live preview, where asked for

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason

    def check(self, i: int, total: int) -> None:
        """After step `i` of `total`: raise RenderStopped if stopped or past the deadline."""
        if self.reason is not None:
            raise RenderStopped(self.reason)
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RenderStopped(
                f"the render ran past this app's limit of {self.max_seconds:g} s per render (max_render_seconds) "
                f"and was stopped after step {i} of {total}: use fewer steps, fewer samplers or a smaller size"
            )


class Handler:
    """Turns the values of any sampling event into a request, renders it on one worker, and shapes the outputs."""

    def __init__(self, pipe: WanT2IPipeline, limits: Limits | None = None, pair: tuple[str, str] | None = None):
        """Args: `limits` this app's public limits (default: the model's); `pair` the samplers A and B of a
        comparison whose values leave them out (default: legacy_ddim and the model's own)."""
        self.pipe = pipe
        self.limits = limits or Limits.for_model(pipe.defaults)
        self.pair = pair or ("legacy_ddim", pipe.defaults.sampler)
        # One worker thread: whatever Gradio does with its events, two renders never run at once.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-t2i-render")
        self._active: Render | None = None  # the render on the worker, which the step callback checks

        @on_gpu(duration=gpu_seconds)
        def render(
            request: GenerationRequest, progress: gr.Progress | None = None, on_preview: Callable | None = None
        ) -> Generation:
            """The one place that samples; on ZeroGPU it runs on a GPU granted for `gpu_seconds(request)`."""

            def step(i: int, total: int) -> None:
                if progress is not None:
                    progress((i, total), desc="sampling", unit="steps")
                # In ZeroGPU's worker process this is the fork's copy (None): there ZeroGPU's duration bounds it.
                active = self._active
                if active is not None:
                    active.check(i, total)

            if on_preview is None:
                return pipe.generate(request, progress=step)
            every = max(1, request.steps // PREVIEWS_PER_RENDER)
            return pipe.generate(request, progress=step, preview_every=every, on_preview=on_preview)

        self.render = render

    def request(self, values: dict[str, Any]) -> GenerationRequest:
        """A validated request from an event's values; raises ValueError naming what to change.

        `values` holds GenerationRequest fields under their own names, except: `sampler`/`model` (one branch) or
        `sampler_a`, `sampler_b`, `model_a`, `model_b` (a pair; with `side_by_side` false only B renders),
        `resolution` ("832x480", width x height) for height and width, and `randomize_seed`. Values arrive as the
        client sent them (JSON types); None, or a value left out, means the default. A given seed is used unless
        `randomize_seed` is true.
        """
        v = {name: value for name, value in values.items() if value is not None}
        randomize_seed = v.pop("randomize_seed", False)
        if not isinstance(randomize_seed, bool):
            raise ValueError(f"randomize_seed must be true or false, got {randomize_seed!r}")
        if "resolution" in v:
            v["height"], v["width"] = parse_resolution(v.pop("resolution"))
        if "sampler" in values:  # one branch; the model's own sampler by default
            sampler, model = v.pop("sampler", None), v.pop("model", None)
            v["samplers"] = (sampler,) if sampler is not None else None
            v["models"] = (model,) if model is not None else None
        else:
            side = ("a", "b") if v.pop("side_by_side", True) else ("b",)
            v["samplers"] = tuple(v.get(f"sampler_{s}", self.pair[s == "b"]) for s in side)
            v["models"] = tuple(v.get(f"model_{s}", "student") for s in side)
        for name in ("sampler_a", "sampler_b", "model", "model_a", "model_b", "side_by_side"):
            v.pop(name, None)
        for name in ("steps", "seed", "height", "width"):
            v[name] = as_integer(v.get(name))
        if randomize_seed:
            v["seed"] = None
        request = self.pipe.request(v.pop("prompt", None), **v)
        self.limits.check(request)
        return request

    def endpoint(
        self, shape: Shape, inputs: Iterable[str], outputs: int, preview: Preview | None = None
    ) -> Callable[..., AsyncIterator[Any]]:
        """An event function over the keyword values `inputs` (Gradio's `inputs_kwargs`), with `outputs` outputs and
        Gradio's progress bar; it ends, and stops its render, when Gradio cancels it or its client goes away.
        With `preview`, it also yields `preview(step, steps, images)` as the render's live previews arrive.

        Its signature names every input with a default of None, which Gradio's API reads as "optional": an input
        whose component starts empty (the API's seed) may then be left out, and arrives as None (the default).
        """
        nothing = tuple(gr.skip() for _ in range(outputs))

        async def handle(progress: gr.Progress = gr.Progress(), **values: Any) -> AsyncIterator[Any]:  # noqa: B008
            try:
                render = Render(self.request(values), self.limits.max_seconds)
            except ValueError as error:
                raise gr.Error(one_line(error), print_exception=False) from error
            # The context carries Gradio's request, which ZeroGPU reads to charge the visitor.
            job = self._worker.submit(contextvars.copy_context().run, self._run, render, progress, preview is not None)
            waiting = asyncio.wrap_future(job)
            shown = None
            try:
                while not waiting.done():
                    await asyncio.wait([waiting], timeout=POLL_SECONDS)
                    if not waiting.done():
                        latest = render.preview
                        yield nothing if latest is shown or preview is None else preview(*latest)
                        shown = latest
                generation = outcome(job)
            finally:
                render.stop("the event ended before its render: cancelled, or the client went away")
                job.add_done_callback(_retrieve)
                waiting.add_done_callback(_retrieve)  # its asyncio twin holds the same exception
            yield shape(generation, values)

        optional = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in inputs]
        progress = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())
        handle.__signature__ = inspect.Signature([progress, *optional])
        return handle

    def _run(self, render: Render, progress: gr.Progress | None, previews: bool = False) -> Generation:
        """On the worker: render (keeping its latest live preview on `render` if asked), unless it was stopped while
        it waited in line."""
        if render.reason is not None:
            raise RenderStopped(render.reason)
        render.deadline = time.monotonic() + render.max_seconds
        self._active = render
        try:
            if not previews:
                return self.render(render.request, progress)
            return self.render(render.request, progress, lambda *latest: setattr(render, "preview", latest))
        finally:
            self._active = None


def outcome(job: Future) -> Generation:
    """A finished render's generation, or its failure as a one-line gr.Error that says what to change."""
    try:
        return job.result()
    except (ValueError, RenderStopped) as error:  # RenderStopped reaches a client only for the time limit
        raise gr.Error(one_line(error), print_exception=False) from error
    except torch.OutOfMemoryError as error:
        raise gr.Error("out of GPU memory: try a smaller size, fewer samplers, or a GPU with more memory") from error
    except Exception as error:  # a fault of the app, not the request: logged in full, summed up in one line
        log.exception("render failed")
        message = f"the render failed ({one_line(error)}); nothing in the request caused it: try again"
        raise gr.Error(message, print_exception=False) from error


def _retrieve(job: Future | asyncio.Future) -> None:
    """Consume a finished render's exception, so that one nobody waits for any more is not logged as lost."""
    if not job.cancelled():
        job.exception()


def one_line(error: BaseException | str) -> str:
    """A message on one line, with runs of digits past 20 (10**400 echoed back) and its length cut short."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"\d{21,}", lambda m: f"{m[0][:6]}...({len(m[0])} digits)", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def as_integer(value: Any) -> Any:
    """JSON has one number type: pass 20.0 on as 20, leave anything else for the request to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_resolution(value: Any) -> tuple[int, int]:
    """`"832x480"` -> (height 480, width 832)."""
    try:
        width, height = (int(side) for side in str(value).split("x"))
    except ValueError:
        raise ValueError(f"resolution must be WIDTHxHEIGHT in pixels, such as 832x480, got {value!r}") from None
    return height, width
