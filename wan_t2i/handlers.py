"""The app's one request handler: form or API values -> a checked job -> a run on the GPU -> outputs.

Every event that samples (the page's Generate, a lesson, `/generate`, `/compare`, `/sweep`, `/diagnose`) goes through
`Handler.endpoint`: its values become a `Job`, checked against the model and this app's public limits before a GPU
is asked for (ZeroGPU counts every call of the decorated function against a visitor's quota), and every failure comes
back as a one-line message saying what to change.

Jobs run one at a time on the handler's own worker thread. Their GPU side (`wan_t2i.jobs.run_job`) is a generator
that passes on each step, live preview and the result as they come: on ZeroGPU it runs in the worker process
`spaces.GPU` forks, which receives the job and sends back what it yields by pickling, and stops it between two yields
once the event has ended; here it runs in the same process. Either way the event's side checks after every step
whether its job was stopped (cancelled, the client gone, or past the wall-clock limit) and, if so, closes the
generator, which stops the job at its next transformer forward. The event function itself is an async generator that
yields nothing-to-show while it waits, because those are the two places where Gradio 6 ends an event: a cancel raises
CancelledError at its `await`, a client that went away closes it at a `yield` (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gradio as gr
import torch

from wan_t2i import zerogpu
from wan_t2i.jobs import Job, Live, RenderStopped, one_line, raise_failure, run_job
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.request import GenerationRequest, Limits

Shape = Callable[[Any, dict[str, Any]], Any]  # (the job's result, the event's values) -> the event's outputs
Preview = Callable[["Live"], Any]  # a running render's latest live state -> the event's outputs
Prepare = Callable[[dict[str, Any]], "Job"]  # the event's values -> a checked job; ValueError says what to change
POLL_SECONDS = 0.1  # how often a waiting event yields to Gradio, which is when Gradio notices a client that left
GPU_LOCK = "gpu"  # the one Gradio concurrency group of every event that samples: one GPU, one job at a time
log = logging.getLogger(__name__)


class Render:
    """One job on the worker, seen from the event: `stop(reason)` ends it after the step that is running."""

    def __init__(self, job: Job, max_seconds: float):
        self.job = job
        self.max_seconds = max_seconds
        self.deadline: float | None = None  # set when the worker starts it: the wait in line does not count
        self.reason: str | None = None
        self.step: tuple[int, int] = (0, 0)  # the last step reported
        self.live: Live | None = None  # the latest live preview, where asked for

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason

    def check(self) -> None:
        """Raise RenderStopped if stopped or past the deadline."""
        if self.reason is not None:
            raise RenderStopped(self.reason)
        if self.deadline is not None and time.monotonic() > self.deadline:
            i, total = self.step
            where = f" after step {i} of {total}" if total else ""
            raise RenderStopped(
                f"the render ran past this app's limit of {self.max_seconds:g} s per render (max_render_seconds) "
                f"and was stopped{where}: use fewer steps, fewer samplers or a smaller size"
            )


class Handler:
    """Turns the values of any sampling event into a job, runs it on one worker, and shapes the outputs."""

    def __init__(
        self,
        pipe: WanT2IPipeline,
        limits: Limits | None = None,
        pair: tuple[str, str] | None = None,
        gpu: Callable[..., Callable[[Callable], Callable]] | None = None,
    ):
        """Args: `limits` this app's public limits (default: the model's); `pair` the samplers A and B of a
        comparison whose values leave them out (default: legacy_ddim and the model's own); `gpu` the decorator that
        asks for a GPU (`zerogpu.on_gpu`: `spaces.GPU` on ZeroGPU, else nothing)."""
        self.pipe = pipe
        self.limits = limits or Limits.for_model(pipe.defaults)
        self.pair = pair or ("legacy_ddim", pipe.defaults.sampler)
        # One worker thread: whatever Gradio does with its events, two jobs never run at once.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-t2i-render")

        def task(job: Job) -> Iterator[tuple]:  # a generator function, which is what spaces.GPU streams
            yield from run_job(pipe, job)

        self.task = (gpu or zerogpu.on_gpu)(duration=zerogpu.job_seconds)(task)
        self._pinned: dict[tuple, Any] = {}  # job key -> its result (None until rendered), kept for the server's life
        self._shaped: dict[tuple, Any] = {}  # (event, job key) -> a pinned result's outputs, shaped once

    # Pinned results: the opening comparison, the lessons, the doctor's report ----------------------------------------
    def pin(self, job: Job, render_now: bool = False) -> None:
        """Keep `job`'s result for the server's life once it has rendered (now, with `render_now`): an event asking
        for the same job then shows it at once, without the GPU."""
        self._pinned.setdefault(job.key, None)
        if render_now and self._pinned[job.key] is None:
            self._pinned[job.key] = self._run(Render(job, float("inf")), None)

    def pinned(self, job: Job) -> Any:
        """`job`'s pinned result, or None."""
        return self._pinned.get(job.key)

    def is_pinned(self, result: Any) -> bool:
        return any(result is kept for kept in self._pinned.values())

    def shaped(self, shape: Shape, job: Job, result: Any, values: dict[str, Any]) -> Any:
        """`shape(result, values)`, once per event for a pinned result (its files are written once)."""
        if not self.is_pinned(result):
            return shape(result, values)
        key = (shape, job.key)
        if key not in self._shaped:
            self._shaped[key] = shape(result, values)
        return self._shaped[key]

    # The event's side ----------------------------------------------------------------------------------------------
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

    def warm_up(self) -> Any:
        """Render a two-step pair at the model's default size through the GPU side, as a first visitor's request
        would: what compiles lazily (packages of `wan_t2i.aot`) compiles now, at start-up, in the GPU's process.
        If that fails (compiled code that does not load or run on this platform), the transformers run eagerly from
        then on, with a warning, and None is returned: the app starts all the same."""
        request = self.pipe.request("a lake at sunset", samplers=self.pair, steps=2, seed=0)
        try:
            return self._run(Render(Job("warmup", request=request), float("inf")), None)
        except Exception as error:  # noqa: BLE001 - whatever it was, eager is the safe way on
            from wan_t2i.aot import uncompile_ahead
            from wan_t2i.performance import transformers_of

            log.warning("the warm-up failed (%s): the transformers run eagerly, not ahead-of-time compiled", error)
            for transformer in transformers_of(self.pipe.components):
                uncompile_ahead(transformer)
            return None

    def generate_job(self, values: dict[str, Any], previews: bool = False) -> Job:
        return Job("generate", request=self.request(values), previews=previews)

    def endpoint(
        self,
        shape: Shape,
        inputs: Iterable[str],
        outputs: int,
        preview: Preview | None = None,
        prepare: Prepare | None = None,
    ) -> Callable[..., AsyncIterator[Any]]:
        """An event function over the keyword values `inputs` (Gradio's `inputs_kwargs`), with `outputs` outputs and
        Gradio's progress bar; it ends, and stops its job, when Gradio cancels it or its client goes away.

        `prepare` turns the values into a job (default: a generation, `generate_job`); with `preview`, the job
        streams live previews and the event also yields `preview(live)` as they arrive.

        Its signature names every input with a default of None, which Gradio's API reads as "optional": an input
        whose component starts empty (the API's seed) may then be left out, and arrives as None (the default).
        """
        nothing = tuple(gr.skip() for _ in range(outputs))
        if prepare is None:
            prepare = lambda values: self.generate_job(values, previews=preview is not None)  # noqa: E731

        async def handle(progress: gr.Progress = gr.Progress(), **values: Any) -> AsyncIterator[Any]:  # noqa: B008
            try:
                render = Render(prepare(values), self.limits.max_seconds)
            except ValueError as error:
                raise gr.Error(one_line(error), print_exception=False) from error
            if (kept := self.pinned(render.job)) is not None:
                yield self.shaped(shape, render.job, kept, values)
                return
            # The context carries Gradio's request, which ZeroGPU reads to charge the visitor.
            job = self._worker.submit(contextvars.copy_context().run, self._run, render, progress)
            waiting = asyncio.wrap_future(job)
            shown = None
            try:
                while not waiting.done():
                    await asyncio.wait([waiting], timeout=POLL_SECONDS)
                    if not waiting.done():
                        latest = render.live
                        if latest is shown or preview is None:
                            yield nothing
                        else:  # a figure takes a fraction of a second: off the event loop
                            yield await asyncio.to_thread(preview, latest)
                        shown = latest
                result = outcome(job)
            finally:
                render.stop("the event ended before its render: cancelled, or the client went away")
                job.add_done_callback(_retrieve)
                waiting.add_done_callback(_retrieve)  # its asyncio twin holds the same exception
            if render.job.key in self._pinned and self._pinned[render.job.key] is None:
                self._pinned[render.job.key] = result
            yield self.shaped(shape, render.job, result, values)

        optional = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in inputs]
        progress = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())
        handle.__signature__ = inspect.Signature([progress, *optional])
        return handle

    def _run(self, render: Render, progress: gr.Progress | None) -> Any:
        """On the worker: run the job through the GPU side, reporting its steps and keeping its latest live preview,
        until its result; stop it (close the GPU side) as soon as it is stopped."""
        render.check()  # stopped while it waited in line
        render.deadline = time.monotonic() + render.max_seconds
        events = self.task(render.job)
        try:
            for kind, *data in events:
                render.check()
                if kind == "step":
                    render.step = (data[0], data[1])
                    report_progress(progress, render.job, *data)
                elif kind == "preview":
                    render.live = Live(*data)
                elif kind == "failed":
                    raise_failure(*data)
                elif kind == "result":
                    return data[0]
            raise RuntimeError("the GPU side ended without a result")
        finally:
            events.close()  # a stopped job stops at its next forward; on ZeroGPU, after its next yield

    # The GPU side --------------------------------------------------------------------------------------------------


def report_progress(progress: gr.Progress | None, job: Job, i: int, total: int, where: str = "") -> None:
    """Gradio's progress display: the steps, then the decode once the last step is done; a sweep's with the cells
    running (`where`: "cells 1-4/6 · step 12/20")."""
    if progress is None:
        return
    if job.kind == "generate" and i >= total:
        progress(None, desc="decoding the image (VAE, one frame)")
    elif job.kind == "sweep":
        progress((i, total), desc=f"sweep: {where}" if where else "sweep", unit="steps")
    else:
        progress((i, total), desc="sampling", unit="steps")


def outcome(job: Future) -> Any:
    """A finished job's result, or its failure as a one-line gr.Error that says what to change."""
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
    """Consume a finished job's exception, so that one nobody waits for any more is not logged as lost."""
    if not job.cancelled():
        job.exception()


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
