"""Native Wan checkpoints: tiny random models written in Wan's own layout load back into the same modules."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from native_checkpoints import native_state_dict, native_transformer_config, write_teacher, write_transformer
from safetensors.torch import load_file, save_file
from torch.testing import assert_close
from transformers import UMT5Config, UMT5EncoderModel

from wan_t2i import convert
from wan_t2i.demo.tokenizer import build_word_tokenizer
from wan_t2i.native import (
    HIGH_NOISE_FOLDER,
    LOW_NOISE_FOLDER,
    TRANSFORMER_INDEX,
    TRANSFORMER_WEIGHTS,
    VAE_CHECKPOINT,
    check_compatible,
    detect_layout,
    load_native_teacher,
    load_native_text_encoder,
    load_native_transformer,
    load_native_vae,
)

TEXT_DIM = 32
PROMPT = "a red cube on a blue floor"
# Outputs are compared with assert_close's float32 tolerances, not bit for bit: safetensors hands out 8-byte aligned
# buffers and CPU kernels pick their SIMD path (and rounding) by alignment, so even diffusers' own from_pretrained
# differs from the in-memory model by ~3e-7. A misplaced tensor changes the outputs by ~1.


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Add noise to every parameter, so zero-initialised ones matter too and a misplaced tensor shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return module.eval()


def tiny_transformer(
    seed: int, *, heads: int = 2, head_dim: int = 32, text_dim: int = TEXT_DIM, **config: Any
) -> WanTransformer3DModel:
    """A perturbed 2-layer WanTransformer3DModel; `config` sets further fields (patch_size, cross_attn_norm...)."""
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        **config,
    )
    return _perturbed(model, seed)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return _perturbed(AutoencoderKLWan(base_dim=8, z_dim=16), seed)


def tiny_text_encoder(vocab_size: int, d_model: int = TEXT_DIM, seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
    )
    return _perturbed(UMT5EncoderModel(config), seed)


def transformer_output(model: WanTransformer3DModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    frames, height, width = model.config.patch_size
    x = torch.randn(1, 16, frames, 2 * height, 2 * width, generator=generator)  # (B, C, F, H, W): 4 patches
    text = torch.randn(1, 5, model.config.text_dim, generator=generator)  # (B, L, D)
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([700.0]), encoder_hidden_states=text, return_dict=False)[0]


def vae_output(vae: AutoencoderKLWan) -> torch.Tensor:
    z = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return vae.decode(z, return_dict=False)[0]


def text_output(text_encoder: UMT5EncoderModel, tokenizer) -> torch.Tensor:
    tokens = tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():
        return text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tokenizer = build_word_tokenizer(PROMPT.split())
    parts = SimpleNamespace(
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(len(tokenizer)),
        vae=tiny_vae(),
        transformer=tiny_transformer(10),
        transformer_2=tiny_transformer(11),
    )
    root = tmp_path_factory.mktemp("native")
    common = dict(text_encoder=parts.text_encoder, tokenizer=tokenizer, vae=parts.vae)
    parts.wan21 = write_teacher(root / "Wan2.1-T2V-tiny", **common, transformers={".": parts.transformer})
    parts.a14b = write_teacher(
        root / "Wan2.2-T2V-A14B-tiny",
        **common,
        transformers={HIGH_NOISE_FOLDER: parts.transformer, LOW_NOISE_FOLDER: parts.transformer_2},
        shards={LOW_NOISE_FOLDER: 2},
    )
    return parts


def test_native_names_are_wans() -> None:
    """The fixtures' names are Wan's own (wan/modules/model.py, vae.py, t5.py), not diffusers' passed through."""
    transformer_keys = set(native_state_dict(tiny_transformer(0)))
    assert {
        "patch_embedding.weight",
        "text_embedding.0.weight",
        "time_projection.1.bias",
        "head.head.weight",
        "head.modulation",
        "blocks.1.self_attn.q.weight",
        "blocks.1.cross_attn.norm_k.weight",
        "blocks.1.norm3.weight",
        "blocks.1.ffn.2.bias",
        "blocks.1.modulation",
    } <= transformer_keys
    assert not any("attn1" in key or "proj_out" in key or "condition_embedder" in key for key in transformer_keys)
    vae_keys = set(native_state_dict(tiny_vae()))
    assert len(vae_keys) == 194  # the tensor count of Wan2.1_VAE.pth
    assert {
        "conv1.weight",
        "conv2.bias",
        "encoder.downsamples.5.time_conv.weight",
        "encoder.middle.1.to_qkv.weight",
        "decoder.upsamples.3.resample.1.weight",
        "decoder.upsamples.4.shortcut.weight",
        "decoder.head.2.weight",
    } <= vae_keys
    assert not any("down_blocks" in key or "up_blocks" in key or "mid_block" in key for key in vae_keys)
    t5_keys = set(native_state_dict(tiny_text_encoder(16)))
    assert {
        "token_embedding.weight",
        "blocks.1.pos_embedding.embedding.weight",
        "blocks.1.ffn.gate.0.weight",
        "blocks.1.ffn.fc2.weight",
        "norm.weight",
    } <= t5_keys
    assert len(t5_keys) == 2 + 2 * 10


def test_detect_layout(parts: SimpleNamespace, tmp_path: Path) -> None:
    assert detect_layout(parts.wan21) == "native"
    assert detect_layout(parts.a14b) == "native"
    assert detect_layout(parts.a14b / HIGH_NOISE_FOLDER) == "transformer-native"
    assert detect_layout(parts.a14b / HIGH_NOISE_FOLDER / TRANSFORMER_WEIGHTS) == "safetensors-file"
    parts.transformer.save_pretrained(tmp_path / "diffusers_transformer")
    assert detect_layout(tmp_path / "diffusers_transformer") == "transformer-diffusers"
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    assert detect_layout(tmp_path / "pipeline") == "diffusers"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no model_index.json"):
        detect_layout(tmp_path)
    incomplete = shutil.copytree(parts.a14b, tmp_path / "incomplete")
    (incomplete / VAE_CHECKPOINT).unlink()
    shutil.rmtree(incomplete / LOW_NOISE_FOLDER)
    with pytest.raises(FileNotFoundError, match=rf"lacks {VAE_CHECKPOINT}, {LOW_NOISE_FOLDER}/config.json"):
        detect_layout(incomplete)


def test_wan21_teacher_matches_diffusers_modules(parts: SimpleNamespace) -> None:
    teacher = load_native_teacher(parts.wan21, dtype=torch.float32, vae_dtype=torch.float32)
    assert teacher["transformer_2"] is None and teacher["boundary_ratio"] is None
    assert_close(transformer_output(teacher["transformer"]), transformer_output(parts.transformer))
    assert_close(vae_output(teacher["vae"]), vae_output(parts.vae))
    assert_close(
        text_output(teacher["text_encoder"], teacher["tokenizer"]),
        text_output(parts.text_encoder, parts.tokenizer),
    )
    assert not any(p.is_meta for p in teacher["transformer"].parameters())


def test_a14b_teacher_loads_both_experts(parts: SimpleNamespace) -> None:
    teacher = load_native_teacher(parts.a14b, dtype=torch.float32, vae_dtype=torch.float32)
    assert teacher["boundary_ratio"] == 0.875
    assert_close(transformer_output(teacher["transformer"]), transformer_output(parts.transformer))
    # the low-noise expert is the sharded one
    assert_close(transformer_output(teacher["transformer_2"]), transformer_output(parts.transformer_2))
    light = load_native_teacher(parts.a14b, dtype=torch.float32, with_transformers=False)
    assert light["transformer"] is None and light["transformer_2"] is None and light["boundary_ratio"] == 0.875


def test_released_config_json_with_wans_text_width(tmp_path: Path) -> None:
    """Released config.json files name only some fields (no text_dim, patch_size, qk_norm...): the tensors tell them."""
    model = tiny_transformer(40, text_dim=4096)  # WanModel's default text_dim (UMT5-XXL's width)
    write_transformer(model, tmp_path / HIGH_NOISE_FOLDER)
    released_fields = (
        "dim",
        "eps",
        "ffn_dim",
        "freq_dim",
        "in_dim",
        "model_type",
        "num_heads",
        "num_layers",
        "out_dim",
    )
    config = native_transformer_config(model.config)
    released = {"_class_name": "WanModel", "_diffusers_version": "0.33.0", "text_len": 512}
    released |= {name: config[name] for name in released_fields}
    (tmp_path / HIGH_NOISE_FOLDER / "config.json").write_text(json.dumps(released))
    assert_close(transformer_output(load_native_transformer(tmp_path / HIGH_NOISE_FOLDER)), transformer_output(model))


# Transformers unlike Wan's (text_dim 4096, patch (1, 2, 2), cross_attn_norm on) in the fields that WanModel leaves out
# of config.json, and in their number of heads. qk_norm=False has no diffusers twin: see the test after.
NON_WAN_DIMS = {
    "text24-heads4-no-cross-attn-norm": dict(heads=4, head_dim=16, text_dim=24, cross_attn_norm=False),
    "text48-heads3-patch244": dict(heads=3, head_dim=16, text_dim=48, patch_size=(2, 4, 4)),
    "text32-heads1-patch111": dict(heads=1, head_dim=64, patch_size=(1, 1, 1), cross_attn_norm=False),
}


@pytest.mark.parametrize("dims", NON_WAN_DIMS.values(), ids=NON_WAN_DIMS)
def test_non_wan_dims_load_as_their_diffusers_twin(dims: dict[str, Any], tmp_path: Path) -> None:
    twin = tiny_transformer(50, **dims)
    write_transformer(twin, tmp_path / "student")
    written = json.loads((tmp_path / "student" / "config.json").read_text())
    assert not {"text_dim", "patch_size", "qk_norm", "cross_attn_norm"} & set(written)  # as WanModel writes it
    loaded = load_native_transformer(tmp_path / "student")
    for name in ("num_attention_heads", "attention_head_dim", "text_dim", "qk_norm", "cross_attn_norm"):
        assert loaded.config[name] == twin.config[name], name
    assert tuple(loaded.config.patch_size) == tuple(twin.config.patch_size)
    expected = twin.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    assert_close(transformer_output(loaded), transformer_output(twin))


def test_transformer_without_qk_norm_is_refused(parts: SimpleNamespace, tmp_path: Path) -> None:
    """WanModel(qk_norm=False) has no norm_q / norm_k; diffusers' Wan always applies them, so it cannot be loaded."""
    write_transformer(parts.transformer, tmp_path / "student")
    weights = tmp_path / "student" / TRANSFORMER_WEIGHTS
    save_file({key: t for key, t in load_file(weights).items() if not re.search(r"\.norm_[qk]\.", key)}, weights)
    with pytest.raises(ValueError, match=rf"{TRANSFORMER_WEIGHTS}: no norm_q / norm_k tensors: a WanModel without"):
        load_native_transformer(tmp_path / "student")
    write_transformer(parts.transformer, tmp_path / "student")  # the tensors are whole again, config.json is not
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    (tmp_path / "student" / "config.json").write_text(json.dumps({**config, "qk_norm": False}))
    with pytest.raises(ValueError, match="config.json has qk_norm false: a WanModel without qk_norm"):
        load_native_transformer(tmp_path / "student")


def test_config_json_without_num_heads_is_refused(parts: SimpleNamespace, tmp_path: Path) -> None:
    teacher = shutil.copytree(parts.wan21, tmp_path / "teacher")
    config = json.loads((teacher / "config.json").read_text())
    del config["num_heads"]
    (teacher / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="cannot tell the number of attention heads: config.json has no num_heads"):
        load_native_transformer(teacher)


def test_vae_that_is_not_wan21s_says_what_was_expected(tmp_path: Path) -> None:
    torch.save(native_state_dict(AutoencoderKLWan(base_dim=8, z_dim=4)), tmp_path / VAE_CHECKPOINT)
    with pytest.raises(ValueError, match=r"z_dim 4; expected 4 stages of 2 blocks and z_dim 16\)$") as error:
        load_native_vae(tmp_path)
    assert "{" not in str(error.value)


def test_dtype_follows_diffusers_fp32_modules(parts: SimpleNamespace) -> None:
    model = load_native_transformer(parts.a14b / HIGH_NOISE_FOLDER, dtype=torch.bfloat16)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.blocks[0].scale_shift_table.dtype == torch.float32  # in WanTransformer3DModel._keep_in_fp32_modules
    assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    text_encoder, _ = load_native_text_encoder(parts.wan21, dtype=torch.bfloat16)
    assert text_encoder.encoder.embed_tokens.weight.data_ptr() == text_encoder.shared.weight.data_ptr()
    assert text_encoder.shared.weight.dtype == torch.bfloat16


def test_single_safetensors_student(parts: SimpleNamespace, tmp_path: Path) -> None:
    student = tiny_transformer(20, heads=1, head_dim=128)  # Wan's 128-wide heads: the config is read off the shapes
    save_file(native_state_dict(student), tmp_path / "native.safetensors")
    save_file(student.state_dict(), tmp_path / "diffusers.safetensors")
    for name in ("native.safetensors", "diffusers.safetensors"):
        loaded = load_native_transformer(tmp_path / name, dtype=torch.float32)
        assert loaded.config.num_attention_heads == 1 and loaded.config.num_layers == 2
        assert_close(transformer_output(loaded), transformer_output(student))
    # narrower heads must be stated in the file's metadata
    save_file(native_state_dict(parts.transformer), tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match="narrow.safetensors: cannot tell the number of attention heads"):
        load_native_transformer(tmp_path / "narrow.safetensors")
    config = json.dumps(native_transformer_config(parts.transformer.config))
    save_file(native_state_dict(parts.transformer), tmp_path / "narrow.safetensors", metadata={"config": config})
    loaded = load_native_transformer(tmp_path / "narrow.safetensors")
    assert_close(transformer_output(loaded), transformer_output(parts.transformer))


def test_convert_cli_output_loads_with_wan_pipeline(parts: SimpleNamespace, tmp_path: Path) -> None:
    convert.main(["--src", str(parts.a14b), "--dst", str(tmp_path / "out"), "--dtype", "fp32"])
    pipe = WanPipeline.from_pretrained(tmp_path / "out")
    assert pipe.config.boundary_ratio == 0.875 and pipe.scheduler.config.flow_shift == 12.0
    assert_close(transformer_output(pipe.transformer), transformer_output(parts.transformer))
    assert_close(transformer_output(pipe.transformer_2), transformer_output(parts.transformer_2))
    assert_close(vae_output(pipe.vae), vae_output(parts.vae))
    assert_close(text_output(pipe.text_encoder, pipe.tokenizer), text_output(parts.text_encoder, parts.tokenizer))
    frames = pipe(PROMPT, height=16, width=16, num_frames=1, num_inference_steps=2, output_type="np").frames
    assert frames.shape == (1, 1, 16, 16, 3)


def test_damaged_files_name_the_file(parts: SimpleNamespace, tmp_path: Path) -> None:
    teacher = shutil.copytree(parts.wan21, tmp_path / "teacher")
    vae_path = teacher / VAE_CHECKPOINT
    vae_path.write_bytes(vae_path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"{VAE_CHECKPOINT} is truncated or not a PyTorch state dict"):
        load_native_vae(teacher)
    torch.save(native_state_dict(parts.text_encoder), vae_path)  # the wrong model under the VAE's name
    with pytest.raises(ValueError, match=rf"{VAE_CHECKPOINT}: not a Wan VAE"):
        load_native_vae(teacher)
    weights = teacher / TRANSFORMER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{TRANSFORMER_WEIGHTS} is truncated or not a safetensors file"):
        load_native_transformer(teacher)


def test_mismatched_files_name_the_file_and_key(parts: SimpleNamespace, tmp_path: Path) -> None:
    expert = shutil.copytree(parts.a14b / LOW_NOISE_FOLDER, tmp_path / LOW_NOISE_FOLDER)
    config = json.loads((expert / "config.json").read_text())
    (expert / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(ValueError, match=rf"{TRANSFORMER_INDEX}: missing keys blocks\.2\.modulation, blocks\.2\.self"):
        load_native_transformer(expert)
    (expert / "config.json").write_text(json.dumps({**config, "ffn_dim": 96}))
    with pytest.raises(ValueError, match=r"-of-00002\.safetensors: blocks\.\d\.ffn\.0\.(weight|bias) has shape"):
        load_native_transformer(expert)
    (expert / "config.json").write_text(json.dumps(config))
    next(expert.glob("*-00002-of-00002.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="shards that are missing: diffusion_pytorch_model-00002-of-00002"):
        load_native_transformer(expert)


def test_check_compatible_names_both_numbers(parts: SimpleNamespace) -> None:
    check_compatible(parts.transformer, parts.vae, parts.text_encoder)
    wide_text = tiny_transformer(30, text_dim=48)
    with pytest.raises(ValueError, match="text_dim is 48 but the text encoder's d_model is 32"):
        check_compatible(wide_text, parts.vae, parts.text_encoder)
    other_vae = SimpleNamespace(config=SimpleNamespace(z_dim=48))  # Wan 2.2's TI2V VAE has 48 latent channels
    with pytest.raises(ValueError, match="in_channels is 16 but the VAE's z_dim is 48"):
        check_compatible(parts.transformer, other_vae, parts.text_encoder)


def test_original_command_shape_runs_on_native_checkpoints(parts: SimpleNamespace, tmp_path: Path, capsys) -> None:
    """run_inference.py --model_path ./outputs/wan_t2i --teacher_path ./Wan2.2-T2V-A14B, native folders both."""
    from wan_t2i.cli import main
    from wan_t2i.images import read_parameters

    student_dir = tmp_path / "outputs" / "wan_t2i"
    write_transformer(tiny_transformer(7), student_dir, shards=2)
    out = tmp_path / "out.png"
    argv = ["--model_path", str(student_dir), "--teacher_path", str(parts.a14b), "--prompt", PROMPT]
    argv += ["--output_path", str(out), "--num_inference_steps", "3", "--shift", "5.0", "--height", "128"]
    assert main([*argv, "--width", "128", "--seed", "4"]) == 0, capsys.readouterr().err
    assert read_parameters(out)["model"] == "wan_t2i" and read_parameters(out)["seed"] == 4
    assert main([*argv, "--width", "128", "--seed", "4", "--compare_teacher"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out_student_flow_unipc.png").exists() and (tmp_path / "out_teacher_flow_unipc.png").exists()


def test_student_that_does_not_fit_a_native_teacher_is_refused(parts: SimpleNamespace, tmp_path: Path) -> None:
    from wan_t2i.loading import ModelLoadError, load_components

    write_transformer(tiny_transformer(8, text_dim=2 * TEXT_DIM), tmp_path / "student")
    with pytest.raises(ModelLoadError, match="the student does not fit the teacher: .*text_dim"):
        load_components(tmp_path / "student", parts.wan21, device="cpu")


def test_a_native_config_json_with_absurd_sizes_is_refused_before_a_model_is_built(
    parts: SimpleNamespace, tmp_path: Path
) -> None:
    from wan_t2i.loading import ModelLoadError, load_components

    teacher = shutil.copytree(parts.a14b, tmp_path / "teacher")
    config = teacher / LOW_NOISE_FOLDER / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_layers": 1e7}))
    with pytest.raises(ModelLoadError, match=rf"^{config}: num_layers must be an integer .*, got 10000000.0$"):
        load_components(teacher_path=teacher, device="cpu")
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_layers": 2, "dim": 1 << 30}))
    with pytest.raises(ModelLoadError, match=rf"^{config}: dim 1073741824 is outside 1..262144"):
        load_components(teacher_path=teacher, device="cpu")


class _RunsCode:
    """A pickle payload that creates a file when unpickled, as a malicious checkpoint would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused_without_suggesting_weights_only_false(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"encoder.conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / VAE_CHECKPOINT)
    with pytest.raises(ValueError) as error:
        load_native_vae(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / VAE_CHECKPOINT} was refused: it holds a Python object other than tensors")
    assert "(io.open)" in message  # what it asked to run
    assert "weights_only" not in message and "\n" not in message and error.value.__cause__ is None
    assert not marker.exists()


def test_native_encoders_are_handed_over_before_the_experts_load(parts: SimpleNamespace, monkeypatch) -> None:
    """The native layout's `on_encoders` comes before its transformers load, as the Diffusers layout's does."""
    from wan_t2i import native

    events = []
    load = native.load_native_transformer
    monkeypatch.setattr(
        native, "load_native_transformer", lambda *a, **k: events.append("transformer") or load(*a, **k)
    )
    from wan_t2i.loading import load_components

    c = load_components(teacher_path=parts.a14b, device="cpu", on_encoders=lambda t, k: events.append((t, k)))
    assert events[1:] == ["transformer", "transformer"] and events[0] == (c.text_encoder, c.tokenizer)
