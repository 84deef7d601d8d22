"""A stand-in for Hugging Face's `spaces` package on ZeroGPU, for tests: what the app's GPU side must survive there.

ZeroGPU (spaces 0.51, `spaces/zero/wrappers.py`) runs a function decorated with `spaces.GPU` in a worker process
forked from the server: the arguments go to it pickled, what a generator function yields comes back pickled, and
once the caller closes its generator the worker closes the task's generator after its next yield (`stop_event`).
This double does the same with a process forked per call, so that a test fails where the real one would: an
argument or a result that does not pickle, a stop that needs shared memory, a job that does not stop at a yield.
The real service (its GPU scheduling and quotas) cannot run here. ZeroGPU's ahead-of-time compilation can, and is
spaces' own (`SpacesAoti`).
"""

from __future__ import annotations

import importlib
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

from wan_t2i.zerogpu import AOTI_MODULE

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


def spaces_aoti() -> types.ModuleType:
    """spaces' own ahead-of-time module, `spaces.zero.torch.aoti` (the test extra pins spaces 0.51.3), imported
    without its package's `__init__`: that patches CUDA at import and so fails with a CPU-only torch (it reads
    `torch.version.cuda` and `torch._C._cuda_init`), while the module itself (AOTInductor's compile and loader under
    ZeroGPU's options, the ELF flag it clears, the cleanup it registers) runs on the CPU as it is. Imported anew on
    each call, under its own name, and taken out of `sys.modules` again, so that nothing else sees the package
    half-imported."""
    import spaces.zero

    package = types.ModuleType("spaces.zero.torch")
    package.__path__ = [str(Path(spaces.zero.__file__).parent / "torch")]
    saved = {name: sys.modules.pop(name, None) for name in ("spaces.zero.torch", AOTI_MODULE)}
    sys.modules["spaces.zero.torch"] = package
    try:
        return importlib.import_module(AOTI_MODULE)
    finally:
        for name, module in saved.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module


class SpacesAoti(types.ModuleType):
    """ZeroGPU's ahead-of-time module as `wan_t2i.aot` meets it on a Space: spaces' own `aoti_compile_and_save` and
    `LazyAOTIModel` (`spaces_aoti`), each compile and each package load written as a line to `log`, which a forked
    worker's calls reach too. `broken`: a platform whose packages do not load (as AOTInductor's loader crashed on an
    H100 machine, benchmarks/records/2026-12-07-h100-ttfi-disk): its compile writes a package of no use (in a moment,
    not minutes), which spaces' loader then fails to load. The real module ran on that H100 in
    `python -m benchmarks.aoti_cuda --options zerogpu`."""

    def __init__(self, log: Path, *, broken: bool = False) -> None:
        super().__init__(AOTI_MODULE)
        self.log, self.broken, self.spaces = log, broken, spaces_aoti()
        double = self

        class LazyAOTIModel(self.spaces.LazyAOTIModel):  # spaces' own, its first load logged
            def __call__(self, weights: dict, check_full_update: bool, *args: Any, **kwargs: Any) -> Any:
                first = self.compiled_model.get() is None
                try:
                    result = super().__call__(weights, check_full_update, *args, **kwargs)
                except Exception:
                    if first:
                        double.note(f"failed to load {self.archive_file}")
                    raise
                if first:
                    double.note(f"loaded {self.archive_file}")
                return result

        self.LazyAOTIModel = LazyAOTIModel

    def aoti_compile_and_save(
        self,
        package_dir: Any,
        exported_program: Any,
        inductor_configs: dict | None = None,
        submodule: str | None = None,
    ) -> None:
        folder = Path(package_dir) / (f"submodules/{submodule}" if submodule else "root")
        if self.broken:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "package.pt2").write_bytes(b"a package this platform cannot load")
        else:
            self.spaces.aoti_compile_and_save(package_dir, exported_program, inductor_configs, submodule)
        self.note(f"compiled {folder / 'package.pt2'}")

    def note(self, line: str) -> None:
        with open(self.log, "a") as file:
            file.write(line + "\n")

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def on_a_space(monkeypatch: Any, aoti: SpacesAoti | None) -> FakeSpaces:
    """Make this process a ZeroGPU Space's for the test (`monkeypatch`): SPACE_ID set, a FakeSpaces as `spaces`, and
    `aoti` as spaces' AoT module (None: a `spaces` without it). Returns the FakeSpaces."""
    from wan_t2i import zerogpu

    fake = FakeSpaces()
    monkeypatch.setenv("SPACE_ID", "someone/wan-t2i")
    monkeypatch.setattr(zerogpu, "spaces", fake)
    monkeypatch.setitem(sys.modules, zerogpu.AOTI_MODULE, aoti)
    return fake
