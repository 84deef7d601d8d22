"""A job of the app and its GPU side: what one event asks of the GPU, run on the pipeline in the process's GPU
thread while a generator passes its steps, live previews and result on as they come.

`run_job` is the one function an app decorates to ask for a GPU (`wan_t2i.zerogpu.on_gpu`). On ZeroGPU it runs in
the worker process `spaces.GPU` forks: the job goes there pickled, what it yields comes back pickled, and closing it
(which `spaces` does between two yields once the server side has stopped listening) stops the job at its next
transformer forward. Everything here is picklable for that reason: plain dataclasses, tuples, images, tensors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from wan_t2i import aot
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.request import GenerationRequest

PREVIEWS_PER_RENDER = 10  # live previews of a render shown while it runs (each costs one latent -> RGB map)
TICK_SECONDS = 0.25  # how often the GPU side reports in while its job takes no step (the doctor), so it can stop
MAX_MESSAGE_CHARS = 400
log = logging.getLogger(__name__)


class RenderStopped(Exception):
    """Raised in a stopped job at its next transformer forward, and on the event's side once it is stopped."""


@dataclass(frozen=True)
class Job:
    """What one event asks of the GPU, whole and picklable (ZeroGPU sends it to its worker process)."""

    kind: str  # "generate", "sweep", "diagnose" or "warmup"
    request: GenerationRequest | None = None  # generate and sweep: the request (a sweep's base settings)
    axes: dict[str, list] | None = None  # sweep: axis -> values
    max_cells: int | None = None  # sweep: the app's cell limit
    previews: bool = False  # generate: stream live previews of the predicted clean images

    @property
    def key(self) -> tuple:
        """What the job renders, whether or not it streams previews: equal keys give the same result."""
        axes = tuple((name, tuple(values)) for name, values in (self.axes or {}).items())
        return (self.kind, self.request, axes, self.max_cells)


@dataclass
class Live:
    """A render's latest live state, where previews were asked for: its step and each branch's preview image and
    latent std per step so far."""

    step: int
    total: int
    images: dict[str, Any]
    latent_std: dict[str, list[float]]


class GpuThread:
    """One long-lived thread that runs every job of a process, one after another.

    Not a new thread per job: CUDA's libraries keep per-thread state (cuBLAS and cuDNN handles, with their
    workspaces and plans), which every new thread builds again. On an H100 the 1.3B's A/B pair at 480x832 took 1.02 s
    in a new thread against 0.86 s in one that had run before (benchmarks/records/2026-12-07-h100-auto-graphs).
    Jobs take turns on the GPU anyway (the app's GPU lock); a daemon thread, so that a render never holds up exit.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="wan-t2i-gpu", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            self.tasks.get()()

    def submit(self, task: Callable[[], Any]) -> Future:
        """Queue `task`; the Future holds what it returns or raises once it has run."""
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(task())
            except BaseException as error:  # the thread serves on; the error goes to whoever waits
                future.set_exception(error)

        self.tasks.put(run)
        return future


_gpu_thread: GpuThread | None = None
_gpu_thread_lock = threading.Lock()


def gpu_thread() -> GpuThread:
    """This process's GPU thread, started at its first job; a process forked for a job (ZeroGPU's worker) starts
    its own, since a fork keeps no thread but the one that forked."""
    global _gpu_thread
    with _gpu_thread_lock:
        if _gpu_thread is None or _gpu_thread.pid != os.getpid():
            _gpu_thread = GpuThread()
        return _gpu_thread


def run_job(pipe: WanT2IPipeline, job: Job) -> Iterator[tuple]:
    """The GPU side of every job: run `job` on `pipe` in the process's GPU thread and yield ("step", i, total),
    ("preview", ...) and, while nothing happens, ("tick",); then ("result", value), or ("failed", kind, message) for
    an error. Closing this generator stops the job at its next transformer forward."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    stopping, running = threading.Event(), threading.Event()

    def work() -> None:
        running.set()
        try:
            if stopping.is_set():  # stopped while it waited for its turn
                raise RenderStopped("stopped")
            events.put(("result", execute(pipe, job, events.put)))
        except BaseException as error:  # every failure goes back to the event, as a message
            events.put(failure(error))
        finally:
            running.clear()

    # Only while this job runs: a job stopped as it waits must not stop the one running before it.
    with stop_forwards(pipe, lambda: running.is_set() and stopping.is_set()):
        done = gpu_thread().submit(work)
        try:
            while True:
                try:
                    event = events.get(timeout=TICK_SECONDS)
                except queue.Empty:
                    event = ("tick",)
                yield event
                if event[0] in ("result", "failed"):
                    return
        finally:
            stopping.set()
            done.result()  # `work` sends every failure back as an event: nothing is raised here


def execute(pipe: WanT2IPipeline, job: Job, emit: Callable[[tuple], None]) -> Any:
    """Run one job on the pipeline, emitting its steps (and live previews) as they happen."""
    step = lambda i, total: emit(("step", i, total))  # noqa: E731
    if job.kind == "sweep":
        from wan_t2i.sweep import MAX_CELLS

        cells = lambda p: emit(("step", p.done, p.total, str(p)))  # noqa: E731  "cells 1-4/6 · step 12/20"
        return pipe.sweep(job.request, job.axes, max_cells=job.max_cells or MAX_CELLS, on_progress=cells)
    if job.kind == "diagnose":
        from wan_t2i.doctor.diagnose import diagnose  # the module: the package attribute is the module

        return diagnose(pipe=pipe, with_teacher=pipe.components.has_teacher)
    if job.kind == "warmup":  # where ZeroGPU's packages are built (wan_t2i.aot.warming_up), with its time asked for
        with aot.warming_up():
            return pipe.generate(job.request, progress=step)
    if not job.previews:
        return pipe.generate(job.request, progress=step)
    diagnostics: dict = {}

    def preview(i: int, total: int, images: dict[str, Any]) -> None:
        stds = {label: d.std_so_far() for label, d in diagnostics.items()}
        emit(("preview", i, total, images, stds))

    every = max(1, job.request.steps // PREVIEWS_PER_RENDER)
    return pipe.generate(
        job.request, progress=step, preview_every=every, on_preview=preview,
        on_step=lambda i, total, diags: diagnostics.update(diags),
    )  # fmt: skip


@contextlib.contextmanager
def stop_forwards(pipe: WanT2IPipeline, stop: Callable[[], bool]) -> Iterator[None]:
    """While inside: every transformer forward of `pipe`, on every device, raises RenderStopped once `stop()` is
    true."""

    def check(module: torch.nn.Module, args: Any) -> None:
        if stop():
            raise RenderStopped("stopped")

    c = pipe.components
    models = [c.transformer, c.transformer_2, c.teacher_transformer, c.teacher_transformer_2]
    for replica in pipe.replicas[1:]:  # copies on further devices (wan_t2i.replicas): each stops at its own forward
        models += [m for experts in replica.experts.values() for m in (experts.high, experts.low)]
    hooks = [model.register_forward_pre_hook(check) for model in dict.fromkeys(models) if model is not None]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def failure(error: BaseException) -> tuple[str, str, str]:
    """("failed", kind, message) for a job's exception, as the event's side reports it (see `raise_failure`)."""
    if isinstance(error, RenderStopped):
        return ("failed", "stopped", str(error))
    if isinstance(error, ValueError):
        return ("failed", "request", one_line(error))
    if isinstance(error, torch.OutOfMemoryError):
        return ("failed", "memory", one_line(error))
    return ("failed", "fault", "".join(traceback.format_exception(error)))


def raise_failure(kind: str, message: str) -> None:
    """Raise what a failed job's side reported: the request's own error, or what happened, in one line."""
    if kind == "stopped":
        raise RenderStopped(message)
    if kind == "request":
        raise ValueError(message)
    if kind == "memory":
        raise torch.OutOfMemoryError(message)
    log.error("render failed:\n%s", message)
    raise RuntimeError(message.strip().splitlines()[-1])


def one_line(error: BaseException | str) -> str:
    """A message on one line, with runs of digits past 20 (10**400 echoed back) and its length cut short."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"\d{21,}", lambda m: f"{m[0][:6]}...({len(m[0])} digits)", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
