"""Performance settings: presets per device, `apply` on the CPU; the GPU benchmark's FLOP count, parts and smoke run."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import math
import pstats
import re
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_transformer
from diffusers import WanTransformer3DModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import transformer_flops
from benchmarks.gpu_measure import forward_batches, matmul_peak, measure_floor
from benchmarks.gpu_record import clean, device_slug
from benchmarks.gpu_report import loop_floor, write_results_md
from wan_t2i import performance
from wan_t2i.constants import TEXT_LEN
from wan_t2i.loading import load_components
from wan_t2i.performance import PerformanceSettings, apply
from wan_t2i.pipeline import LOADING_SWITCH_INTERVAL_S, WanT2IPipeline
from wan_t2i.single_frame import is_flat

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_presets_are_the_default_one_frame_vae():
    assert PerformanceSettings.default_for("cpu") == PerformanceSettings(vae_2d=True)
    assert PerformanceSettings.fastest("cpu") == PerformanceSettings(vae_2d=True)
    assert PerformanceSettings.low_memory_for("cpu") == PerformanceSettings(vae_2d=True)


def test_cuda_presets():
    default = PerformanceSettings.default_for("cuda")
    assert default.tf32 and not default.compile and default.vae_dtype is None and not default.low_memory
    low = PerformanceSettings.low_memory_for("cuda")
    assert low.low_memory and not low.compile and low.resident_gb == 0  # no card to measure here: stream everything
    assert default.vae_2d and low.vae_2d and not default.text_graphs


def test_low_memory_keeps_what_the_card_has_room_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=40e9))
    assert PerformanceSettings.low_memory_for("cuda").resident_gb == 40 - performance.LOW_MEMORY_HEADROOM_GB
    # A shared card: the user says how much of it to plan for.
    assert performance.preset("low_memory", "cuda", 24).resident_gb == 24 - performance.LOW_MEMORY_HEADROOM_GB
    assert performance.preset("low_memory", "cuda") == PerformanceSettings.low_memory_for("cuda")
    with pytest.raises(ValueError, match="gpu_memory_gb must be a number of GB > 0, got nan"):
        performance.preset("low_memory", "cuda", float("nan"))
    with pytest.raises(ValueError, match="gpu_memory_gb is for the low_memory preset"):
        performance.preset("fastest", "cuda", 24)


def test_fastest_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    hopper = PerformanceSettings.fastest("cuda")
    assert hopper.compile and hopper.vae_dtype == torch.bfloat16 and hopper.attention == "cudnn"
    assert hopper.text_graphs and hopper.vae_2d
    for capability in ((8, 0), (10, 0), (12, 0)):  # cuDNN first on Hopper only: not on Ampere or Blackwell
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert PerformanceSettings.fastest("cuda").attention is None, capability


def test_fastest_adds_cuda_graphs_only_where_the_records_show_they_pay(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert PerformanceSettings.fastest("cuda").compile_mode == "auto"
    card = {"gb": 80.0}
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(total_memory=card["gb"] * performance.GB))  # fmt: skip
    small = torch.nn.Linear(8, 8)
    with torch.device("meta"):  # parameters counted, never allocated
        large = torch.nn.Sequential(*[torch.nn.Linear(5120, 5120) for _ in range(120)])  # 3.1e9
    assert performance.graphs_pay(small, "cuda") and not performance.graphs_pay(large, "cuda")
    card["gb"] = 48.0  # never measured on a card this small: graphs added 10-11 GB to the 1.3B's 16 GB
    assert not performance.graphs_pay(small, "cuda")
    assert not performance.graphs_pay(small, "cpu")
    with pytest.raises(ValueError, match="compile_mode must be one of auto, default, reduce-overhead"):
        PerformanceSettings(compile_mode="fast")


def test_fp8_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match=r"^the fp8 preset needs a CUDA GPU with FP8 \(compute capability >= 8.9\), "
                       "not cpu$"):  # fmt: skip
        performance.preset("fp8", "cpu")


def test_fp8_is_refused_below_compute_capability_8_9(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match="needs compute capability >= 8.9.*A100-SXM4-80GB has 8.0: use fastest$"):
        performance.preset("fp8", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))  # an RTX 3090: no FP8
    with pytest.raises(ValueError, match="has 8.6"):
        performance.preset("fp8", "cuda")


def test_fp8_is_refused_without_torchao(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao", None)  # what importlib reports for a package that is not installed
    with pytest.raises(ValueError, match=r"needs torchao: pip install 'wan-t2i\[gpu\]'"):
        performance.preset("fp8", "cuda")


def test_fp8_where_it_runs_is_fastest_with_fp8_blocks(monkeypatch):
    """On an FP8 GPU with torchao installed (stood in for: only its presence is checked before quantising)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    fake = types.ModuleType("torchao")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchao", None)
    monkeypatch.setitem(sys.modules, "torchao", fake)
    settings = performance.preset("fp8", "cuda")
    assert settings == dataclasses.replace(
        PerformanceSettings.fastest("cuda"), fp8=True, compile_mode="default", fused_projections=True
    )
    assert settings.compile and settings.vae_dtype == torch.bfloat16 and settings.attention is None  # 8.9 is no Hopper
    with pytest.raises(ValueError, match="fp8 and low_memory cannot be combined"):
        PerformanceSettings(fp8=True, low_memory=True)


def test_cli_refuses_fp8_on_the_cpu_in_one_line(capsys):
    """Before any model is loaded: the preset is chosen first."""
    from wan_t2i import cli

    assert cli.main(["--prompt", "a lake", "--device", "cpu", "--performance", "fp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: the fp8 preset needs a CUDA GPU with FP8 (compute capability >= 8.9), not cpu"


def test_settings_reject_bad_combinations():
    with pytest.raises(ValueError, match="compile and low_memory"):
        PerformanceSettings(compile=True, low_memory=True)
    with pytest.raises(ValueError, match="attention must be"):
        PerformanceSettings(attention="flash3")


def test_apply_defaults_on_cpu_changes_only_the_rounding_of_the_decode(tiny_wan_dir):
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch._C._get_sdp_priority_order())
    pipe = WanT2IPipeline(load_components(teacher_path=tiny_wan_dir, device="cpu"))
    before = pipe.generate("a lake at sunset", seed=3)
    apply(pipe.components, PerformanceSettings.default_for("cpu"))
    apply(pipe.components, PerformanceSettings.low_memory_for("cpu"))
    pipe._text_cache.clear()
    after = pipe.generate("a lake at sunset", seed=3)
    assert torch.equal(before["flow_unipc"].latents, after["flow_unipc"].latents)
    # The one-frame VAE in 2D (vae_2d) sums the same products in another order: a pixel may move by one level.
    pixels = [np.asarray(g["flow_unipc"].image).astype(int) for g in (before, after)]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1
    assert pipe.components.vae.dtype == torch.float32 and is_flat(pipe.components.vae)
    assert not performance.is_compiled(pipe.components.transformer)
    assert not performance.is_offloaded(pipe.components.transformer)
    flags_after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    assert flags_after + (torch._C._get_sdp_priority_order(),) == flags


@torch.inference_mode()
def test_streamed_layers_compute_the_same(tiny_wan_dir):
    """Group offloading as low_memory sets it up (here CPU to CPU, no side stream): the UMT5 encoder, whose token
    embedding is tied, and the Wan transformer give the same outputs, and each layer is a group of its own."""
    from diffusers.hooks import HookRegistry

    c = load_components(teacher_path=tiny_wan_dir, device="cpu")
    ids = torch.randint(0, c.text_encoder.config.vocab_size, (1, 12))
    text_before = c.text_encoder(ids).last_hidden_state
    x = torch.randn(2, c.transformer.config.in_channels, 1, 8, 8)
    context = torch.randn(2, 12, c.transformer.config.text_dim)
    t = torch.tensor([900, 100])
    video_before = c.transformer(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
    for module in (c.text_encoder, c.transformer):
        performance.stream_layers(module, torch.device("cpu"))
        assert performance.is_offloaded(module)
    layers = [c.text_encoder.encoder.embed_tokens, c.text_encoder.encoder.block[0].layer[0].SelfAttention.q]
    layers += [c.transformer.blocks[0].attn1.to_q, c.transformer.condition_embedder.time_proj]
    for layer in layers:
        assert HookRegistry.check_if_exists_or_initialize(layer).get_hook("group_offloading") is not None
    assert torch.equal(c.text_encoder(ids).last_hidden_state, text_before)
    video_after = c.transformer(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
    assert torch.equal(video_after, video_before)


@torch.inference_mode()
def test_resident_blocks_stay_whole_and_the_rest_streams():
    """low_memory on a card with room: the blocks in `resident` get no offloading hooks and are used as they are;
    every other layer streams; the output is unchanged and the model's tree is the original one afterwards."""
    from diffusers.hooks import HookRegistry

    def hooked(module):
        return HookRegistry.check_if_exists_or_initialize(module).get_hook("group_offloading") is not None

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    ).eval()  # fmt: skip
    inputs = dict(
        hidden_states=torch.randn(2, 16, 1, 8, 8), timestep=torch.tensor([900, 100]),
        encoder_hidden_states=torch.randn(2, 12, 32), return_dict=False,
    )  # fmt: skip
    before = model(**inputs)[0]
    blocks = list(model.blocks)
    resident = performance.resident_blocks(model, 2.5 * sum(p.nbytes for p in blocks[0].parameters()))
    assert resident == [blocks[1], blocks[3]]  # 2 of 4 blocks fit, spread over the depth
    performance.stream_layers(model, torch.device("cpu"), resident=resident)
    assert list(model.blocks) == blocks and performance.is_offloaded(model)
    assert not any(hooked(m) for block in resident for m in block.modules())
    assert hooked(blocks[0].attn1.to_q) and hooked(blocks[2].ffn.net[2]) and hooked(model.proj_out)
    assert torch.equal(model(**inputs)[0], before)


def test_resident_budget_per_card():
    assert PerformanceSettings.low_memory_for("cuda", gpu_gb=24).resident_gb == 24 - performance.LOW_MEMORY_HEADROOM_GB
    assert PerformanceSettings.low_memory_for("cuda", gpu_gb=8).resident_gb == 0  # small card: everything streams
    assert PerformanceSettings.low_memory_for("cpu") == PerformanceSettings.default_for("cpu")
    model = tiny_transformer()
    block = sum(p.nbytes for p in model.blocks[0].parameters())
    assert performance.resident_blocks(model, 0) == [] and performance.resident_blocks(model, block - 1) == []
    assert performance.resident_blocks(model, 100 * block) == list(model.blocks)
    assert performance.resident_blocks(model, 1.5 * block) == [model.blocks[1]]  # the middle of two
    with pytest.raises(ValueError, match="resident_gb must be a number of GB >= 0, got -1"):
        PerformanceSettings(low_memory=True, resident_gb=-1)


def test_from_pretrained_low_memory_loads_the_large_modules_off_the_gpu(tiny_wan_dir, monkeypatch):
    """With low_memory, the transformers and text encoder are loaded into CPU memory: a model larger than the GPU
    must never be placed on it whole. (On this CPU the placement is the same; the call is what is checked.)"""
    from wan_t2i import pipeline as pipeline_module

    calls = []

    def load_and_record(*args, **kwargs):
        calls.append(kwargs)
        return load_components(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "load_components", load_and_record)
    monkeypatch.setattr(
        pipeline_module, "preset", lambda name, device, gpu_gb=None: PerformanceSettings(low_memory=True)
    )
    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu", performance="low_memory")
    assert calls[0]["offload"] is True
    assert pipe.generate("a lake", seed=1, steps=2)["flow_unipc"].image.size == (
        pipe.defaults.width,
        pipe.defaults.height,
    )


def test_apply_converts_the_vae_and_compiles_blocks_lazily(tiny_wan_dir):
    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    apply(components, PerformanceSettings(compile=True, vae_dtype=torch.bfloat16))
    assert components.vae.dtype == torch.bfloat16
    blocks = components.transformer.blocks
    assert all(block._compiled_call_impl is not None for block in blocks)  # wrapped now, compiled at the first forward
    apply(components, PerformanceSettings())
    assert not performance.is_compiled(components.transformer)
    # CUDA graphs mode: every block call starts a new graph step; undoing the compilation removes that wrapper too.
    apply(components, PerformanceSettings(compile=True, compile_mode="reduce-overhead"))
    assert all(getattr(block._compiled_call_impl, "marks_graph_steps", False) for block in blocks)
    apply(components, PerformanceSettings(compile=True, compile_mode="auto"))  # graphs only where they pay: not here
    assert all(not getattr(block._compiled_call_impl, "marks_graph_steps", False) for block in blocks)
    apply(components, PerformanceSettings())
    assert not performance.is_compiled(components.transformer)


def test_fuse_projections_gives_the_same_output_and_holds_each_weight_once():
    """benchmarks.gpu_profile's +fused variant: diffusers' fused q|k|v and k|v linears, the separate ones dropped."""
    transformer = tiny_transformer().eval()
    inputs = dict(hidden_states=torch.randn(2, 16, 1, 8, 12), timestep=torch.tensor([999, 500]),
                  encoder_hidden_states=torch.randn(2, TEXT_LEN, 32), return_dict=False)  # fmt: skip
    count = sum(p.numel() for p in transformer.parameters())
    with torch.no_grad():
        before = transformer(**inputs)[0]
        performance.fuse_projections(transformer)
        after = transformer(**inputs)[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in transformer.parameters()) == count
    attention = transformer.blocks[0].attn1
    assert hasattr(attention, "to_qkv") and not hasattr(attention, "to_q")


def test_apply_fuses_the_projections_and_refuses_to_unfuse_them(tiny_wan_dir):
    """PerformanceSettings.fused_projections through `apply`: fused once (applying again changes nothing), and
    settings without it refused with what to do, as fp8's are: the separate layers are gone."""
    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    apply(components, PerformanceSettings(fused_projections=True))
    weights = {name: p.data_ptr() for name, p in components.transformer.named_parameters()}
    assert performance.are_fused(components.transformer) and any("to_qkv" in name for name in weights)
    apply(components, PerformanceSettings(fused_projections=True))
    assert {name: p.data_ptr() for name, p in components.transformer.named_parameters()} == weights
    with pytest.raises(ValueError, match="fused, which cannot be undone: load it again"):
        apply(components, PerformanceSettings())


def test_blocks_quantised_unfused_are_not_fused_afterwards(tiny_wan_dir, monkeypatch):
    """fp8 blocks quantised without fused projections cannot be fused then (their weights are quantised already):
    refused with what to do (stood in for: torchao quantises only on a GPU with FP8)."""
    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    monkeypatch.setattr(performance, "is_quantized", lambda transformer: True)
    with pytest.raises(ValueError, match="in fp8 unfused, which cannot be undone: load it again to fuse"):
        apply(components, PerformanceSettings(fused_projections=True))
    assert not performance.are_fused(components.transformer)


def test_compile_blocks_passes_inductor_options_with_those_of_its_mode(monkeypatch):
    """multi_kernel and benchmarks.gpu_profile's variants compile with Inductor options; torch.compile takes a mode
    or options, so another mode's options are added to them."""
    transformer = tiny_transformer().eval()
    compiles: list[dict] = []
    real = torch.compile

    def spy(*args, **kwargs):
        compiles.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    performance.compile_blocks(transformer, options={"coordinate_descent_tuning": True})
    assert compiles and all(c["options"] == {"coordinate_descent_tuning": True} and "mode" not in c for c in compiles)
    performance.uncompile_blocks(transformer)
    compiles.clear()
    performance.compile_blocks(transformer, mode="reduce-overhead", options={"triton.multi_kernel": 1})
    assert compiles and all(c["options"] == {"triton.cudagraphs": True, "triton.multi_kernel": 1} for c in compiles)
    performance.uncompile_blocks(transformer)


def test_prefer_attention_backend_puts_cudnn_first():
    order = torch._C._get_sdp_priority_order()
    try:
        performance.prefer_attention_backend("cudnn")
        new = torch._C._get_sdp_priority_order()
        assert new[0] == int(torch.nn.attention.SDPBackend.CUDNN_ATTENTION) and sorted(new) == sorted(order)
    finally:
        torch._C._set_sdp_priority_order(order)


def test_transformer_flops_match_a_flop_counter():
    """The hand count against PyTorch's own count of a real forward (matmuls and attention)."""
    model = tiny_transformer().eval()
    x = torch.randn(1, 16, 1, 8, 12)  # 4 x 6 = 24 patches
    # the math backend runs attention as matmuls, which the counter sees (it skips the fused CPU kernel)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, TEXT_LEN, 32))
    expected = transformer_flops(model.config, tokens=24)
    # the counter also sees the timestep embedder and its projection, which the hand count leaves out
    config = model.config
    dim = config.num_attention_heads * config.attention_head_dim
    timestep = 2 * (config.freq_dim * dim + dim * dim + dim * 6 * dim)
    assert counter.get_total_flops() == pytest.approx(expected + timestep, rel=1e-6)


def test_transformer_flops_of_the_14b_expert():
    """Wan2.2-A14B expert at 1024x1024: about 116 TFLOP per sample and forward, 86% of it in image-token linears."""
    config = SimpleNamespace(
        num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, patch_size=(1, 2, 2),
        in_channels=16, out_channels=16, text_dim=4096,
    )  # fmt: skip
    assert transformer_flops(config, tokens=64 * 64) / 1e12 == pytest.approx(115.6, abs=0.5)


def test_benchmark_parts_on_cpu(tmp_path):
    peak = matmul_peak(64, "cpu", torch.float32, repeats=2, inner=2)
    assert peak["tflops"] > 0
    model = tiny_transformer().eval()
    floor, out = measure_floor(model, 2, (64, 64), steps=2, runs=1, peak_tflops=peak["tflops"])
    assert out.shape == (2, 16, 1, 8, 8) and 0 < floor["mfu"] and floor["tflop"] > 0
    results = {
        "meta": {"device": "test", "steps": 2, "command": "python -m benchmarks.gpu", "commit": "0123456789abcdef"},
        "items": {
            "peak": peak,
            "1.3b@480x832/stock": {"median_s": 1.5, "peak_gb": 20.0},
            "1.3b@480x832/ours": {"median_s": 0.6, "psnr_db": 40.0},
            "1.3b@480x832/pair": {"median_s": 0.9, "psnr_db": math.inf},
            "1.3b@480x832/floor_b2": floor,
            "14b@1024x1024/stock": {"error": "out of memory"},
            "14b@1024x1024/stock_knobs": {"median_s": 8.0},
            "14b@1024x1024/ours": {"median_s": 7.9},
            "14b@1024x1024/fp8": {"median_s": 4.8, "first_image_s": 60.0, "graphs_compiled": 3, "psnr_db": 30.0},
            "14b@1024x1024/fp8_floor_b2": {"median_s": 4.6, "mfu": 1.2, "mfu_fp8": 0.6, "rel_error_vs_eager": 0.03},
            "14b@1024x1024/floor_b2": {"median_s": 7.8},
            "14b@1024x1024/floor_b4": {"median_s": 15.6},
            # 5 steps at batches 2, 4, 4, 4, 2: its loops cost (2 * 7.8 + 3 * 15.6) / 5 / 7.8 = 1.6x one image's
            "14b@1024x1024/pair": {"median_s": 13.5, "forward_batches": [2, 4, 4, 4, 2]},
            "fp8cap48gb/a14b@1024x1024": {
                "gpu_gb": 48.0,
                "resident_gb": 40.1,
                "one": {"seconds": 5.0, "peak_gb": 46.0},
                "pair": {"error": "out of memory", "peak_gb": 47.9},
            },  # fmt: skip
            "lowmem/14b@480x832": {"median_s": 30.0, "peak_gb": 13.0, "slowdown_vs_ours": 8.0},
        },
        "errors": [{"item": "14b@1024x1024/stock", "traceback": ""}],
        "skipped": ["ttfi/1.3b@480x832"],
    }
    path = tmp_path / "RESULTS.md"
    write_results_md(results, path)
    text = path.read_text()
    assert "| 1.3B one image <= 0.5x stock | 0.400 | yes |" in text
    assert "| 1.3B A/B pair <= 1.3x one image | 1.500 | NO |" in text
    assert "| low-memory 14B at 480x832 under 20 GB | 13.000 | yes |" in text
    assert "| 14b@1024x1024 | OOM | 8.000 |" in text and "Skipped (time budget, or --skip): ttfi/1.3b@480x832" in text
    assert "| 14B fp8 one image <= 0.65x stock with the same knobs | 0.600 | yes |" in text
    assert "| 14B pair / one <= its bare loops' ratio + 0.1 | 0.109 | NO |" in text  # 13.5 / 7.9 - 1.6
    assert (
        "| 14b@1024x1024 | 8.000 | 7.900 | 4.800 | 0.60 | 0.61 | - | 60.0 (3) | 4.600 (120% / 60%) | 3.00e-02 " in text
    )
    assert "resident 40.1 GB; one 5.00 s, peak 46.0 GB; pair OOM, peak 47.9 GB |" in text
    assert "Code: commit 0123456789ab.\n" in text  # no `dirty` key: nothing said about uncommitted changes
    json.dumps(clean(results))  # infinities become strings


def test_skip_leaves_named_measurements_out(tmp_path):
    from benchmarks.gpu_models import SMOKE
    from benchmarks.gpu_record import Bench

    bench = Bench(SMOKE, ["14b"], None, tmp_path, math.inf, {"device": "test"}, skip={"ours_warm", "fp8cap_pair"})
    ran = []
    assert bench.item("14b", "14b@64x64/ours_warm", lambda: ran.append(1) or {}) is None
    assert bench.item("14b", "14b@64x64/ours", lambda: ran.append(2) or {"median_s": 1.0}) == {"median_s": 1.0}
    assert ran == [2] and bench.results["skipped"] == ["14b@64x64/ours_warm"]
    assert bench.skipped("fp8cap_pair") and not bench.skipped("fp8cap_one")
    assert bench.results["meta"]["skip"] == ["fp8cap_pair", "ours_warm"]
    # The ttfi section's keys name the kind of start first: `--skip ttfi` leaves out the torch.compile starts only.
    ttfi = Bench(SMOKE, ["ttfi"], None, tmp_path / "ttfi", math.inf, {"device": "test"}, skip={"ttfi"})
    assert ttfi.skipped("ttfi/1.3b@480x832+fp8") and not ttfi.skipped("ttfi_aot_first/1.3b@480x832+fp8")


def test_record_folders_are_named_for_the_device():
    assert device_slug("NVIDIA H100 80GB HBM3") == "h100" and device_slug("NVIDIA H200") == "h200"
    assert device_slug("NVIDIA GeForce RTX 4090") == "rtx-4090" and device_slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert device_slug("CPU (x86_64, 2 cores)") == "cpu"


def test_pair_floor_counts_the_forwards_the_pair_really_runs():
    batches = forward_batches(("legacy_ddim", "flow_unipc"), 5)
    assert batches == [2, 4, 4, 4, 2]  # shared first step, legacy_ddim's t = 0 step skipped
    items = {"s/floor_b2": {"median_s": 1.0}, "s/floor_b4": {"median_s": 2.0}}
    assert loop_floor(items, "s", batches) == pytest.approx((2 * 1.0 + 3 * 2.0) / 5)
    assert loop_floor(items, "s", [4]) == 2.0 and loop_floor(items, "s", [8]) is None


def test_a_restart_row_says_beyond_the_weights_and_what_its_first_image_compiled():
    from benchmarks.gpu_report import other_row

    value = {"beyond_weights_s": 2.19, "from_pretrained_s": 13.91, "weights_s": 13.87, "evicted_bytes": 14.7e9,
             "first_image_s": 2.14, "second_image_s": 0.81, "import_s": 17.7, "kind": "PrecompiledBlocks",
             "packages_built": 0, "packages_loaded": 1, "preloaded": 1,
             "first_phases_s": {"encode": 0.72, "denoise": 1.23, "decode": 0.19, "total": 2.14},
             "second_phases_s": {"encode": 0.05, "denoise": 0.73, "decode": 0.03, "total": 0.81},
             "first_image_compile_counters": {"inductor/fxgraph_cache_hit": 1}, "read_block_s": 3.91,
             "preload_wait_s": 0.02, "cache_files_added": ["inductor/a.py", "inductor/b.best_config"],
             "warm_up_s": 0.61}  # fmt: skip
    row = other_row({"ttfi_disk_second/1.3b@480x832": value}, "ttfi_disk_second/1.3b@480x832", value)
    assert "**2.19 s beyond loading the weights**" in row and "encode 0.72, denoise 1.23, decode 0.19" in row
    assert "reading them 3.91 s, the first image's wait for them 0.02 s; files added to the cache 2" in row
    assert "next image 0.81 s: encode 0.05, denoise 0.73, decode 0.03" in row
    assert "the text encoder's warm-up 0.61 s" in row
    assert "compiled during the first image: inductor/fxgraph_cache_hit 1" in row
    del value["first_image_compile_counters"]  # an older record's row says nothing of it
    key = "ttfi_disk_second/1.3b@480x832"
    assert "compiled during" not in other_row({key: value}, key, value)


@pytest.mark.slow
def test_smoke_benchmark_end_to_end(tmp_path):
    """The whole GPU benchmark on tiny models on the CPU, compile and the fresh-process run included (1-6 min): every
    section, the phase profile, the record folder with its commit, and a re-render of RESULTS.md from its JSON."""
    record = tmp_path / "record"
    git = (ROOT / ".git").exists()
    head = (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if git
        else None
    )
    command = [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--record", str(record)]  # reads HEAD at once
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((record / "results.json").read_text())
    assert results["errors"] == [] and results["skipped"] == []
    for key in ("1.3b@64x64/ours", "1.3b@64x64/pair", "14b@64x64/ours", "14b@64x64/floor_b4"):
        assert results["items"][key]["median_s"] > 0
    assert results["items"]["ttfi/1.3b@64x64"]["first_image_s"] > 0
    # What the first image compiled, by PyTorch's own counters: torch.compile's start traced its block there.
    assert results["items"]["ttfi/1.3b@64x64"]["first_image_compile_counters"].get("stats/unique_graphs", 0) >= 1
    restart = results["items"]["ttfi_aot_second/1.3b@64x64"]  # loads what the first start compiled, builds nothing
    assert (restart["packages_built"], restart["packages_loaded"]) == (0, 1)
    assert restart["first_phases_s"]["denoise"] > 0
    assert float(results["items"]["1.3b@64x64/ours"]["psnr_db"]) >= 35
    assert set(results["items"]["1.3b@64x64/pair"]["phases_s"]) == {"encode", "denoise", "decode", "total"}
    steps = results["meta"]["steps"]
    assert results["items"]["1.3b@64x64/pair"]["forward_batches"] == [2] + [4] * (steps - 2) + [2]
    assert float(results["items"]["lowmem/14b@64x64"]["psnr_db"]) >= 35
    assert results["items"]["cudagraphs/1.3b@64x64"]["median_s"] > 0
    text = (record / "RESULTS.md").read_text()
    assert "| 1.3b@64x64 |" in text and "| 1.3b@64x64/pair |" in text and "solver_loop" in text
    # The record says what ran, where, and on which commit; run.log holds what the run printed.
    facts = json.loads((record / "record.json").read_text())
    assert facts["command"] == f"python -m benchmarks.gpu --smoke --record {record}"
    assert facts["device"] == results["meta"]["device"] and facts["date"] == results["meta"]["date"]
    if git:
        assert facts["commit"] == head and isinstance(facts["dirty"], bool)
        assert re.search(f"Code: commit {head[:12]}", text)
    assert "1.3b@64x64/pair -> " in (record / "run.log").read_text()
    # Re-rendering from the JSON alone (no models) gives the same table, plus a caveat when one is given.
    rendered = tmp_path / "again.md"
    render = [sys.executable, "-m", "benchmarks.gpu", "--render", str(record / "results.json")]
    render += ["--results-md", str(rendered), "--note", "a caveat"]
    assert subprocess.run(render, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    assert rendered.read_text().replace("Note: a caveat\n", "") == text


def test_resolutions_for_every_model_or_for_one(tmp_path):
    """`--resolutions 480x832,14b@1024x1024`: the 1.3B at 480x832 only, the 14B at both."""
    from benchmarks.gpu import parse_args, parse_resolutions
    from benchmarks.gpu_models import FULL
    from benchmarks.gpu_record import Bench

    parser, args = parse_args(["--resolutions", "480x832,14b@1024x1024"])
    bench = Bench(FULL, ["1.3b", "14b"], parse_resolutions(parser, args.resolutions, FULL), tmp_path, 1.0, {})
    assert bench.resolutions("1.3b") == [(480, 832)]
    assert bench.resolutions("14b") == [(1024, 1024), (480, 832)]
    with pytest.raises(SystemExit):
        parse_resolutions(parser, "a14b@1024x1024", FULL)


def test_fp8_scales_are_row_or_tensor():
    assert PerformanceSettings().fp8_scales == "row"  # the preset's: torchao's per-row scales
    assert PerformanceSettings(fp8=True, fp8_scales="tensor").fp8_scales == "tensor"
    with pytest.raises(ValueError, match="fp8_scales must be one of row, tensor, got 'block'"):
        PerformanceSettings(fp8=True, fp8_scales="block")
    with pytest.raises(ValueError, match="scales must be one of row, tensor, got 'column'"):
        performance.quantize_blocks_fp8(torch.nn.Linear(16, 16), scales="column")


def test_fp8_quantisation_leaves_inductors_settings_alone(monkeypatch):
    """torchao's configs turn on Inductor's coordinate-descent tuning for the whole process unless told not to; under
    the fp8 preset that re-tuned every fp8 kernel at each start (115 s of a compile-cache restart's first image on an
    H100; 2.8 s once left off, benchmarks/records/2026-12-07-h100-fp8-restart). Here on the CPU, torchao's hardware
    check waived as in test_aot: the blocks are quantised and no Inductor setting has changed."""
    torchao_float8 = pytest.importorskip("torchao.float8.inference")
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(torchao_float8, "_check_hardware_support", lambda *a, **k: None)
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *a, **k: None)
    transformer = tiny_transformer().to(torch.bfloat16)
    watched = ("coordinate_descent_tuning", "coordinate_descent_check_all_directions", "force_fuse_int_mm_with_mul")
    with torch._inductor.config.patch(dict.fromkeys(watched, False)):
        before = torch._inductor.config.save_config_portable()
        performance.quantize_blocks_fp8(transformer)
        assert performance.is_quantized(transformer)
        changed = {k for k, v in torch._inductor.config.save_config_portable().items() if before.get(k) != v}
        assert changed == set(), changed


def test_gpu_profile_splits_a_forward_by_kind_of_kernel(tmp_path):
    """The profile behind the fp8 bound, on the CPU (aten ops in place of kernels): every kind found where it is."""
    from benchmarks import gpu_profile

    assert gpu_profile.kind_of("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x128_4x1x1_kernel0_0") == "attention"
    assert gpu_profile.kind_of("pytorch_flash::flash_fwd_kernel<...>") == "attention"
    assert gpu_profile.kind_of("nvjet_tst_256x128_64x4_2x1_v_bz_coopA_TNT") == "matmul"
    assert gpu_profile.kind_of("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128") == "matmul"
    assert gpu_profile.kind_of("triton_per_fused__to_copy_abs_amax_clamp_0") == "fused elementwise"
    # Inductor names its kernels after what they feed: the fp8 quantisation before a _scaled_mm is not a matmul
    assert gpu_profile.kind_of("triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_div_8") == "fused elementwise"
    assert gpu_profile.kind_of("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention_3") == (
        "fused elementwise"
    )
    assert gpu_profile.kind_of("Memcpy DtoD (Device -> Device)") == "other"
    assert gpu_profile.main(["--smoke", "--model", "1.3b", "--runs", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "profile.json").read_text())
    share = report["bf16"]["share"]
    assert math.isclose(sum(share.values()), 1.0) and share["matmul"] > 0 and share["attention"] > 0
    assert report["bf16"]["forward_s"] > 0
    split = {"forward_s": 1.0, "share": {"matmul": 0.8}}
    assert math.isclose(gpu_profile.bound(split, 2.0), 0.6)  # the rest (0.2) stays, the matmuls (0.8) halve


@pytest.mark.slow
def test_smoke_restarts_from_disk_say_what_they_read_and_added(tmp_path):
    """The ttfi section's starts from disk (--ttfi-disk) on tiny models on the CPU (about 90 s): the first start fills
    the compile cache, the second adds nothing to it and builds nothing (nor do the restarts without the warm-ups and
    at Python's own thread switch interval), and the profiled one (nothing read ahead)
    leaves its whole profile in the record as a pstats file, with the costliest functions by both orders."""
    record = tmp_path / "record"
    command = [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--sections", "ttfi", "--ttfi-disk",
               "--ttfi-unwarmed", "--ttfi-switch-interval", "0.005", "--ttfi-profile", "5", "--skip",
               "ttfi,ttfi_aot_first,ttfi_aot_second,ttfi_aot_profiled", "--record", str(record)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    items = json.loads((record / "results.json").read_text())["items"]
    first, second = items["ttfi_disk_first/1.3b@64x64"], items["ttfi_disk_second/1.3b@64x64"]
    profiled = items["ttfi_disk_profiled/1.3b@64x64"]
    assert first["cache_files_added"] and (first["packages_built"], first["packages_loaded"]) == (1, 0)
    assert second["cache_files_added"] == [] and (second["packages_built"], second["packages_loaded"]) == (0, 1)
    assert second["weights_s"] > 0 and second["beyond_weights_s"] >= second["first_image_s"]
    unwarmed = items["ttfi_disk_unwarmed/1.3b@64x64"]  # the warm-up's A/B start (no warm-up on the CPU either way)
    assert (unwarmed["packages_built"], unwarmed["packages_loaded"]) == (0, 1) and "warm_up_s" not in unwarmed
    switched = items["ttfi_disk_switched/1.3b@64x64"]  # loaded at Python's switch interval, warm-ups on: the A/B
    assert (switched["packages_built"], switched["packages_loaded"]) == (0, 1)
    assert switched["switch_interval_s"] == pytest.approx(0.005)
    assert second["switch_interval_s"] == pytest.approx(LOADING_SWITCH_INTERVAL_S)  # from_pretrained's own
    assert len(profiled["profile"]) == len(profiled["profile_tottime"]) == 7
    stats = pstats.Stats(str(record / "profile-disk-1.3b-64x64.pstats"))
    assert any(name == "generate" for _, _, name in stats.stats)  # the first image, whole
