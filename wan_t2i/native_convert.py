"""Names and configs of Wan's native checkpoints, read as their diffusers / transformers twins.

Tensor names go native -> diffusers through diffusers' own converters, applied to the names alone (each name is passed
as its own value), so no tensor is touched. Configs are read off the tensor shapes wherever the shapes tell them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from transformers import UMT5Config

Shapes = Mapping[str, tuple[int, ...]]

# diffusers' WanTransformer3DModel default, which covers Wan's 1024-entry RoPE tables (wan/modules/model.py).
ROPE_MAX_SEQ_LEN = 1024
# Every released Wan transformer (1.3B, 5B, 14B, A14B) uses 128 channels per attention head.
WAN_HEAD_DIM = 128
# Wan 2.1's VAE (wan/modules/vae.py, used by every Wan 2.1 model and Wan 2.2 A14B): 16 latent channels.
WAN21_Z_DIM = 16

# WanModel.__init__'s default eps (wan/modules/model.py), for a single .safetensors file: no tensor tells it.
WAN_EPS = 1e-6
# diffusers' WanTransformer3DModel name for Wan's qk_norm=True (RMSNorm over all heads at once). diffusers' WanAttention
# builds norm_q / norm_k whatever qk_norm says, so a WanModel made with qk_norm=False (no such tensors) has no twin.
WAN_QK_NORM = "rms_norm_across_heads"
NO_QK_NORM = "a WanModel without qk_norm, which diffusers' WanTransformer3DModel cannot build (it normalises q, k)"
# Native config.json names -> WanTransformer3DModel names, for the fields config.json decides when it has them.
NATIVE_CONFIG_NAMES = {
    "in_dim": "in_channels",
    "out_dim": "out_channels",
    "text_dim": "text_dim",
    "freq_dim": "freq_dim",
    "ffn_dim": "ffn_dim",
    "num_layers": "num_layers",
    "eps": "eps",
}
# WanModel.__init__'s model_type values (wan/modules/model.py).
WAN_MODEL_TYPES = ("t2v", "ti2v", "i2v", "flf2v")

# google/umt5-xxl config.json values that the encoder's tensor shapes do not tell.
UMT5_FIXED_CONFIG: dict[str, Any] = {
    "feed_forward_proj": "gated-gelu",
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

# Wan's T5 encoder (wan/modules/t5.py) -> transformers' UMT5EncoderModel, block index as {i}
# (shared/reference/wan_native_layout.md).
UMT5_RENAMES = (
    ("token_embedding.weight", "shared.weight"),
    ("blocks.{i}.norm1.weight", "encoder.block.{i}.layer.0.layer_norm.weight"),
    ("blocks.{i}.attn.q.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight"),
    ("blocks.{i}.attn.k.weight", "encoder.block.{i}.layer.0.SelfAttention.k.weight"),
    ("blocks.{i}.attn.v.weight", "encoder.block.{i}.layer.0.SelfAttention.v.weight"),
    ("blocks.{i}.attn.o.weight", "encoder.block.{i}.layer.0.SelfAttention.o.weight"),
    (
        "blocks.{i}.pos_embedding.embedding.weight",
        "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    ("blocks.{i}.norm2.weight", "encoder.block.{i}.layer.1.layer_norm.weight"),
    ("blocks.{i}.ffn.gate.0.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{i}.ffn.fc1.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{i}.ffn.fc2.weight", "encoder.block.{i}.layer.1.DenseReluDense.wo.weight"),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)
# transformers ties the encoder's input embedding to `shared`; both names must point at the one tensor.
UMT5_TIED = {"encoder.embed_tokens.weight": "shared.weight"}


# --- tensor names -------------------------------------------------------------------------------------------------


def transformer_key_map(native_keys: Iterable[str]) -> dict[str, str]:
    """Map diffusers WanTransformer3DModel names to the native WanModel names given, via diffusers' converter."""
    return convert_wan_transformer_to_diffusers({key: key for key in native_keys})


def vae_key_map(native_keys: Iterable[str]) -> dict[str, str]:
    """Map diffusers AutoencoderKLWan names to the native Wan VAE names given, via diffusers' converter."""
    return convert_wan_vae_to_diffusers({key: key for key in native_keys})


def _rename_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_UMT5_FORWARD = [(_rename_pattern(native), hf) for native, hf in UMT5_RENAMES]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        if match := pattern.match(key):
            return template.format(**match.groupdict())
    return None


def umt5_key_map(native_keys: Iterable[str]) -> dict[str, str]:
    """Map transformers UMT5EncoderModel names to the native Wan T5 names given; names Wan lacks map to themselves."""
    key_map = {}
    for key in native_keys:
        hf_key = _rename(key, _UMT5_FORWARD) or key
        key_map[hf_key] = key
    for tied, source in UMT5_TIED.items():
        if source in key_map:
            key_map[tied] = key_map[source]
    return key_map


# --- configs ------------------------------------------------------------------------------------------------------


def image_branch_config(shapes: Shapes, dim: int) -> dict[str, Any]:
    """The image-conditioning fields of a WanTransformer3DModel config (Wan 2.1 i2v/flf2v CLIP branch), from shapes."""
    image_norm = shapes.get("condition_embedder.image_embedder.norm1.weight")
    pos_embed = shapes.get("condition_embedder.image_embedder.pos_embed")
    return {
        "image_dim": image_norm[0] if image_norm is not None else None,
        "added_kv_proj_dim": dim if "blocks.0.attn2.add_k_proj.weight" in shapes else None,
        "pos_embed_seq_len": pos_embed[1] if pos_embed is not None else None,
    }


def diffusers_transformer_config(native: Mapping[str, Any], shapes: Shapes) -> dict[str, Any]:
    """WanTransformer3DModel config from a native WanModel config.json (Wan's names) and the diffusers-named shapes.

    config.json decides each field it has; the tensor shapes give the rest. WanModel's `ignore_for_config`
    (wan/modules/model.py) keeps patch_size, text_dim, qk_norm and cross_attn_norm out of every config.json it
    writes, and the image branch shows only in the tensors.

    Raises:
        ValueError: if config.json lacks num_heads or asks for what diffusers' Wan cannot build, or a tensor every Wan
            transformer has is absent.
    """
    if "num_heads" not in native:
        raise ValueError("cannot tell the number of attention heads: config.json has no num_heads")
    if tuple(native.get("window_size", (-1, -1))) != (-1, -1):
        raise ValueError(f"window_size {native['window_size']} (local attention) is not supported by diffusers' Wan")
    if native.get("model_type", "t2v") not in WAN_MODEL_TYPES:
        raise ValueError(f"unknown Wan model_type {native['model_type']!r}")
    if not native.get("qk_norm", True):
        raise ValueError(f"config.json has qk_norm false: {NO_QK_NORM}")
    config = _transformer_config_without_heads(shapes)
    shapes_dim = config.pop("dim")
    dim = native.get("dim", shapes_dim)
    config |= {name: native[native_name] for native_name, name in NATIVE_CONFIG_NAMES.items() if native_name in native}
    if "patch_size" in native:
        config["patch_size"] = tuple(native["patch_size"])
    if "cross_attn_norm" in native:
        config["cross_attn_norm"] = bool(native["cross_attn_norm"])
    return config | _split_heads(dim, native["num_heads"])


def transformer_config_from_shapes(shapes: Shapes, num_heads: int | None = None) -> dict[str, Any]:
    """WanTransformer3DModel config read off diffusers-named tensor shapes; heads default to Wan's 128-wide heads.

    Raises:
        ValueError: if a tensor every Wan transformer has is absent, or `dim` does not split into the heads.
    """
    config = _transformer_config_without_heads(shapes)
    dim = config.pop("dim")
    if num_heads is None:
        if dim % WAN_HEAD_DIM:
            raise ValueError(
                f"cannot tell the number of attention heads: dim {dim} is not a multiple of Wan's head width "
                f"{WAN_HEAD_DIM}; put the config in the file's metadata (key 'config') or use a folder with config.json"
            )
        num_heads = dim // WAN_HEAD_DIM
    return config | _split_heads(dim, num_heads)


def _transformer_config_without_heads(shapes: Shapes) -> dict[str, Any]:
    """Every WanTransformer3DModel config field the shapes tell, with the width as `dim` in place of the heads."""
    required = (
        "patch_embedding.weight",
        "condition_embedder.text_embedder.linear_1.weight",
        "condition_embedder.time_embedder.linear_1.weight",
        "blocks.0.ffn.net.0.proj.weight",
        "proj_out.weight",
    )
    missing = [key for key in required if key not in shapes]
    if missing:
        raise ValueError(f"not a Wan transformer: no {', '.join(missing)}")
    if "blocks.0.attn1.norm_q.weight" not in shapes:
        raise ValueError(f"no norm_q / norm_k tensors: {NO_QK_NORM}")
    dim, in_channels, *patch_size = shapes["patch_embedding.weight"]  # Conv3d weight (dim, in_dim, *patch_size)
    return {
        "dim": dim,
        "patch_size": tuple(patch_size),
        "in_channels": in_channels,
        "out_channels": shapes["proj_out.weight"][0] // (patch_size[0] * patch_size[1] * patch_size[2]),
        "text_dim": shapes["condition_embedder.text_embedder.linear_1.weight"][1],
        "freq_dim": shapes["condition_embedder.time_embedder.linear_1.weight"][1],
        "ffn_dim": shapes["blocks.0.ffn.net.0.proj.weight"][0],
        "num_layers": 1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("blocks.")),
        "cross_attn_norm": "blocks.0.norm2.weight" in shapes,  # Wan's norm3 has weights only with cross_attn_norm
        "qk_norm": WAN_QK_NORM,
        "eps": WAN_EPS,
        "rope_max_seq_len": ROPE_MAX_SEQ_LEN,
        **image_branch_config(shapes, dim),
    }


def _split_heads(dim: int, num_heads: int) -> dict[str, int]:
    """The attention fields of a WanTransformer3DModel config of width `dim`."""
    if num_heads <= 0 or dim % num_heads:
        raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
    return {"num_attention_heads": num_heads, "attention_head_dim": dim // num_heads}


def vae_config_from_shapes(shapes: Shapes) -> dict[str, Any]:
    """AutoencoderKLWan config read off native Wan VAE tensor shapes (Wan 2.1 layout, any base width).

    Raises:
        ValueError: if the shapes are not those of a Wan 2.1 style VAE that diffusers' converter handles.
    """
    if "encoder.conv1.weight" not in shapes or "conv2.weight" not in shapes:
        raise ValueError("not a Wan VAE: no encoder.conv1.weight / conv2.weight")
    base_dim, z_dim = shapes["encoder.conv1.weight"][0], shapes["conv2.weight"][0]
    dim_mult, num_res_blocks, temperal_downsample = [], [0], []
    index = 0
    while any(key.startswith(f"encoder.downsamples.{index}.") for key in shapes):
        prefix = f"encoder.downsamples.{index}"
        if f"{prefix}.resample.1.weight" in shapes:
            temperal_downsample.append(f"{prefix}.time_conv.weight" in shapes)
            num_res_blocks.append(0)
        else:
            if num_res_blocks[-1] == 0:
                dim_mult.append(shapes[f"{prefix}.residual.2.weight"][0] // base_dim)
            num_res_blocks[-1] += 1
        index += 1
    config = {
        "base_dim": base_dim,
        "z_dim": z_dim,
        "dim_mult": dim_mult,
        "num_res_blocks": num_res_blocks[0],
        "temperal_downsample": temperal_downsample,
        "attn_scales": [],
    }
    # diffusers' convert_wan_vae_to_diffusers hard-codes the decoder of Wan 2.1's VAE: 4 stages of 2 (+1) blocks.
    if len(dim_mult) != 4 or set(num_res_blocks) != {2} or z_dim != WAN21_Z_DIM:
        raise ValueError(
            f"not a Wan 2.1 VAE (got {len(dim_mult)} stages, {num_res_blocks} residual blocks, z_dim {z_dim}; "
            f"expected 4 stages of 2 blocks and z_dim {WAN21_Z_DIM})"
        )
    return config


def umt5_config_from_shapes(shapes: Shapes) -> UMT5Config:
    """UMT5Config of Wan's T5 encoder read off its native tensor shapes (UMT5-XXL: 4096 wide, 24 layers, 64 heads)."""
    if "token_embedding.weight" not in shapes or "blocks.0.pos_embedding.embedding.weight" not in shapes:
        raise ValueError("not Wan's UMT5 encoder: no token_embedding.weight / blocks.0.pos_embedding.embedding.weight")
    vocab_size, d_model = shapes["token_embedding.weight"]
    num_buckets, num_heads = shapes["blocks.0.pos_embedding.embedding.weight"]
    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=shapes["blocks.0.attn.q.weight"][0] // num_heads,
        d_ff=shapes["blocks.0.ffn.fc1.weight"][0],
        num_layers=1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("blocks.")),
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        **UMT5_FIXED_CONFIG,
    )
