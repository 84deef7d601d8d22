"""One frame through the Wan VAE with 2D convolutions (`vae_2d`): the same decode and encode as the causal 3D
convolutions to float32 rounding, for images and for the first frame of a video, and undone exactly."""

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from benchmarks.vae_2d import main as vae_2d_benchmark
from wan_t2i.single_frame import FirstFrameForward, flatten_vae, flattens, is_flat, unflatten_vae

TOLERANCE = 1e-5  # float32: the same products summed in another order


@pytest.fixture(scope="module")
def vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    # Wan2.1's layout (z_dim 16, four levels, causal 3x3x3 convs), narrow enough for the CPU.
    return AutoencoderKLWan(base_dim=16, num_res_blocks=1).eval()


@torch.inference_mode()
def test_an_image_decodes_and_encodes_the_same_in_2d(vae):
    z, image = torch.randn(2, 16, 1, 8, 12), torch.rand(2, 3, 1, 64, 96) * 2 - 1  # (B, C, F, H, W)
    unflatten_vae(vae)
    decoded, encoded = vae.decode(z).sample, vae.encode(image).latent_dist.mean
    causal = [m for m in vae.modules() if isinstance(m, WanCausalConv3d) and m.kernel_size[0] == 3 and m.stride[0] == 1]
    assert flatten_vae(vae) == len(causal) > 10 and flatten_vae(vae) == len(causal)  # idempotent
    assert all(isinstance(m.forward, FirstFrameForward) for m in causal)
    flat_decoded, flat_encoded = vae.decode(z).sample, vae.encode(image).latent_dist.mean
    assert decoded.abs().max() > 0.1 and encoded.abs().max() > 0.1
    torch.testing.assert_close(flat_decoded, decoded, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(flat_encoded, encoded, rtol=0, atol=TOLERANCE)
    unflatten_vae(vae)
    assert not is_flat(vae) and torch.equal(vae.decode(z).sample, decoded)  # undone: the 3D convs, bit for bit


@torch.inference_mode()
def test_a_video_keeps_its_later_frames_in_3d(vae):
    z = torch.randn(1, 16, 3, 8, 8)  # three latent frames: the first takes the 2D path, the others meet cached ones
    unflatten_vae(vae)
    decoded = vae.decode(z).sample
    flatten_vae(vae)
    flat = vae.decode(z).sample
    unflatten_vae(vae)
    assert flat.shape == decoded.shape == (1, 3, 9, 64, 64)
    torch.testing.assert_close(flat, decoded, rtol=0, atol=TOLERANCE)


def test_only_causal_convs_that_pad_the_past_with_zeros_flatten():
    assert flattens(WanCausalConv3d(4, 4, 3, padding=1))
    assert not flattens(WanCausalConv3d(4, 4, (3, 1, 1), stride=(2, 1, 1)))  # the time downsampler: no causal pad
    assert not flattens(WanCausalConv3d(4, 4, 1))  # a 1x1x1 conv is 2D already
    assert not flattens(torch.nn.Conv3d(4, 4, 3, padding=1))  # pads the future too


def test_the_benchmark_reports_both_ways_and_their_difference():
    result = vae_2d_benchmark(["--size", "32x32", "--device", "cpu", "--runs", "1"])
    for name in ("decode", "encode"):
        assert result[name]["3d_s"] > 0 and result[name]["2d_s"] > 0
        assert result[name]["max_abs_diff"] < TOLERANCE < result[name]["output_abs_max"]
