"""Loading through the real diffusers / transformers / huggingface_hub code, offline, on tiny saved models."""

import shutil

import pytest
import torch
from conftest import save_tiny_wan, tiny_transformer

from wan_t2i.loading import ModelLoadError, load_components, parse_dtype, resolve_folder


def test_diffusers_layout_loads_frozen_on_cpu_in_fp32(tiny_wan_dir):
    c = load_components(teacher_path=tiny_wan_dir, device="cpu")
    for module in (c.transformer, c.vae, c.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert c.transformer.dtype == torch.float32 and c.vae.dtype == torch.float32
    assert c.transformer_2 is None and c.boundary_ratio is None
    assert c.defaults.name == "tiny-test" and c.defaults.steps == 4 and c.defaults.resolutions[0] == (32, 48)


def test_dtype_flags_apply_to_transformer_and_vae(tiny_wan_dir):
    c = load_components(teacher_path=tiny_wan_dir, device="cpu", dtype="bf16", vae_dtype="bf16")
    assert c.transformer.dtype == torch.bfloat16 and c.vae.dtype == torch.bfloat16


def test_two_expert_model_loads_both_experts_and_its_boundary(tiny_a14b_dir):
    c = load_components(teacher_path=tiny_a14b_dir, device="cpu")
    assert c.transformer_2 is not None and c.boundary_ratio == 0.875
    assert not torch.equal(c.transformer.proj_out.weight, c.transformer_2.proj_out.weight)


def test_student_overrides_the_transformer(tiny_wan_dir, tmp_path):
    student = tiny_transformer(seed=42)
    student.save_pretrained(tmp_path / "student", max_shard_size="20KB")  # sharded, with an index json
    assert (tmp_path / "student" / "diffusion_pytorch_model.safetensors.index.json").exists()
    c = load_components(tmp_path / "student", tiny_wan_dir, device="cpu", with_teacher=True)
    torch.testing.assert_close(c.transformer.proj_out.weight, student.proj_out.weight)
    assert c.has_teacher and not torch.equal(c.teacher_transformer.proj_out.weight, student.proj_out.weight)
    assert c.defaults.name == "student" and c.defaults.steps == 4  # the teacher bundle's defaults, the student's name


def test_student_without_teacher_path_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="model_path needs teacher_path"):
        load_components(tmp_path, None, device="cpu")


def test_missing_path_says_so():
    with pytest.raises(ModelLoadError, match=r"model path '\./nope/wan' does not exist"):
        load_components(teacher_path="./nope/wan", device="cpu")


def test_folder_that_is_not_a_wan_model_names_what_is_missing(tiny_wan_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_wan_dir, broken)
    shutil.rmtree(broken / "vae")
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(ModelLoadError, match="not a Wan model in the Diffusers layout: missing vae, tokenizer"):
        load_components(teacher_path=broken, device="cpu")


def test_student_with_wrong_latent_channels_is_refused(tiny_wan_dir, tmp_path):
    tiny_transformer(in_channels=48).save_pretrained(tmp_path / "student")
    with pytest.raises(
        ModelLoadError,
        match="the student does not fit the teacher: the transformer's in_channels is 48 but the VAE's z_dim is 16",
    ):
        load_components(tmp_path / "student", tiny_wan_dir, device="cpu")


def test_student_with_wrong_text_width_is_refused(tiny_wan_dir, tmp_path):
    tiny_transformer(text_dim=64).save_pretrained(tmp_path / "student")
    with pytest.raises(
        ModelLoadError,
        match="does not fit the teacher: the transformer's text_dim is 64 but the text encoder's d_model is 32",
    ):
        load_components(tmp_path / "student", tiny_wan_dir, device="cpu")


def test_unreachable_hub_id_says_how_to_work_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face Hub.*local folder.*HF_HUB_OFFLINE"):
        load_components(teacher_path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="cpu")


def test_hub_id_served_from_the_local_hugging_face_cache(monkeypatch, tmp_path):
    """A Hub id resolves through huggingface_hub's real snapshot lookup, here from a cache laid out as the Hub's."""
    snapshot = tmp_path / "models--tiny-org--tiny-wan" / "snapshots" / ("0" * 40)
    save_tiny_wan(snapshot)
    (tmp_path / "models--tiny-org--tiny-wan" / "refs").mkdir()
    (tmp_path / "models--tiny-org--tiny-wan" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert resolve_folder("tiny-org/tiny-wan") == snapshot
    c = load_components(teacher_path="tiny-org/tiny-wan", device="cpu")
    assert c.vae.config.z_dim == 16


def test_bad_dtype_name():
    with pytest.raises(ModelLoadError, match="unknown dtype 'int8'; use one of bf16, fp16, fp32"):
        parse_dtype("int8")


def _edit_json(path, **changes):
    """Rewrite the JSON object at `path` with `changes` merged in."""
    import json

    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.parametrize(
    ("folder", "changes", "message"),
    [
        ("transformer", {"num_layers": 1e7}, r"num_layers must be an integer \(or a list of them\), got 10000000.0"),
        ("transformer", {"num_layers": 10_000_000}, r"num_layers 10000000 is outside 1..256"),
        ("transformer", {"num_attention_heads": "2"}, r"num_attention_heads must be an integer"),
        ("transformer", {"patch_size": [1, 2, 0]}, r"patch_size 0 is outside 1..64"),
        ("vae", {"base_dim": 1 << 30}, r"base_dim 1073741824 is outside 1..4096"),
        ("text_encoder", {"d_model": True}, r"d_model must be an integer"),
    ],
)
def test_config_json_of_wrong_types_or_absurd_sizes_is_refused_before_a_model_is_built(
    tiny_wan_dir, tmp_path, folder, changes, message
):
    """`num_layers: 1e7` would build ten million blocks before a weight is read: refused at once, naming the file."""
    import time

    import psutil

    broken = shutil.copytree(tiny_wan_dir, tmp_path / "broken")
    _edit_json(broken / folder / "config.json", **changes)
    rss = psutil.Process().memory_info().rss
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=rf"^{broken / folder / 'config.json'}: {message}"):
        load_components(teacher_path=broken, device="cpu")
    assert time.monotonic() - start < 10 and psutil.Process().memory_info().rss - rss < 200 << 20


def test_a_student_config_with_absurd_sizes_is_refused(tiny_wan_dir, tmp_path):
    tiny_transformer().save_pretrained(tmp_path / "student")
    _edit_json(tmp_path / "student" / "config.json", ffn_dim=1 << 40)
    with pytest.raises(ModelLoadError, match=rf"^{tmp_path / 'student' / 'config.json'}: ffn_dim \d+ is outside"):
        load_components(tmp_path / "student", tiny_wan_dir, device="cpu")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("model_index.json", '{"vae": ["diffusers", ', r"model_index.json is not valid JSON: .* at line 1"),
        ("model_index.json", "[1, 2]", r"model_index.json must hold a JSON object \{...\}, got list"),
        ("wan_t2i.json", "steps: 4", r"wan_t2i.json is not valid JSON"),
        ("wan_t2i.json", '{"steps": "many"}', r"wan_t2i.json: steps must be an integer, got 'many'"),
        ("wan_t2i.json", '{"resolutions": [[32]]}', r"wan_t2i.json: resolutions must be a list of \[height, width\]"),
        ("wan_t2i.json", '{"guidance_scale": "high"}', r"wan_t2i.json: guidance_scale must be a number, got 'high'"),
    ],
)
def test_invalid_model_index_or_defaults_file_is_named(tiny_wan_dir, tmp_path, name, text, message):
    broken = shutil.copytree(tiny_wan_dir, tmp_path / "broken")
    (broken / name).write_text(text)
    with pytest.raises(ModelLoadError, match=rf"^{broken}/{message}") as error:
        load_components(teacher_path=broken, device="cpu")
    assert "\n" not in str(error.value)


def test_the_encoders_are_handed_over_before_any_transformer_loads(tiny_wan_dir, tiny_a14b_dir, tmp_path, monkeypatch):
    """`on_encoders` (where from_pretrained starts the text encoder's warm-up) gets the frozen text encoder, where it
    stays, and the tokenizer, once, before a transformer loads: a teacher's own, both experts, or a student."""
    from wan_t2i import loading

    events = []
    load_transformer = loading.load_transformer
    monkeypatch.setattr(
        loading, "load_transformer", lambda *a, **k: events.append("transformer") or load_transformer(*a, **k)
    )

    def on_encoders(text_encoder, tokenizer):
        assert not text_encoder.training and not any(p.requires_grad for p in text_encoder.parameters())
        events.append(("encoders", text_encoder, tokenizer))

    student = tmp_path / "student"
    tiny_transformer(seed=42).save_pretrained(student)
    for model_path, teacher_path, transformers in (
        (None, tiny_wan_dir, 1),
        (None, tiny_a14b_dir, 2),
        (student, tiny_wan_dir, 1),
    ):
        events.clear()
        c = load_components(model_path, teacher_path, device="cpu", on_encoders=on_encoders)
        assert [e if isinstance(e, str) else e[0] for e in events] == ["encoders"] + ["transformer"] * transformers
        assert events[0][1] is c.text_encoder and events[0][2] is c.tokenizer
