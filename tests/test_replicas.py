"""The A/B pair (and a sweep) split over devices: two CPU "devices" give the one-device images, each replica runs
exactly its own branch's forwards, in a thread of its own, and a single branch stays on the first device."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import tiny_transformer

from wan_t2i import replicas
from wan_t2i.performance import PerformanceSettings
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.replicas import check_devices, copy_to, replicate

PAIR = ["legacy_ddim", "flow_unipc"]


@pytest.fixture(scope="module")
def split_pipe(tiny_wan_dir):
    """The tiny model on three CPU "devices": more devices than a pair has branches."""
    return WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, devices=["cpu", "cpu", "cpu"])


class Forwards:
    """The transformer forwards of each given module while active: the rows of each, and the thread it ran in."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.modules, self.rows, self.threads = modules, [[] for _ in modules], [set() for _ in modules]

    def __enter__(self) -> Forwards:
        def hook(k: int):
            def record(module, args, kwargs) -> None:
                self.rows[k].append(len(kwargs["hidden_states"]))
                self.threads[k].add(threading.current_thread().name)

            return record

        self.hooks = [m.register_forward_pre_hook(hook(k), with_kwargs=True) for k, m in enumerate(self.modules)]
        return self

    def __exit__(self, *_) -> None:
        for hook in self.hooks:
            hook.remove()


def students(pipe: WanT2IPipeline) -> list[torch.nn.Module]:
    return [replica.experts["student"].high for replica in pipe.replicas]


def pixel_difference(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.mark.slow  # four renders: 6-14 s on 2 busy cores
def test_a_pair_split_over_two_devices_equals_the_one_device_pair(split_pipe, tiny_pipe):
    request = tiny_pipe.request("a serene lake at sunset", samplers=PAIR, seed=7)
    assert request.guided and request.steps == 4
    steps = []
    with Forwards(students(split_pipe)) as split:
        generation = split_pipe.generate(request, progress=lambda i, n: steps.append((i, n)))
    one = tiny_pipe.generate(request)
    for label in one.images:  # the same noise and text encoding on both devices: the same images
        assert pixel_difference(generation.images[label], one.images[label]) <= 1, label
        torch.testing.assert_close(generation[label].latents, one[label].latents, rtol=0, atol=1e-4)  # and latents
        assert generation[label].diagnostics.t == one[label].diagnostics.t
        assert generation[label].diagnostics.latent_std == pytest.approx(one[label].diagnostics.latent_std, rel=1e-4)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # step by step, once every device has taken the step
    # Each device ran exactly the forwards of its own branch alone: legacy_ddim skips t = 0, both are guided.
    alone = []
    for k in range(len(PAIR)):
        with Forwards(students(tiny_pipe)) as single:
            tiny_pipe.generate(request.branch(k))
        alone.append(single.rows[0])
    assert alone == [[2, 2, 2], [2, 2, 2, 2]]
    assert split.rows == [*alone, []]  # the third device: no branch left for it
    assert len(split.threads[0] | split.threads[1]) == 2 and threading.current_thread().name not in split.threads[0]
    assert len({id(m) for m in students(split_pipe)}) == 3  # a transformer of its own on each device


def test_a_single_branch_stays_on_the_first_device(split_pipe, tiny_pipe):
    request = tiny_pipe.request("a mountain at dawn", samplers=["flow_unipc"], seed=3)
    with Forwards(students(split_pipe)) as split:
        generation = split_pipe.generate(request)
    assert split.rows == [[2, 2, 2, 2], [], []]
    assert split.threads[0] == {threading.current_thread().name}  # no thread either: as without replicas
    assert pixel_difference(generation.images["flow_unipc"], tiny_pipe.generate(request).images["flow_unipc"]) == 0


@pytest.mark.slow  # two sweeps of four cells: 2-5 s on 2 busy cores
def test_a_sweep_splits_its_cells_over_the_devices(split_pipe, tiny_pipe):
    axes = {"sampler": PAIR, "seed": [1, 2]}
    with Forwards(students(split_pipe)) as split:
        sweep = split_pipe.sweep("a green landscape", axes)
    one = tiny_pipe.sweep("a green landscape", axes)
    assert all(split.rows) and sum(map(len, split.rows)) > 0  # four cells over three devices: each has some
    assert sweep.forwards == sum(map(len, split.rows))  # the sweep's count: every device's forwards
    for a, b in zip(sweep.cells, one.cells, strict=True):
        assert a.values == b.values and pixel_difference(a.image, b.image) <= 1, a.values
        assert a.diagnostics.final_std == pytest.approx(b.diagnostics.final_std, rel=1e-5)


def test_a_failure_on_one_device_is_raised_as_itself_and_leaves_no_thread(split_pipe, tiny_pipe):
    request = tiny_pipe.request("a lake at night", samplers=PAIR, seed=5)

    def fail(module, args) -> None:
        raise RuntimeError("the second device failed")

    hook = students(split_pipe)[1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="the second device failed"):
            split_pipe.generate(request)
    finally:
        hook.remove()

    def stop(i: int, n: int) -> None:
        raise KeyboardInterrupt  # as a caller's progress callback stops a render

    with pytest.raises(KeyboardInterrupt):
        split_pipe.generate(request, progress=stop)
    assert not [t for t in threading.enumerate() if t.name.startswith("replica")]


def test_device_lists_are_checked_in_one_line(split_pipe, tiny_wan_dir, monkeypatch):
    assert check_devices(["cpu", "cpu"]) == [torch.device("cpu")] * 2  # the CPU may repeat: these tests use it
    for devices, message in (
        ([], "one or more devices"),
        ("cuda:0", "a list"),
        (["cpu", "gpu0"], "unknown device 'gpu0'"),
        (["cpu", "cuda:7"], "cuda:7"),  # no such GPU here (or no CUDA at all): said with what is available
    ):
        with pytest.raises(ValueError, match=message) as error:
            check_devices(devices)
        assert "\n" not in str(error.value)
    monkeypatch.setattr(replicas, "resolve_device", torch.device)  # as if two GPUs were visible
    assert check_devices(["cuda:0", "cuda:1"]) == [torch.device("cuda", 0), torch.device("cuda", 1)]
    with pytest.raises(ValueError, match="names cuda:1 twice: each copy of the model needs a GPU of its own"):
        check_devices(["cuda:0", "cuda:1", "cuda:1"])
    with pytest.raises(ValueError, match="all be of one kind"):
        check_devices(["cuda:0", "cpu"])
    monkeypatch.undo()
    with pytest.raises(ValueError, match="device or devices, not both"):
        WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", devices=["cpu", "cpu"])
    with pytest.raises(ValueError, match="low_memory"):
        replicate(split_pipe.components, torch.device("cpu"), PerformanceSettings(low_memory=True))


def test_a_copy_is_made_on_its_device_and_only_there():
    module = tiny_transformer()
    copied = copy_to(module, torch.device("meta"))  # the only second device a CPU has
    assert all(t.device.type == "meta" for t in [*copied.parameters(), *copied.buffers()])
    assert all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])  # the original stays
    assert [p.requires_grad for p in copied.parameters()] == [p.requires_grad for p in module.parameters()]
    same = copy_to(module, torch.device("cpu"))  # on its own device the copy shares the weights
    assert same is not module and same.proj_out.weight.data_ptr() == module.proj_out.weight.data_ptr()


def test_replicate_to_adds_a_device_to_a_built_pipeline(tiny_wan_dir):
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu")
    pipe.replicate_to(["cpu"])
    assert [r.device for r in pipe.replicas] == [torch.device("cpu")] * 2
    with Forwards(students(pipe)) as split:
        pipe.generate("a lake", samplers=PAIR, seed=1)
    assert split.rows == [[2, 2, 2], [2, 2, 2, 2]]
