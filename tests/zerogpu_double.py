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
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

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


class FakeAoti(types.ModuleType):
    """ZeroGPU's ahead-of-time compilation module (`spaces.zero.torch.aoti`, spaces 0.51.3) as `wan_t2i.aot` uses it:
    `aoti_compile_and_save` and `LazyAOTIModel`. The real module cannot be imported with a CPU-only torch (its
    import reads `torch.version.cuda` and `torch._C._cuda_init`), so the tests put this double in its place in
    `sys.modules`. It does what the real one does, with PyTorch's public equivalents: the program compiled with
    AOTInductor under the given options and ZeroGPU's (weights out of the package, no constant folding), written to
    `<dir>/root/package.pt2` (or `<dir>/submodules/<name>/`); the package loaded at its model's first call and the
    given tensors bound to it without a copy. Each compile and load is written as a line to `log`, which a forked
    worker's calls reach too. `broken`: a platform where its packages do not load (as AOTInductor's loader crashed
    on an H100 machine, benchmarks/records/2026-12-07-h100-ttfi-disk): the compile writes a package of no use, the
    load raises. The real module ran on that H100 in `python -m benchmarks.aoti_cuda --options zerogpu`.
    """

    OVERRIDES = {  # spaces 0.51.3's INDUCTOR_CONFIGS_OVERRIDES, less those aoti_compile_and_package sets itself
        "aot_inductor.package_constants_in_so": False,
        "always_keep_tensor_constants": True,
        "joint_graph_constant_folding": False,
    }

    def __init__(self, log: Path, *, broken: bool = False) -> None:
        super().__init__("spaces.zero.torch.aoti")
        self.log, self.broken = log, broken
        double = self

        class LazyAOTIModel:
            def __init__(self, archive_file: Any) -> None:
                self.archive_file, self.compiled, self.weights = archive_file, None, None

            def __call__(self, weights: dict, check_full_update: bool, *args: Any, **kwargs: Any) -> Any:
                if self.compiled is None:
                    if double.broken:
                        double.note(f"failed to load {self.archive_file}")
                        raise RuntimeError("the package's loader failed")
                    self.compiled = torch._inductor.aoti_load_package(str(self.archive_file))
                    double.note(f"loaded {self.archive_file}")
                if self.weights is not weights:
                    fqns = set(self.compiled.get_constant_fqns())
                    constants = {name: tensor for name, tensor in weights.items() if name in fqns}
                    self.compiled.load_constants(constants, check_full_update=check_full_update, user_managed=True)
                    self.weights = weights
                return self.compiled(*args, **kwargs)

            def with_weights(self, weights: dict) -> Callable:
                first = [True]

                def call(*args: Any, **kwargs: Any) -> Any:
                    check, first[0] = first[0], False
                    return self(weights, check, *args, **kwargs)

                return call

        self.LazyAOTIModel = LazyAOTIModel

    def aoti_compile_and_save(
        self,
        package_dir: Any,
        exported_program: Any,
        inductor_configs: dict | None = None,
        submodule: str | None = None,
    ) -> None:
        folder = Path(package_dir) / (f"submodules/{submodule}" if submodule else "root")
        folder.mkdir(parents=True, exist_ok=True)
        if self.broken:
            (folder / "package.pt2").write_bytes(b"a package this platform cannot load")
            self.note(f"compiled {folder / 'package.pt2'}")
            return
        configs = {**(inductor_configs or {}), **self.OVERRIDES}
        torch._inductor.aoti_compile_and_package(
            exported_program, package_path=str(folder / "package.pt2"), inductor_configs=configs
        )
        self.note(f"compiled {folder / 'package.pt2'}")

    def note(self, line: str) -> None:
        with open(self.log, "a") as file:
            file.write(line + "\n")

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def on_a_space(monkeypatch: Any, aoti: FakeAoti | None) -> FakeSpaces:
    """Make this process a ZeroGPU Space's for the test (`monkeypatch`): SPACE_ID set, a FakeSpaces as `spaces`, and
    `aoti` as spaces' AoT module (None: a `spaces` without it). Returns the FakeSpaces."""
    from wan_t2i import zerogpu

    fake = FakeSpaces()
    monkeypatch.setenv("SPACE_ID", "someone/wan-t2i")
    monkeypatch.setattr(zerogpu, "spaces", fake)
    monkeypatch.setitem(sys.modules, zerogpu.AOTI_MODULE, aoti)
    return fake
