"""Step previews: the least-squares latent -> RGB map, the demo bundle's own map against its VAE, filmstrips."""

import pytest
import torch

from wan_t2i.demo.previews import encoded_scenes, preview_psnr
from wan_t2i.previews import LatentRGB, filmstrip, fit_latent_rgb


def test_the_fit_recovers_a_linear_map_exactly():
    generator = torch.Generator().manual_seed(0)
    factors, bias = torch.randn(16, 3, generator=generator), torch.randn(3, generator=generator)
    latents = torch.randn(4, 16, 1, 6, 5, generator=generator)
    # Images whose latent-resolution average is exactly the linear map: each latent pixel a constant 8x8 block.
    rgb = torch.einsum("bchw,cr->brhw", latents[:, :, 0], factors) + bias.view(1, 3, 1, 1)
    images = rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    fitted = fit_latent_rgb(latents, images)
    torch.testing.assert_close(torch.tensor(fitted.factors), factors, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(fitted.bias), bias, atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted(latents), rgb, atol=1e-4, rtol=0)


def test_map_round_trips_and_refuses_malformed_values():
    wan = LatentRGB.wan21()
    assert wan.channels == 16 and "ComfyUI" in wan.source
    assert LatentRGB.from_dict(wan.to_dict()) == wan
    with pytest.raises(ValueError, match="rows of 3 numbers"):
        LatentRGB.from_dict({"factors": [[1.0, 2.0]], "bias": [0, 0, 0]})


@pytest.mark.slow
def test_the_demo_bundles_map_previews_its_vae_and_wans_does_not(demo_pipe):
    """The stored map, on scenes it was not fitted on, against the full decode: the demo VAE needs its own map."""
    latents, decoded = encoded_scenes(demo_pipe, 6, size=128, seed=99)
    own = LatentRGB.from_dict(demo_pipe.defaults.latent_rgb)
    assert preview_psnr(own, latents, decoded) > 18
    assert preview_psnr(LatentRGB.wan21(), latents, decoded) < 10  # another VAE's factors: far off


def test_filmstrip_lays_out_one_row_per_sampler_with_a_cell_per_preview():
    wan = LatentRGB.wan21()
    previews = wan.images(torch.zeros(3, 16, 1, 4, 4), scale=8)  # 32 x 32 each
    sheet = filmstrip({"legacy_ddim": list(zip([1, 5, 10], previews, strict=True)), "flow_unipc": [(1, previews[0])]})
    assert sheet.height == 2 * (32 + 16 + 4) and sheet.width == 150 + 3 * (32 + 4)
    gray = tuple(round((b + 1) * 127.5) for b in wan.bias)  # zero latents preview as the bias colour
    assert sheet.getpixel((150 + 10, 16 + 10)) == tuple(max(0, min(255, v)) for v in gray)
