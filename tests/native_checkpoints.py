"""Write diffusers / transformers modules as Wan's native checkpoints: tiny fixtures for the tests and benchmarks.

The library only reads native checkpoints; these are its converters' maps run backwards, to make test files.
Import it as `from native_checkpoints import ...` in the tests, `from tests.native_checkpoints import ...` from the
repository root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from wan_t2i.native import T5_CHECKPOINT, T5_TOKENIZER, TRANSFORMER_INDEX, TRANSFORMER_WEIGHTS, VAE_CHECKPOINT
from wan_t2i.native_convert import UMT5_RENAMES, UMT5_TIED, transformer_key_map, umt5_key_map, vae_key_map

# --- tensor names -------------------------------------------------------------------------------------------------


def native_transformer_keys(num_layers: int, *, cross_attn_norm: bool = True) -> list[str]:
    """Tensor names of a t2v WanModel (wan/modules/model.py) with `num_layers` blocks and qk_norm.

    diffusers' WanAttention has norm_q / norm_k whatever its qk_norm says, so only qk_norm=True has a diffusers twin.
    """
    keys = ["patch_embedding.weight", "patch_embedding.bias", "head.modulation"]
    for linear in (
        "text_embedding.0",
        "text_embedding.2",
        "time_embedding.0",
        "time_embedding.2",
        "time_projection.1",
        "head.head",
    ):
        keys += [f"{linear}.weight", f"{linear}.bias"]
    for i in range(num_layers):
        block = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            keys += [f"{block}.{attn}.{proj}.{p}" for proj in "qkvo" for p in ("weight", "bias")]
            keys += [f"{block}.{attn}.norm_q.weight", f"{block}.{attn}.norm_k.weight"]
        if cross_attn_norm:
            keys += [f"{block}.norm3.weight", f"{block}.norm3.bias"]
        keys += [f"{block}.ffn.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")]
        keys.append(f"{block}.modulation")
    return keys


def _residual_keys(prefix: str, shortcut: bool) -> list[str]:
    keys = [f"{prefix}.residual.{j}.gamma" for j in (0, 3)]
    keys += [f"{prefix}.residual.{j}.{p}" for j in (2, 6) for p in ("weight", "bias")]
    return keys + ([f"{prefix}.shortcut.weight", f"{prefix}.shortcut.bias"] if shortcut else [])


def _resample_keys(prefix: str, temporal: bool) -> list[str]:
    keys = [f"{prefix}.resample.1.weight", f"{prefix}.resample.1.bias"]
    return keys + ([f"{prefix}.time_conv.weight", f"{prefix}.time_conv.bias"] if temporal else [])


def _middle_keys(prefix: str) -> list[str]:
    attention = [f"{prefix}.middle.1.norm.gamma"]
    attention += [f"{prefix}.middle.1.{layer}.{p}" for layer in ("to_qkv", "proj") for p in ("weight", "bias")]
    return _residual_keys(f"{prefix}.middle.0", False) + attention + _residual_keys(f"{prefix}.middle.2", False)


def native_vae_keys(
    base_dim: int, dim_mult: list[int], num_res_blocks: int, temperal_downsample: list[bool]
) -> list[str]:
    """Tensor names of Wan 2.1's VAE (Encoder3d / Decoder3d in wan/modules/vae.py, no attention in the stages)."""
    keys = [f"{conv}.{p}" for conv in ("conv1", "conv2", "encoder.conv1", "decoder.conv1") for p in ("weight", "bias")]
    dims = [base_dim * m for m in [1, *dim_mult]]
    index = 0
    for stage, (dim_in, dim_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for _ in range(num_res_blocks):
            keys += _residual_keys(f"encoder.downsamples.{index}", dim_in != dim_out)
            dim_in, index = dim_out, index + 1
        if stage != len(dim_mult) - 1:
            keys += _resample_keys(f"encoder.downsamples.{index}", temperal_downsample[stage])
            index += 1
    dims = [base_dim * m for m in [dim_mult[-1], *dim_mult[::-1]]]
    temperal_upsample = temperal_downsample[::-1]
    index = 0
    for stage, (dim_in, dim_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        dim_in = dim_in // 2 if stage > 0 else dim_in  # each upsampling Resample halves the channels
        for _ in range(num_res_blocks + 1):
            keys += _residual_keys(f"decoder.upsamples.{index}", dim_in != dim_out)
            dim_in, index = dim_out, index + 1
        if stage != len(dim_mult) - 1:
            keys += _resample_keys(f"decoder.upsamples.{index}", temperal_upsample[stage])
            index += 1
    keys += _middle_keys("encoder") + _middle_keys("decoder")
    keys += [f"{part}.head.0.gamma" for part in ("encoder", "decoder")]
    keys += [f"{part}.head.2.{p}" for part in ("encoder", "decoder") for p in ("weight", "bias")]
    return keys


def native_umt5_keys(num_layers: int) -> list[str]:
    """Tensor names of Wan's UMT5 encoder (wan/modules/t5.py, shared_pos=False) with `num_layers` blocks."""
    keys = []
    for native, _ in UMT5_RENAMES:
        keys += [native.format(i=i) for i in range(num_layers)] if "{i}" in native else [native]
    return keys


def native_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a diffusers Wan transformer / VAE or a UMT5 encoder under Wan's native names."""
    if isinstance(module, WanTransformer3DModel):
        config = module.config
        if config.image_dim is not None or config.added_kv_proj_dim is not None:
            raise ValueError("only text-to-video transformers (no image branch) can be written in Wan's native names")
        native_keys = native_transformer_keys(config.num_layers, cross_attn_norm=config.cross_attn_norm)
        key_map = transformer_key_map(native_keys)
    elif isinstance(module, AutoencoderKLWan):
        config = module.config
        key_map = vae_key_map(
            native_vae_keys(config.base_dim, config.dim_mult, config.num_res_blocks, config.temperal_downsample)
        )
    elif isinstance(module, UMT5EncoderModel):
        key_map = {
            hf: native
            for hf, native in umt5_key_map(native_umt5_keys(module.config.num_layers)).items()
            if hf not in UMT5_TIED
        }
    else:
        raise TypeError(f"no native Wan layout for {type(module).__name__}")
    state_dict = module.state_dict()
    unmapped = sorted(set(state_dict) - set(key_map) - set(UMT5_TIED))
    if unmapped:
        raise ValueError(f"no native name for {', '.join(unmapped[:5])}")
    return {key_map[key]: tensor for key, tensor in state_dict.items() if key in key_map}


# --- configs and files --------------------------------------------------------------------------------------------


def native_transformer_config(config: Any) -> dict[str, Any]:
    """The config.json WanModel.save_pretrained writes for a t2v WanTransformer3DModel config.

    WanModel's `ignore_for_config` (wan/modules/model.py) keeps patch_size, cross_attn_norm, qk_norm, text_dim and
    window_size out of it, so a loader has to read those off the tensors.
    """
    return {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "text_len": 512,
        "in_dim": config["in_channels"],
        "dim": config["num_attention_heads"] * config["attention_head_dim"],
        "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"],
        "out_dim": config["out_channels"],
        "num_heads": config["num_attention_heads"],
        "num_layers": config["num_layers"],
        "eps": config["eps"],
    }


def write_transformer(model: WanTransformer3DModel, folder: Path, shards: int = 1) -> None:
    """Write `model` as WanModel.save_pretrained would: native config.json and names, optionally sharded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(native_transformer_config(model.config)))
    state_dict = native_state_dict(model)
    if shards == 1:
        save_file(state_dict, folder / TRANSFORMER_WEIGHTS)
        return
    keys = list(state_dict)
    weight_map = {}
    for shard in range(shards):
        name = f"diffusion_pytorch_model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[shard::shards]
        save_file({key: state_dict[key] for key in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())}}
    (folder / TRANSFORMER_INDEX).write_text(json.dumps({**index, "weight_map": weight_map}))


def write_teacher(
    folder: Path,
    *,
    text_encoder: UMT5EncoderModel,
    tokenizer: PreTrainedTokenizerBase,
    vae: AutoencoderKLWan,
    transformers: dict[str, WanTransformer3DModel],
    shards: dict[str, int] | None = None,
) -> Path:
    """Write a native Wan folder: T5 and VAE .pth, tokenizer folder, each transformer in its subfolder ('.': the root).

    `shards` says how many files a subfolder's transformer is split into (default 1).
    """
    folder.mkdir(parents=True)
    torch.save(native_state_dict(text_encoder), folder / T5_CHECKPOINT)
    tokenizer.save_pretrained(folder / T5_TOKENIZER)
    torch.save(native_state_dict(vae), folder / VAE_CHECKPOINT)
    for subfolder, model in transformers.items():
        write_transformer(model, folder / subfolder, shards=(shards or {}).get(subfolder, 1))
    return folder
