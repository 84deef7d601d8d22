"""Ahead-of-time compiled transformers (wan_t2i.aot): built once, loaded by the next process without tracing, never
applied to what they were not built for. On the CPU with the tiny random model (AOTInductor builds C++ here)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wan_t2i.aot import fingerprint, key_of
from wan_t2i.performance import PerformanceSettings, fuse_projections

ROOT = Path(__file__).resolve().parents[1]
START = """
import json, sys
import torch
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.performance import PerformanceSettings, apply
if sys.argv[3] == "no-tracing":  # a second start must not trace: torch.export would
    def refuse(*args, **kwargs):
        raise RuntimeError("traced at a second start")
    torch.export.export = refuse
pipe = WanT2IPipeline.from_pretrained(teacher_path=sys.argv[1], device="cpu")
apply(pipe.components, PerformanceSettings(compile_cache=sys.argv[2]))
generation = pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], steps=3, seed=1)
for label, result in generation.results.items():
    result.image.save(f"{sys.argv[2]}/{label}-{sys.argv[3]}.png")
forward = pipe.components.transformer.forward
print(json.dumps({"built": forward.built, "loaded": forward.loaded}))
"""


def start(teacher: Path, cache: Path, mode: str, script: str = START) -> dict:
    """A fresh process that loads the model with the compile cache and renders a pair; what it built and loaded."""
    done = subprocess.run([sys.executable, "-c", script, str(teacher), str(cache), mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_fingerprint_changes_with_everything_a_package_depends_on(tiny_pipe) -> None:
    transformer = tiny_pipe.components.transformer
    x, context = torch.zeros(2, 16, 1, 4, 6), torch.zeros(2, 512, transformer.config.text_dim)
    facts = fingerprint(transformer, x, context)
    assert key_of(facts) == key_of(fingerprint(transformer, x[:1], context[:1]))  # the batch is dynamic
    variants = [
        fingerprint(transformer, torch.zeros(2, 16, 1, 6, 4), context),  # another size
        fingerprint(transformer, x, context[:, :256]),  # another text length
        facts | {"torch": "2.8.0"},
        facts | {"device": "cuda NVIDIA RTX PRO 6000 Blackwell sm120"},
        facts | {"dtype": "torch.bfloat16"},
        facts | {"config": facts["config"] | {"num_layers": 40}},
    ]
    assert len({key_of(v) for v in [facts, *variants]}) == 1 + len(variants)


def test_fused_projections_are_another_fingerprint(tiny_pipe) -> None:
    """A transformer whose attention projections are fused runs other layers, so its compiled code is filed apart."""
    from wan_t2i.aot import block_fingerprint, repeated_blocks

    transformer = copy.deepcopy(tiny_pipe.components.transformer)
    x, context = torch.zeros(2, 16, 1, 4, 6), torch.zeros(2, 512, transformer.config.text_dim)
    block, inputs = repeated_blocks(transformer)[0], (torch.zeros(2, 6, 32), torch.zeros(2, 8, 32))
    before = key_of(fingerprint(transformer, x, context)), key_of(block_fingerprint(transformer, block, inputs, {}))
    fuse_projections(transformer)
    after = key_of(fingerprint(transformer, x, context)), key_of(block_fingerprint(transformer, block, inputs, {}))
    assert after[0] != before[0] and after[1] != before[1]


def test_compile_cache_does_not_combine_with_streaming() -> None:
    with pytest.raises(ValueError, match="compile_cache cannot be combined with low_memory"):
        replace(PerformanceSettings(low_memory=True), compile_cache="/tmp/x")
    assert PerformanceSettings(fp8=True, compile_cache="/tmp/x").fp8  # fp8 blocks are kept as blocks


@pytest.mark.slow
def test_a_second_start_loads_the_package_without_tracing_and_a_stale_one_is_rebuilt(
    tiny_wan_dir: Path, tiny_pipe, tmp_path: Path
) -> None:
    """Start 1 builds the package (about a minute on 2 cores); start 2, a new process with torch.export made to fail,
    loads it and renders the same images as eager; a package whose fingerprint is not the model's is built anew,
    and one that is damaged too."""
    cache = tmp_path / "cache"
    cache.mkdir()
    assert start(tiny_wan_dir, cache, "first") == {"built": 1, "loaded": 0}
    assert start(tiny_wan_dir, cache, "no-tracing") == {"built": 0, "loaded": 1}
    eager = tiny_pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], steps=3, seed=1)
    for label, result in eager.results.items():
        for mode in ("first", "no-tracing"):
            served = np.asarray(Image.open(cache / f"{label}-{mode}.png"), dtype=np.int16)
            assert np.abs(served - np.asarray(result.image, dtype=np.int16)).max() <= 1, (label, mode)

    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    facts = json.loads((folder / "fingerprint.json").read_text())
    (folder / "fingerprint.json").write_text(json.dumps(facts | {"torch": "another"}))  # built for something else
    assert start(tiny_wan_dir, cache, "stale") == {"built": 1, "loaded": 0}
    assert json.loads((folder / "fingerprint.json").read_text()) == facts  # replaced by this model's
    (folder / "package.pt2").write_bytes((folder / "package.pt2").read_bytes()[:1000])  # truncated
    assert start(tiny_wan_dir, cache, "damaged") == {"built": 1, "loaded": 0}


def test_the_apps_flags_for_devices_and_compilation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--devices and --compile_cache reach from_pretrained; on a ZeroGPU Space (no torch.compile there) fastest
    is all of it but the compilation, compiled ahead of time into a default folder where `spaces` has ZeroGPU's AoT
    functions; --compile_cache without them and fp8 are refused in one line."""
    from zerogpu_double import SpacesAoti, on_a_space

    from wan_t2i import zerogpu
    from wan_t2i.app_args import parse_args, pipeline_options

    for name in ("SPACE_ID", "WAN_T2I_COMPILE_CACHE", "WAN_T2I_DEVICES", "WAN_T2I_PERFORMANCE", "WAN_T2I_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    options = pipeline_options(parse_args(["--devices", "cuda:0, cuda:1", "--compile_cache", str(tmp_path)]))
    assert options["devices"] == ["cuda:0", "cuda:1"] and "device" not in options
    assert options["compile_cache"] == str(tmp_path)
    with pytest.raises(ValueError, match="give --device or --devices, not both"):
        pipeline_options(parse_args(["--devices", "cuda:0,cuda:1", "--device", "cuda"]))
    assert pipeline_options(parse_args(["--performance", "fastest"]))["compile_cache"] is None  # not a Space
    assert "warm_up" not in pipeline_options(parse_args([]))  # from_pretrained's default: the encoder warmed
    on_a_space(monkeypatch, None)  # a spaces without ZeroGPU's AoT: stays eager
    options = pipeline_options(parse_args(["--performance", "fastest"]))
    assert options["compile_cache"] is None
    assert options["warm_up"] is False  # the server process has no GPU there: nothing to warm
    no_compile = PerformanceSettings(vae_dtype=torch.bfloat16, tf32=True, vae_2d=True)  # nor graphs, per fork
    assert options["performance"] == no_compile
    assert pipeline_options(parse_args([]))["performance"] == "default"
    with pytest.raises(ValueError, match="torch.compile, which ZeroGPU does not run: use fastest"):
        pipeline_options(parse_args(["--performance", "fp8"]))
    with pytest.raises(ValueError, match="--compile_cache on ZeroGPU needs the spaces package's ahead-of-time"):
        pipeline_options(parse_args(["--performance", "fastest", "--compile_cache", str(tmp_path)]))
    monkeypatch.setitem(sys.modules, zerogpu.AOTI_MODULE, SpacesAoti(tmp_path / "log"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(zerogpu, "PERSISTENT_STORAGE", tmp_path / "data")  # a Space without persistent storage
    options = pipeline_options(parse_args(["--performance", "fastest"]))
    assert options["performance"] == no_compile
    assert options["compile_cache"] == str(tmp_path / ".cache" / "wan-t2i" / "compile-cache")
    (tmp_path / "data").mkdir()  # and one with it: a restart finds the packages there
    options = pipeline_options(parse_args(["--performance", "fastest"]))
    assert options["compile_cache"] == str(tmp_path / "data" / "wan-t2i" / "compile-cache")
    given = pipeline_options(parse_args(["--performance", "fastest", "--compile_cache", str(tmp_path / "mine")]))
    assert given["compile_cache"] == str(tmp_path / "mine")
    assert pipeline_options(parse_args([]))["compile_cache"] is None  # the default preset asks for no compilation


@pytest.mark.slow
def test_on_zerogpu_the_warm_up_compiles_in_the_gpu_process_and_requests_load_it(
    tiny_wan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ZeroGPU packages are compiled and loaded by ZeroGPU's own functions (tests/zerogpu_double.py: SpacesAoti),
    and built only at the warm-up: a request before it runs eagerly and builds nothing; the warm-up job runs in the
    forked GPU worker (FakeSpaces), which builds the package on disk; the next request finds it there and loads it,
    compiling nothing, and renders what the warm-up rendered."""
    from zerogpu_double import SpacesAoti, on_a_space

    from wan_t2i import zerogpu
    from wan_t2i.aot import AotForward, ahead_of
    from wan_t2i.handlers import Handler
    from wan_t2i.pipeline import WanT2IPipeline

    aoti = SpacesAoti(tmp_path / "aoti.log")
    fake = on_a_space(monkeypatch, aoti)
    cache = tmp_path / "cache"
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", compile_cache=str(cache))
    forward = ahead_of(pipe.components.transformer)
    assert isinstance(forward, AotForward) and forward.zerogpu is aoti and forward.at_warm_up_only
    handler = Handler(pipe)
    request = pipe.request("a lake at sunset", samplers=handler.pair, steps=2, seed=0)
    before = pipe.generate(request)  # no package yet, and no building outside the warm-up: eager
    assert (forward.built, forward.loaded) == (0, 0) and not list(cache.glob("*/package.pt2")) and not aoti.lines()
    warm = handler.warm_up()
    assert fake.durations == [zerogpu.WARMUP_SECONDS] and warm.request == request
    (package,) = cache.glob("*/package.pt2")  # written by the worker process, compiled by ZeroGPU's function
    assert [line.split()[0] for line in aoti.lines()] == ["compiled", "loaded"]
    assert (forward.built, forward.loaded) == (0, 0)  # this process has compiled nothing
    again = pipe.generate(request)
    assert (forward.built, forward.loaded) == (0, 1) and aoti.lines()[-1] == f"loaded {package}"
    for label, result in again.results.items():
        for other in (warm, before):
            assert np.abs(np.asarray(result.image, np.int16) - np.asarray(other[label].image, np.int16)).max() <= 1


def test_a_warm_up_that_fails_leaves_the_transformers_eager_and_the_app_running(
    tiny_wan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ZeroGPU's packages do not load (as AOTInductor's loader crashed on an H100 machine), the warm-up job
    fails: the app must start all the same, eagerly, rather than crash or send every request to a broken package."""
    from zerogpu_double import SpacesAoti, on_a_space

    from wan_t2i.aot import ahead_of
    from wan_t2i.handlers import Handler
    from wan_t2i.pipeline import WanT2IPipeline

    aoti = SpacesAoti(tmp_path / "aoti.log", broken=True)
    on_a_space(monkeypatch, aoti)
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", compile_cache=str(tmp_path / "c"))
    assert ahead_of(pipe.components.transformer) is not None
    handler = Handler(pipe)
    assert handler.warm_up() is None
    assert [line.split()[0] for line in aoti.lines()] == ["compiled", "failed"]
    assert ahead_of(pipe.components.transformer) is None  # eager from now on
    request = pipe.request("a lake at sunset", samplers=handler.pair, steps=2, seed=0)
    assert len(pipe.generate(request).results) == 2  # and still rendering
    assert [line.split()[0] for line in aoti.lines()] == ["compiled", "failed"]  # the broken package left alone


def test_on_zerogpu_the_app_warms_up_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Space's start (`wan_t2i.app.build`, what the root app.py calls on a Space) with `fastest` on ZeroGPU: the
    pipeline gets the ahead-of-time packages and the warm-up job runs through the GPU before the app is returned,
    so that packages exist before the first visitor. Here the double's packages do not load (`broken`), which also
    shows the start surviving that."""
    from zerogpu_double import SpacesAoti, on_a_space

    from wan_t2i import zerogpu
    from wan_t2i.app import build

    aoti = SpacesAoti(tmp_path / "aoti.log", broken=True)
    fake = on_a_space(monkeypatch, aoti)
    monkeypatch.setattr(zerogpu, "PERSISTENT_STORAGE", tmp_path / "data")
    (tmp_path / "data").mkdir()
    for name in ("WAN_T2I_COMPILE_CACHE", "WAN_T2I_DEVICES", "WAN_T2I_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WAN_T2I_PERFORMANCE", "fastest")
    demo = build(["--device", "cpu", "--render_on_load", "no"])
    assert demo is not None and fake.durations[0] == zerogpu.WARMUP_SECONDS  # the first GPU job: the warm-up
    assert len(list((tmp_path / "data" / "wan-t2i" / "compile-cache").glob("*/package.pt2"))) == 1
    assert [line.split()[0] for line in aoti.lines()] == ["compiled", "failed"]  # built, then fell back to eager


def test_a_performance_settings_of_ones_own_is_taken_as_the_preset(tiny_wan_dir: Path) -> None:
    from wan_t2i.pipeline import WanT2IPipeline

    settings = PerformanceSettings(vae_dtype=torch.bfloat16)
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", performance=settings)
    assert pipe.components.vae.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="gpu_memory_gb goes with the low_memory preset's name"):
        WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", performance=settings, gpu_memory_gb=8)


BLOCKS = """
import json, sys
import torch
from wan_t2i import aot
from wan_t2i.pipeline import WanT2IPipeline
read_ahead = aot.preload(sys.argv[2], "cpu")  # as from_pretrained does on CUDA: while the weights load
pipe = WanT2IPipeline.from_pretrained(teacher_path=sys.argv[1], device="cpu")
if sys.argv[3] == "no-compiling":  # a second start must not compile: torch.compile would
    def refuse(*args, **kwargs):
        raise RuntimeError("compiled at a second start")
    torch.compile = refuse
blocks = aot.compile_ahead(pipe.components.transformer, sys.argv[2], kind="blocks")
generation = pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], steps=3, seed=1)
for label, result in generation.results.items():
    result.image.save(f"{sys.argv[2]}/{label}-{sys.argv[3]}.png")
assert aot.ahead_of(pipe.components.transformer) is blocks
aot.uncompile_ahead(pipe.components.transformer)
assert aot.ahead_of(pipe.components.transformer) is None
print(json.dumps({"built": blocks.built, "loaded": blocks.loaded, "preloaded": blocks.preloaded,
                  "read_ahead": len(read_ahead)}))
"""


@pytest.mark.slow
def test_blocks_compiled_by_dynamo_are_loaded_by_a_second_start_and_rebuilt_when_stale(
    tiny_wan_dir: Path, tiny_pipe, tmp_path: Path
) -> None:
    """What the cache keeps on CUDA (wan_t2i.aot.PrecompiledBlocks), run here on the CPU: start 1 compiles one block
    function per input shape (the pair's batch of 4 and the 2 of its first and last steps) and saves it; start 2,
    with torch.compile made to fail, reads them ahead (`preload`, before the weights) and renders what eager renders;
    a function whose fingerprint is not this model's is not read ahead and is built anew, as is one that fails to
    read. The blocks' kernels are kept in the folder too, so that the second start compiles none of them again."""
    cache = tmp_path / "cache"
    cache.mkdir()
    first = start(tiny_wan_dir, cache, "first", BLOCKS)
    n = first["built"]
    assert n >= 2 and first["loaded"] == first["read_ahead"] == 0  # the pair's batch of 4, and of 2
    assert len(list(cache.glob("*/block.bin"))) == n
    kernels = set(cache.glob("inductor/**/*.main.cpp"))  # the blocks' C++ kernels, kept beside them (keep_kernels)
    assert kernels
    again = start(tiny_wan_dir, cache, "no-compiling", BLOCKS)
    assert again | {"preloaded": None} == {"built": 0, "loaded": n, "preloaded": None, "read_ahead": n}
    assert set(cache.glob("inductor/**/*.main.cpp")) == kernels  # found there: not one compiled again
    # One reader thread takes the blocks in the folder's order; one the model asks for before its turn is read then.
    assert again["preloaded"] >= 1
    eager = tiny_pipe.generate("a lake", samplers=["legacy_ddim", "flow_unipc"], steps=3, seed=1)
    for label, result in eager.results.items():
        for mode in ("first", "no-compiling"):
            served = np.asarray(Image.open(cache / f"{label}-{mode}.png"), dtype=np.int16)
            assert np.abs(served - np.asarray(result.image, dtype=np.int16)).max() <= 1, (label, mode)
    stale, damaged = sorted(p.parent for p in cache.glob("*/fingerprint.json"))[:2]
    facts = json.loads((stale / "fingerprint.json").read_text())
    (stale / "fingerprint.json").write_text(json.dumps(facts | {"torch": "another"}))  # built for something else
    (damaged / "block.bin").write_bytes((damaged / "block.bin").read_bytes()[:100])  # cut short
    again = start(tiny_wan_dir, cache, "stale", BLOCKS)
    assert again == {"built": 2, "loaded": n - 2, "preloaded": n - 2, "read_ahead": n - 1}
    assert json.loads((stale / "fingerprint.json").read_text()) == facts


def test_a_block_fingerprint_names_its_inputs_and_the_baked_in_settings(tiny_pipe) -> None:
    from wan_t2i.aot import block_fingerprint, repeated_blocks

    transformer = tiny_pipe.components.transformer
    block = repeated_blocks(transformer)[0]
    x, text = torch.zeros(2, 24, 32), torch.zeros(2, 16, 32)
    facts = block_fingerprint(transformer, block, (x, text), {"temb": torch.zeros(2, 6, 32)})
    assert facts["args"] == [["cpu", [2, 24, 32], "torch.float32"], ["cpu", [2, 16, 32], "torch.float32"]]
    assert facts["kwargs"] == {"temb": ["cpu", [2, 6, 32], "torch.float32"]} and facts["kind"] == "block"
    assert json.loads(json.dumps(facts)) == facts  # compared with fingerprint.json as read back
    assert key_of(facts) != key_of(block_fingerprint(transformer, block, (x[:1], text[:1]), {}))
    with torch.inference_mode():
        assert key_of(facts) != key_of(
            block_fingerprint(transformer, block, (x, text), {"temb": torch.zeros(2, 6, 32)})
        )


def test_blocks_compiled_with_inductor_options_are_filed_apart(
    tiny_pipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PerformanceSettings.multi_kernel under a compile cache: the blocks are compiled with the options, which their
    fingerprint keeps, so that blocks built without them are neither found nor replaced."""
    from wan_t2i.aot import PrecompiledBlocks, repeated_blocks

    compiles: list[dict] = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compiles.append(k) or real(*a, **k))
    transformer = tiny_pipe.components.transformer
    block = repeated_blocks(transformer)[0]
    calls: list = []  # a block call's real inputs, as a generation makes them
    hook = block.register_forward_pre_hook(lambda _m, a, k: calls.append((a, k)), with_kwargs=True)
    tiny_pipe.generate("a lake", samplers=["flow_unipc"], steps=1, seed=1)
    hook.remove()
    inputs = calls[0]
    with torch.inference_mode():
        plain = PrecompiledBlocks(transformer, tmp_path)
        plain(block, *inputs[0], **inputs[1])
        optioned = PrecompiledBlocks(transformer, tmp_path, options={"triton.multi_kernel": 1})
        optioned(block, *inputs[0], **inputs[1])
    assert (plain.built, optioned.built, optioned.loaded) == (1, 1, 0)  # not the plain block: built anew
    assert [c.get("options") for c in compiles] == [None, {"triton.multi_kernel": 1}]
    filed = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/fingerprint.json"))]
    assert sorted(f.get("inductor_options") is not None for f in filed) == [False, True]


FP8_BLOCKS = """
import json, sys
import torch
import torchao.float8.inference, torchao.quantization.quant_api
# torchao refuses fp8 where no GPU has FP8; its tensors run on the CPU all the same (slowly): the stand-in here
torchao.float8.inference._check_hardware_support = lambda *args, **kwargs: None
torchao.quantization.quant_api._check_hardware_support = lambda *args, **kwargs: None
from wan_t2i import aot
from wan_t2i.performance import PerformanceSettings, apply
from wan_t2i.pipeline import WanT2IPipeline
read_ahead = aot.preload(sys.argv[2], "cpu")
pipe = WanT2IPipeline.from_pretrained(teacher_path=sys.argv[1], device="cpu", dtype=torch.bfloat16)
if sys.argv[3] == "no-compiling":
    def refuse(*args, **kwargs):
        raise RuntimeError("compiled at a second start")
    torch.compile = refuse
cache = None if sys.argv[3] == "eager" else sys.argv[2]
apply(pipe.components, PerformanceSettings(fp8=True, compile_cache=cache))
generation = pipe.generate("a lake", samplers=["flow_unipc"], steps=3, seed=1)
generation.results["flow_unipc"].image.save(f"{sys.argv[2]}/fp8-{sys.argv[3]}.png")
blocks = aot.ahead_of(pipe.components.transformer)
print(json.dumps({"built": blocks.built, "loaded": blocks.loaded, "preloaded": blocks.preloaded} if blocks else {}))
"""


@pytest.mark.slow
def test_fp8_blocks_are_compiled_once_and_loaded_by_a_second_start(tiny_wan_dir: Path, tmp_path: Path) -> None:
    """#19: the fp8 preset's blocks (torchao float8 linears) in the compile cache. Dynamo cannot save their guards as
    torchao leaves them (`make_serialisable` mends that); here on the CPU, which runs torchao's fp8 tensors once its
    hardware check is waived: start 1 builds, start 2 (torch.compile made to fail) reads them ahead and loads them,
    and both render what the fp8 blocks render eagerly."""
    pytest.importorskip("torchao")
    cache = tmp_path / "cache"
    cache.mkdir()
    first = start(tiny_wan_dir, cache, "first", FP8_BLOCKS)
    assert first["built"] >= 1 and first["loaded"] == 0
    facts = json.loads(next(cache.glob("*/fingerprint.json")).read_text())
    assert any("Float8Tensor" in kind and "torch.float8_e4m3fn" in kind for kind in facts["weights"]), facts
    kernels = set(cache.glob("inductor/**/*.main.cpp"))
    assert kernels
    second = start(tiny_wan_dir, cache, "no-compiling", FP8_BLOCKS)
    assert second == {"built": 0, "loaded": first["built"], "preloaded": second["preloaded"]}
    assert set(cache.glob("inductor/**/*.main.cpp")) == kernels  # the fp8 block's kernels, not compiled again
    assert second["preloaded"] >= 1
    assert start(tiny_wan_dir, cache, "eager", FP8_BLOCKS) == {}
    eager = np.asarray(Image.open(cache / "fp8-eager.png"), dtype=np.int16)
    for mode in ("first", "no-compiling"):
        served = np.asarray(Image.open(cache / f"fp8-{mode}.png"), dtype=np.int16)
        assert np.abs(served - eager).max() <= 2, mode


@pytest.mark.slow
def test_a_block_read_ahead_warms_up_on_a_stand_in_of_its_kind(tiny_wan_dir: Path, tmp_path: Path) -> None:
    """`warm_block` (what `preload` runs on a GPU after reading a block): the block function runs once on a stand-in
    block that `stand_in_block` builds from the fingerprint alone (random weights, fused projections where the model
    had them) and passes the function's guards; it is skipped where the process's attention order or TF32 are not
    those filed, or the block class is unknown. Run here on the CPU, where `preload` itself does not warm up."""
    from wan_t2i.aot import compile_ahead, read_block, stand_in_block, warm_block, weight_kinds
    from wan_t2i.loading import load_components
    from wan_t2i.performance import apply
    from wan_t2i.pipeline import WanT2IPipeline

    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    apply(components, PerformanceSettings(fused_projections=True))
    transformer = components.transformer
    compile_ahead(transformer, tmp_path, kind="blocks")
    WanT2IPipeline(components).generate("a lake", steps=1, seed=1)
    (folder,) = [p.parent for p in tmp_path.glob("*/fingerprint.json")]
    facts = json.loads((folder / "fingerprint.json").read_text())
    assert facts["fused_projections"] is True
    stand_in = stand_in_block(facts)
    assert stand_in is not None and hasattr(stand_in.attn1, "to_qkv") and not hasattr(stand_in.attn1, "to_q")
    assert weight_kinds(stand_in) == facts["weights"]
    assert sum(p.numel() for p in stand_in.parameters()) == sum(p.numel() for p in transformer.blocks[0].parameters())
    function = read_block(folder, facts)
    calls = []

    def spy(block, *args, **kwargs):
        calls.append(block)
        return function(block, *args, **kwargs)

    spy.guard_check = function.guard_check
    assert warm_block(spy, facts) and len(calls) == 1 and calls[0] is not transformer.blocks[0]
    assert not warm_block(spy, facts | {"tf32": not facts["tf32"]})
    assert not warm_block(spy, facts | {"attention_order": [*facts["attention_order"], 99]})
    assert not warm_block(spy, facts | {"block": "AnotherBlock"})
    assert len(calls) == 1


def test_a_stand_in_block_has_the_loaded_blocks_dtypes(tiny_wan_dir: Path) -> None:
    """A bf16 model keeps some of a block's parameters in fp32 as diffusers loads it (`_keep_in_fp32_modules`): the
    stand-in made from the fingerprint alone has each parameter's dtype and shape as the loaded block has them."""
    from wan_t2i.aot import block_fingerprint, repeated_blocks, stand_in_block
    from wan_t2i.loading import load_components

    transformer = load_components(teacher_path=tiny_wan_dir, device="cpu", dtype=torch.bfloat16).transformer
    block = repeated_blocks(transformer)[0]
    inputs = (torch.zeros(2, 6, 16, dtype=torch.bfloat16), torch.zeros(2, 512, 16, dtype=torch.bfloat16))
    stand_in = stand_in_block(json.loads(json.dumps(block_fingerprint(transformer, block, inputs, {}))))
    loaded = {name: (p.dtype, p.shape) for name, p in block.named_parameters()}
    assert {torch.float32, torch.bfloat16} <= {dtype for dtype, _ in loaded.values()}
    assert {name: (p.dtype, p.shape) for name, p in stand_in.named_parameters()} == loaded
