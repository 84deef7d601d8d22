"""A stand-in for Hugging Face's `spaces` package on ZeroGPU, for tests: what the app's GPU side must survive there.

ZeroGPU (spaces 0.51, `spaces/zero/wrappers.py`) runs a function decorated with `spaces.GPU` in a worker process
forked from the server: the arguments go to it pickled, what a generator function yields comes back pickled, and
once the caller closes its generator the worker closes the task's generator after its next yield (`stop_event`).
This double does the same with a process forked per call, so that a test fails where the real one would: an
argument or a result that does not pickle, a stop that needs shared memory, a job that does not stop at a yield.
The real service (its GPU scheduling and quotas) cannot run here.
"""

from __future__ import annotations

import inspect
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

FORK = multiprocessing.get_context("fork")


class FakeSpaces:
    """`spaces` as `wan_t2i.zerogpu` uses it: `GPU(duration=...)`; records each call's duration and child pid."""

    def __init__(self) -> None:
        self.durations: list[int] = []
        self.children: list[Any] = []

    def GPU(self, duration: Callable[..., int]) -> Callable[[Callable], Callable]:  # noqa: N802 - the real name
        def decorate(task: Callable) -> Callable:
            if not inspect.isgeneratorfunction(task):
                raise NotImplementedError("the app's GPU side is a generator function; so is this double's")

            def handler(*args: Any, **kwargs: Any) -> Iterator[Any]:
                self.durations.append(duration(*args, **kwargs))
                results, stop = FORK.SimpleQueue(), FORK.Event()
                payload = pickle.dumps((args, kwargs))  # what spaces' arg_queue.put does, here in the caller
                child = FORK.Process(target=_worker, args=(task, payload, results, stop), daemon=True)
                child.start()
                self.children.append(child)
                received: queue.Queue = queue.Queue()
                # As spaces' fill_yield_queue: a thread reads everything the worker sends, to its end, even after the
                # caller has stopped listening (else the worker would block on a full pipe).
                threading.Thread(target=_drain, args=(results, received), daemon=True).start()
                try:
                    while True:
                        kind, value = received.get()
                        if kind == "end":
                            return
                        if kind == "error":
                            raise RuntimeError(f"ZeroGPU worker error: {value}")
                        yield value
                finally:  # as spaces does on GeneratorExit: the worker closes the task after its next yield
                    stop.set()

            return handler

        return decorate


def _drain(results: Any, received: queue.Queue) -> None:
    while True:
        kind, value = pickle.loads(results.get())
        received.put((kind, value))
        if kind in ("end", "error"):
            return


def _worker(task: Callable, payload: bytes, results: Any, stop: Any) -> None:
    args, kwargs = pickle.loads(payload)
    generator = task(*args, **kwargs)
    try:
        for value in generator:
            if stop.is_set():
                generator.close()
                break
            results.put(pickle.dumps(("yield", value)))
    except Exception as error:  # spaces sends the exception back; so does this
        results.put(pickle.dumps(("error", repr(error))))
        return
    results.put(pickle.dumps(("end", None)))
