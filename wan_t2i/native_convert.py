"""Names and configs of Wan's native checkpoints and their diffusers / transformers twins, in both directions.

Tensor names go native -> diffusers through diffusers' own converters, applied to the names alone (each name is passed
as its own value), so no tensor is touched; the reverse maps are those converters' outputs inverted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from transformers import UMT5Config, UMT5EncoderModel

Shapes = Mapping[str, tuple[int, ...]]

# diffusers' WanTransformer3DModel default, which covers Wan's 1024-entry RoPE tables (wan/modules/model.py).
ROPE_MAX_SEQ_LEN = 1024
# Every released Wan transformer (1.3B, 5B, 14B, A14B) uses 128 channels per attention head.
WAN_HEAD_DIM = 128
# Wan 2.1's VAE (wan/modules/vae.py, used by every Wan 2.1 model and Wan 2.2 A14B): 16 latent channels.
WAN21_Z_DIM = 16

# WanModel.__init__ defaults (wan/modules/model.py) for fields that a native config.json may leave out; the fields
# that set tensor shapes (dim, ffn_dim, num_heads, num_layers, in_dim, out_dim) are required instead.
NATIVE_TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "model_type": "t2v",
    "patch_size": (1, 2, 2),
    "text_len": 512,
    "freq_dim": 256,
    "text_dim": 4096,
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
}
NATIVE_TRANSFORMER_REQUIRED = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim")

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
_UMT5_BACKWARD = [(_rename_pattern(hf), native) for native, hf in UMT5_RENAMES]


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


# --- the reverse: native names for a diffusers / transformers module (fixtures, exports) ----------------------------


def native_transformer_keys(num_layers: int, *, qk_norm: bool = True, cross_attn_norm: bool = True) -> list[str]:
    """Tensor names of a t2v WanModel (wan/modules/model.py) with `num_layers` blocks."""
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
            if qk_norm:
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
        native_keys = native_transformer_keys(
            config.num_layers, qk_norm=config.qk_norm is not None, cross_attn_norm=config.cross_attn_norm
        )
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
    """WanTransformer3DModel config from a native WanModel config.json (Wan's names: dim, num_heads, in_dim...).

    `shapes` (diffusers names) tells whether the model has the image branch, which config.json does not.
    """
    missing = [name for name in NATIVE_TRANSFORMER_REQUIRED if name not in native]
    if missing:
        raise ValueError(f"native transformer config lacks {', '.join(missing)}")
    config = {**NATIVE_TRANSFORMER_DEFAULTS, **native}
    dim, num_heads = config["dim"], config["num_heads"]
    if dim % num_heads:
        raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
    if tuple(config["window_size"]) != (-1, -1):
        raise ValueError(f"window_size {config['window_size']} (local attention) is not supported by diffusers' Wan")
    if config["model_type"] not in ("t2v", "ti2v", "i2v", "flf2v"):
        raise ValueError(f"unknown Wan model_type {config['model_type']!r}")
    return {
        "patch_size": tuple(config["patch_size"]),
        "num_attention_heads": num_heads,
        "attention_head_dim": dim // num_heads,
        "in_channels": config["in_dim"],
        "out_channels": config["out_dim"],
        "text_dim": config["text_dim"],
        "freq_dim": config["freq_dim"],
        "ffn_dim": config["ffn_dim"],
        "num_layers": config["num_layers"],
        "cross_attn_norm": bool(config["cross_attn_norm"]),
        "qk_norm": "rms_norm_across_heads" if config["qk_norm"] else None,
        "eps": config["eps"],
        "rope_max_seq_len": ROPE_MAX_SEQ_LEN,
        **image_branch_config(shapes, dim),
    }


def native_transformer_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Native WanModel config.json for a WanTransformer3DModel config (t2v; the inverse of the above)."""
    return {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "patch_size": list(config["patch_size"]),
        "text_len": NATIVE_TRANSFORMER_DEFAULTS["text_len"],
        "in_dim": config["in_channels"],
        "dim": config["num_attention_heads"] * config["attention_head_dim"],
        "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"],
        "text_dim": config["text_dim"],
        "out_dim": config["out_channels"],
        "num_heads": config["num_attention_heads"],
        "num_layers": config["num_layers"],
        "window_size": [-1, -1],
        "qk_norm": config["qk_norm"] is not None,
        "cross_attn_norm": config["cross_attn_norm"],
        "eps": config["eps"],
    }


def transformer_config_from_shapes(shapes: Shapes, num_heads: int | None = None) -> dict[str, Any]:
    """WanTransformer3DModel config read off diffusers-named tensor shapes; heads default to Wan's 128-wide heads.

    Raises:
        ValueError: if a tensor every Wan transformer has is absent, or `dim` does not split into 128-wide heads.
    """
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
    dim, in_channels, *patch_size = shapes["patch_embedding.weight"]
    if num_heads is None:
        if dim % WAN_HEAD_DIM:
            raise ValueError(
                f"cannot tell the number of attention heads: dim {dim} is not a multiple of Wan's head width "
                f"{WAN_HEAD_DIM}; put the config in the file's metadata (key 'config') or use a folder with config.json"
            )
        num_heads = dim // WAN_HEAD_DIM
    return {
        "patch_size": tuple(patch_size),
        "num_attention_heads": num_heads,
        "attention_head_dim": dim // num_heads,
        "in_channels": in_channels,
        "out_channels": shapes["proj_out.weight"][0] // (patch_size[0] * patch_size[1] * patch_size[2]),
        "text_dim": shapes["condition_embedder.text_embedder.linear_1.weight"][1],
        "freq_dim": shapes["condition_embedder.time_embedder.linear_1.weight"][1],
        "ffn_dim": shapes["blocks.0.ffn.net.0.proj.weight"][0],
        "num_layers": 1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("blocks.")),
        "cross_attn_norm": "blocks.0.norm2.weight" in shapes,
        "qk_norm": "rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shapes else None,
        "eps": NATIVE_TRANSFORMER_DEFAULTS["eps"],
        "rope_max_seq_len": ROPE_MAX_SEQ_LEN,
        **image_branch_config(shapes, dim),
    }


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
