"""FLOP count of a Wan transformer forward, for the GPU benchmark's model FLOP utilisation (MFU)."""

from __future__ import annotations

import math

from wan_t2i.constants import TEXT_LEN


def transformer_flops(config, tokens: int, text_tokens: int = TEXT_LEN) -> float:
    """Matmul FLOPs of one Wan transformer forward for one sample of `tokens` latent patches.

    2 x (weights x the tokens they multiply) for every linear layer (cross-attention keys and values and the text
    embedder run on the text tokens), plus 4 N^2 d for self-attention and 4 N T d for cross-attention per layer.
    Elementwise work, norms and the timestep embedder are left out: they are under 1% of the FLOPs.

    Args:
        config: a `WanTransformer3DModel` config (or anything with its fields: heads, head dim, ffn_dim, layers,
            patch_size, in/out channels, text_dim).
        tokens: latent patches per sample, (H / 16) x (W / 16) for one frame at Wan's VAE stride and patch size.
        text_tokens: text-encoder tokens per sample.

    Returns:
        FLOPs of one forward of one sample (multiply by batch and steps for a loop).
    """
    d, f, layers = config.num_attention_heads * config.attention_head_dim, config.ffn_dim, config.num_layers
    patch = math.prod(config.patch_size)
    image_weights = layers * (6 * d * d + 2 * d * f) + patch * (config.in_channels + config.out_channels) * d
    text_weights = layers * 2 * d * d + config.text_dim * d + d * d
    attention = layers * (4 * tokens * tokens * d + 4 * tokens * text_tokens * d)
    return 2.0 * tokens * image_weights + 2.0 * text_tokens * text_weights + attention
