"""Copies of a pipeline's transformers on further devices: an A/B pair (or a sweep's cells) split over GPUs.

With two GPUs an A/B pair need not cost two images: each device holds its own copy of the transformer(s) and
denoises its share of the branches in a thread of its own, so both GPUs run at once. Every branch starts from the
same noise and the same text encoding, made once on the first device and copied; the VAE and the text encoder stay
on the first device, which encodes and decodes for all.

    pipe = WanT2IPipeline.from_pretrained(..., devices=["cuda:0", "cuda:1"])
    pipe.generate(prompt, samplers=["legacy_ddim", "flow_unipc"])  # one sampler on each GPU

A branch gives what it gives on one device up to the rounding of a smaller batch (tests/test_replicas.py: within
1/255 per pixel). A single branch runs on the first device alone. Data parallelism over many prompts is another
tool: `torchrun -m wan_t2i.evaluate` (docs/multi-gpu.md).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch

from wan_t2i.evaluate import shard
from wan_t2i.guidance import Experts
from wan_t2i.loading import WanComponents, resolve_device
from wan_t2i.performance import PerformanceSettings, apply, is_offloaded, is_quantized, transformers_of

StepCallback = Callable[[int, list, list, list], None]  # sample_many's: (i, t, x, x0_pred per branch)
# (replica, indices of the branches it runs, its step callback) -> their final latents: one pass of the one loop
SampleFn = Callable[["Replica", list[int], StepCallback], list[torch.Tensor]]


@dataclass(frozen=True)
class Replica:
    """The transformers of every model a request may name ("student", "teacher") on one device."""

    device: torch.device
    experts: dict[str, Experts]


def experts_of(components: WanComponents) -> dict[str, Experts]:
    """The student's transformer(s), and the teacher's where loaded, as `guided_model_fn` takes them."""
    c = components
    experts = {"student": Experts(c.transformer, c.transformer_2, c.boundary_ratio)}
    if c.has_teacher:
        experts["teacher"] = Experts(c.teacher_transformer, c.teacher_transformer_2, c.teacher_boundary_ratio)
    return experts


def check_devices(devices: Sequence[str | torch.device]) -> list[torch.device]:
    """`devices` as torch devices, a GPU without its index as the current one (`cuda` -> `cuda:0`); ValueError, in
    one line, for an empty list, a device this machine lacks, a GPU named twice, or a mix of kinds. The CPU may
    repeat: its copies share the cores (that is how the tests run two devices)."""
    if isinstance(devices, str | torch.device) or not devices:
        raise ValueError(f"devices must be a list of one or more devices, e.g. ['cuda:0', 'cuda:1'], got {devices!r}")
    resolved = [resolve_device(d) for d in devices]
    resolved = [
        torch.device(d.type, torch.accelerator.current_device_index()) if d.type != "cpu" and d.index is None else d
        for d in resolved
    ]
    kinds = {d.type for d in resolved}
    if len(kinds) > 1:
        raise ValueError(f"devices must all be of one kind (all GPUs, or all cpu), got {', '.join(map(str, resolved))}")
    twice = next((d for d in resolved if d.type != "cpu" and resolved.count(d) > 1), None)
    if twice is not None:
        raise ValueError(f"devices names {twice} twice: each copy of the model needs a GPU of its own")
    return resolved


def copy_to(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A deep copy of `module` with its parameters and buffers made directly on `device` (never a second copy on
    the module's own device first: a 14B transformer fits a GPU once). On the module's own device the copy shares
    its weights."""
    memo: dict[int, Any] = {
        id(p): torch.nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad) for p in module.parameters()
    }
    memo |= {id(b): b.to(device) for b in module.buffers()}
    return copy.deepcopy(module, memo)


def replicate(components: WanComponents, device: torch.device, settings: PerformanceSettings) -> Replica:
    """Copies of `components`' transformers on `device`, with `settings` put into effect on them (compiled, fp8)
    as on the originals. Raises ValueError for low_memory (one model streamed to one GPU), or for transformers
    already quantised or offloaded: replicate before `performance.apply`, as `from_pretrained(devices=...)` does."""
    if settings.low_memory:
        raise ValueError(
            "low_memory streams one model's layers to one GPU; with several devices use default or fastest"
        )
    sources = transformers_of(components)
    if any(is_quantized(t) or is_offloaded(t) for t in sources):
        raise ValueError(
            "these transformers are quantised or offloaded already: load with "
            "WanT2IPipeline.from_pretrained(..., devices=[...], performance=...) to copy them first"
        )
    copies = {id(t): copy_to(t, device) for t in sources}
    c = components
    on_device = replace(
        c,
        device=device,
        **{
            name: copies[id(module)]
            for name in ("transformer", "transformer_2", "teacher_transformer", "teacher_transformer_2")
            if (module := getattr(c, name)) is not None
        },
    )
    apply(on_device, settings)  # also clears any compiled call the copies took over from compiled originals
    return Replica(device, experts_of(on_device))


def branch_cost(branch: Any) -> float:
    """A branch's relative cost: steps x latent values x transformer rows (two where guided)."""
    steps = len(branch.timesteps) if branch.timesteps else branch.steps
    return steps * branch.noise[0].numel() * (2 if any(g != 1 for g in branch.guidance) else 1)


def split(branches: Sequence[Any], replicas: Sequence[Replica]) -> list[tuple[Replica, list[int]]]:
    """Each replica with the indices of the branches it runs, balanced by cost (`evaluate.shard`); replicas left
    without a branch are left out, so one branch runs on the first device alone."""
    owners = shard([branch_cost(b) for b in branches], len(replicas))
    groups = [(replica, [k for k, owner in enumerate(owners) if owner == r]) for r, replica in enumerate(replicas)]
    return [(replica, members) for replica, members in groups if members]


def run_on_replicas(
    replicas: Sequence[Replica], branches: Sequence[Any], sample: SampleFn, callback: StepCallback
) -> list[torch.Tensor]:
    """Denoise `branches` split over `replicas`: `sample(replica, members, callback)` runs the branches `members`
    on that replica, each replica with branches in a thread of its own; where only one has any (a single branch),
    it runs here, in this thread, as it would without replicas.

    `callback(i, t, x, x0_pred)` is called in this thread once every replica has taken step i, with every branch's
    entries (in the order of `branches`) copied to the CPU: a copy from one GPU to another would make each GPU
    wait for the work queued on the other (PyTorch's peer copy joins both streams), which serialises them; a copy
    to the host only makes this thread wait. A failure anywhere, or in `callback`, stops the other replicas at
    their next step and is raised here.

    Returns:
        The final latents per branch, on the first replica's device.
    """
    groups = split(branches, replicas)
    if len(groups) == 1:
        replica, members = groups[0]
        return sample(replica, members, callback)
    reports: queue.SimpleQueue = queue.SimpleQueue()  # (group, step or None when it ends, t, x, x0_pred)
    stop = threading.Event()

    def work(g: int, replica: Replica, members: list[int]) -> list[torch.Tensor]:
        def report(i: int, *entries: list) -> None:
            if stop.is_set():
                raise StoppedByOther
            reports.put((g, i, *entries))

        try:
            with torch.inference_mode(), current(replica.device):
                return sample(replica, members, report)
        except BaseException:
            stop.set()
            raise
        finally:
            reports.put((g, None))

    with ThreadPoolExecutor(len(groups), thread_name_prefix="replica") as pool:
        futures = [pool.submit(work, g, replica, members) for g, (replica, members) in enumerate(groups)]
        failure = join_steps(reports, groups, branches, callback, stop)
    errors = [error for error in (f.exception() for f in futures) if error and not isinstance(error, StoppedByOther)]
    if failure or errors:
        raise failure or errors[0]
    latents: list[torch.Tensor | None] = [None] * len(branches)
    for future, (_, members) in zip(futures, groups, strict=True):
        for k, x in zip(members, future.result(), strict=True):
            latents[k] = x.to(replicas[0].device)  # once, at the end: here a join of the streams costs nothing
    return latents


class StoppedByOther(Exception):
    """Raised in a replica's thread at its next step once another replica (or the caller's callback) has failed."""


def join_steps(
    reports: queue.SimpleQueue,
    groups: list[tuple[Replica, list[int]]],
    branches: Sequence[Any],
    callback: StepCallback,
    stop: threading.Event,
) -> BaseException | None:
    """Until every group has ended: each step, once all groups still running have taken it, to `callback` (every
    tensor on the CPU, see `run_on_replicas`).

    Returns what `callback` raised (the groups are then stopped), else None."""
    steps = [max(len(branches[k].timesteps or ()) or branches[k].steps for k in members) for _, members in groups]
    pending: dict[int, dict[int, tuple]] = {}  # step -> group -> its (t, x, x0_pred) lists
    ended, failure = 0, None
    while ended < len(groups):
        g, i, *entries = reports.get()
        if i is None:
            ended += 1
            continue
        pending.setdefault(i, {})[g] = entries
        if failure is not None or len(pending[i]) < sum(n > i for n in steps):
            continue
        merged: list[list] = [[None] * len(branches) for _ in range(3)]  # t, x, x0_pred of every branch
        for group, values in sorted(pending.pop(i).items()):
            for k, *value in zip(groups[group][1], *values, strict=True):
                for whole, v in zip(merged, value, strict=True):
                    whole[k] = None if v is None else v.cpu()
        try:
            callback(i, *merged)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller once the groups have stopped
            failure = error
            stop.set()
    return failure


@contextlib.contextmanager
def current(device: torch.device) -> Iterator[None]:
    """`device` as the thread's current CUDA device (kernels that allocate without a tensor to go by); else nothing."""
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        yield
