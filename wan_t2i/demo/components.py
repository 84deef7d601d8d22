"""The demo model's architecture: tiny Wan-family components, built from diffusers and transformers classes.

The student is a `WanTransformer3DModel`, the VAE an `AutoencoderKLWan` (z_dim 16, 8x spatial like Wan 2.1's), the text
encoder a small `UMT5EncoderModel` (random and frozen, as Wan's UMT5 is frozen) and the scheduler Wan's flow UniPC, so
the saved bundle is a stock Diffusers `WanPipeline` folder. Sizes were chosen so that 20 guided steps at 256x256 run in
under a second on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wan_t2i.constants import DEFAULT_SHIFT, NUM_TRAIN_TIMESTEPS, PATCH_SIZE, VAE_STRIDE

# diffusers AutoencoderKLWan / Wan 2.1 `vae.py`: `z_dim=16` latent channels; the transformer reads and writes them.
LATENT_CHANNELS = 16


@dataclass(frozen=True)
class TextEncoderConfig:
    d_model: int = 128  # hidden size; also the transformer's text_dim
    num_layers: int = 2  # encoder blocks
    num_heads: int = 4  # attention heads
    d_kv: int = 32  # per-head size
    d_ff: int = 256  # gated-GELU feed-forward size


@dataclass(frozen=True)
class VAEConfig:
    base_dim: int = 24  # encoder channels at full resolution (runs only in training and tests)
    decoder_base_dim: int = 16  # decoder channels at full resolution; decides the CPU decode time
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # channel multipliers per level; 4 levels = three 2x steps = 8x
    num_res_blocks: int = 1  # residual blocks per level (the decoder gets one more, as in Wan)


@dataclass(frozen=True)
class StudentConfig:
    dim: int = 192  # transformer width (num_heads * head_dim)
    num_heads: int = 3  # attention heads
    num_layers: int = 4  # transformer blocks
    ffn_mult: int = 4  # feed-forward width as a multiple of dim
    freq_dim: int = 128  # sinusoidal timestep embedding size


@dataclass(frozen=True)
class DemoComponentsConfig:
    image_size: int  # square training and default sampling resolution
    text_encoder: TextEncoderConfig
    vae: VAEConfig
    student: StudentConfig

    def __post_init__(self) -> None:
        stride = VAE_STRIDE[1] * PATCH_SIZE[1]
        if self.image_size % stride:
            raise ValueError(f"image_size must be a multiple of {stride}, got {self.image_size}")
        if 2 ** (len(self.vae.dim_mult) - 1) != VAE_STRIDE[1]:
            raise ValueError(f"vae.dim_mult needs {VAE_STRIDE[1].bit_length()} levels for 8x, got {self.vae.dim_mult}")
        if self.student.dim % self.student.num_heads:
            raise ValueError(f"student.dim {self.student.dim} is not divisible by num_heads {self.student.num_heads}")


FULL = DemoComponentsConfig(image_size=256, text_encoder=TextEncoderConfig(), vae=VAEConfig(), student=StudentConfig())
# CPU smoke-test sizes: every component keeps its type and shape rules, only the widths and depths shrink.
TINY = DemoComponentsConfig(
    image_size=64,
    text_encoder=TextEncoderConfig(d_model=32, num_layers=1, num_heads=2, d_kv=16, d_ff=64),
    vae=VAEConfig(base_dim=8, decoder_base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
    student=StudentConfig(dim=32, num_heads=2, num_layers=2, ffn_mult=2, freq_dim=32),
)


def build_text_encoder(config: TextEncoderConfig, vocab_size: int, seed: int) -> UMT5EncoderModel:
    """A randomly initialised UMT5 encoder (pad 0, eos 1 as in the word tokenizer), frozen and in eval mode."""
    umt5_config = UMT5Config(
        vocab_size=vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(umt5_config)
    return model.requires_grad_(False).eval()


def build_vae(config: VAEConfig) -> AutoencoderKLWan:
    """An untrained Wan 2.1-layout VAE: 16 latent channels, 8x spatial and 4x temporal compression, no attention."""
    return AutoencoderKLWan(
        base_dim=config.base_dim,
        decoder_base_dim=config.decoder_base_dim,
        z_dim=LATENT_CHANNELS,
        dim_mult=list(config.dim_mult),
        num_res_blocks=config.num_res_blocks,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * LATENT_CHANNELS,  # replaced by the training data's statistics
        latents_std=[1.0] * LATENT_CHANNELS,
        scale_factor_temporal=VAE_STRIDE[0],
        scale_factor_spatial=VAE_STRIDE[1],
    )


def build_transformer(config: StudentConfig, text_dim: int) -> WanTransformer3DModel:
    """An untrained Wan text-to-video transformer (no image conditioning), patch (1, 2, 2) over 16 latent channels."""
    return WanTransformer3DModel(
        patch_size=PATCH_SIZE,
        num_attention_heads=config.num_heads,
        attention_head_dim=config.dim // config.num_heads,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.dim * config.ffn_mult,
        num_layers=config.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )


def build_scheduler(shift: float = DEFAULT_SHIFT) -> UniPCMultistepScheduler:
    """Wan's sampler: UniPC (bh2, order 2) on the shifted flow-matching sigmas."""
    return UniPCMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
