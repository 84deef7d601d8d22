"""One frame through the Wan VAE with 2D convolutions: the presets' `vae_2d`.

The Wan VAE is a video VAE: its convolutions are causal in time (diffusers' `WanCausalConv3d`), a 3x3x3 kernel over
the frame and the two before it, which for the first frame are zero padding. An image is one frame, so two thirds of
every such convolution multiply zeros: the same output is the kernel's last time slice applied to the frame alone, a
2D convolution. On a 2-core CPU the Wan2.1 VAE (random weights) decoded a 480x832 image in 18.1 s instead of 33.6 s
this way, and encoded it in 10.8 s instead of 18.5 s, the outputs equal to 1.4e-6 (float32 summation order;
`python -m benchmarks.vae_2d --device cpu`, `tests/test_single_frame.py`).

Only a first frame without cached frames takes the 2D path (`cache_x is None`, one frame in); any other call, a video
or a later chunk, runs the layer's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FirstFrameForward:
    """Stands in for a causal conv's `forward`: one frame with nothing cached is a 2D convolution by the kernel's
    last time slice (the slice that meets the frame; the others meet the causal zero padding)."""

    def __init__(self, conv: torch.nn.Conv3d):
        self.forward = conv.forward  # the layer's own (bound) forward
        self.conv = conv

    def __call__(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        if cache_x is not None or x.shape[2] != 1:
            return self.forward(x, cache_x)
        conv = self.conv
        pad_w, _, pad_h = conv._padding[:3]  # diffusers pads (W, W, H, H, 2T, 0) itself and convolves unpadded
        weight = conv.weight[:, :, -1]  # (out, in, kH, kW): the tap on the current frame
        return F.conv2d(x[:, :, 0], weight, conv.bias, conv.stride[1:], (pad_h, pad_w), conv.dilation[1:]).unsqueeze(2)


def flattens(conv: torch.nn.Module) -> bool:
    """Whether `conv` is a causal conv whose first frame sees only zeros before it (padding T-1 frames, stride 1)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    if not isinstance(conv, WanCausalConv3d) or conv.padding_mode != "zeros":
        return False
    frames = conv.kernel_size[0]
    return frames > 1 and conv._padding[4] == frames - 1 and conv.stride[0] == 1 and conv.dilation[0] == 1


def flatten_vae(vae: torch.nn.Module) -> int:
    """Run one-frame calls of `vae`'s causal convolutions as 2D ones; idempotent. Returns how many layers do."""
    count = 0
    for module in vae.modules():
        if flattens(module):
            if not isinstance(module.__dict__.get("forward"), FirstFrameForward):
                module.forward = FirstFrameForward(module)
            count += 1
    return count


def unflatten_vae(vae: torch.nn.Module) -> None:
    """Undo `flatten_vae`: every layer's own forward again."""
    for module in vae.modules():
        if isinstance(module.__dict__.get("forward"), FirstFrameForward):
            del module.forward  # the instance attribute; the class's forward shows through again


def is_flat(vae: torch.nn.Module) -> bool:
    return any(isinstance(m.__dict__.get("forward"), FirstFrameForward) for m in vae.modules())
