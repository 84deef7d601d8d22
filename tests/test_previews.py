"""Step previews: the least-squares latent -> RGB map, the demo bundle's own map against its VAE, filmstrips."""

from collections import Counter

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


@pytest.mark.slow  # two 20-step A/B renders: over 5 s on a busy 2-core machine
def test_a_20_step_ab_keeps_previews_of_the_predicted_clean_image(demo_pipe):
    import numpy as np

    request = demo_pipe.request("A serene lake at sunset", samplers=["legacy_ddim", "flow_unipc"], seed=4, steps=20)
    seen = []
    generation = demo_pipe.generate(
        request, preview_every=5, on_preview=lambda i, n, shown: seen.append((i, n, *shown))
    )
    assert seen == [(i, 20, "legacy_ddim", "flow_unipc") for i in (5, 10, 15, 20)]
    assert {label: [step for step, _ in frames] for label, frames in generation.previews.items()} == {
        "legacy_ddim": [5, 10, 15, 20],
        "flow_unipc": [5, 10, 15, 20],
    }
    latent_rgb = demo_pipe.preview_map()
    # flow_unipc's last prediction is its final latents: the last preview is the map applied to them
    last = generation.previews["flow_unipc"][-1][1]
    expected = latent_rgb.images(generation["flow_unipc"].latents, demo_pipe.vae_scale)[0]
    assert np.array_equal(np.asarray(last), np.asarray(expected))
    assert last.size == generation["flow_unipc"].image.size

    # the legacy loop's predicted clean image is off the map from the first preview: most of it clipped
    def clipped(image):
        return float((np.asarray(image) % 255 == 0).mean())

    assert clipped(generation.previews["legacy_ddim"][0][1]) > 0.3 > clipped(generation.previews["flow_unipc"][0][1])
    plain = demo_pipe.generate(request)  # previews change nothing in what is rendered
    for label in plain.results:
        assert torch.equal(plain[label].latents, generation[label].latents)
    strip = filmstrip(generation.previews)
    assert strip.height >= 2 * last.height and strip.width >= 4 * last.width


def test_preview_every_must_be_a_whole_number_of_steps(demo_pipe):
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="preview_every must be a whole number of steps >= 1"):
            demo_pipe.generate("A lake", steps=2, seed=1, preview_every=bad)


def test_the_cli_writes_a_filmstrip_per_comparison(tmp_path, capsys):
    from PIL import Image

    from wan_t2i.cli import main

    out = tmp_path / "ab.png"
    argv = ["--prompt", "A lake at dawn", "--compare", "--seed", "1", "--num_inference_steps", "6",
            "--preview_every", "2", "--device", "cpu", "--output_path", str(out)]  # fmt: skip
    assert main(argv) == 0
    strip = Image.open(tmp_path / "ab_previews.png")
    assert "previews" in capsys.readouterr().out
    assert strip.height > 2 * 256 and strip.width > 3 * 256  # two samplers, three previews of 256 x 256


def test_every_m_steps_a_preview_is_the_full_decode(demo_pipe):
    import numpy as np

    request = demo_pipe.request("A lake at dawn", samplers=["legacy_ddim", "flow_unipc"], seed=2, steps=4)
    generation = demo_pipe.generate(request, preview_every=1, preview_decode_every=2)
    frames = dict(generation.previews["flow_unipc"])
    assert list(frames) == [1, 2, 3, 4]
    cheap = demo_pipe.preview_map().images(generation["flow_unipc"].latents, demo_pipe.vae_scale)[0]
    final = np.asarray(generation["flow_unipc"].image, dtype=np.int16)
    # step 4 is decoded: flow_unipc's last prediction is its final latents, so it is the rendered image
    assert np.abs(np.asarray(frames[4], dtype=np.int16) - final).max() <= 1
    assert np.abs(np.asarray(cheap, dtype=np.int16) - final).mean() > 5  # the cheap map is only an approximation
    with pytest.raises(ValueError, match="preview_decode_every needs preview_every"):
        demo_pipe.generate(request, preview_decode_every=2)


def test_a_run_without_previews_computes_none(tiny_pipe, monkeypatch):
    """No preview_every: no recorder, no latent -> RGB map, no decode but the final images'. With it, exactly the
    previews asked for (the real map and VAE run; they are only counted)."""
    import wan_t2i.pipeline as pipeline

    calls = Counter()

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(pipeline, "Previews", counted("recorder", pipeline.Previews))
    monkeypatch.setattr(LatentRGB, "__call__", counted("map", LatentRGB.__call__))
    monkeypatch.setattr(tiny_pipe, "preview_map", counted("preview_map", tiny_pipe.preview_map))
    monkeypatch.setattr(tiny_pipe, "decode", counted("decode", tiny_pipe.decode))
    request = tiny_pipe.request("a lake", samplers=["legacy_ddim", "flow_unipc"], seed=1, steps=4)
    tiny_pipe.generate(request, progress=lambda i, n: None)
    assert calls == {"decode": 1}  # both final images, in one decode
    calls.clear()
    tiny_pipe.sweep(request, {"shift": [3.0, 5.0]})
    assert calls == {"decode": 1}  # a sweep's one group: its images only
    calls.clear()
    tiny_pipe.generate(request, preview_every=2, preview_decode_every=4)
    # step 2 by the map (both branches in one call), step 4 by the VAE, then the final images
    assert calls == {"recorder": 1, "preview_map": 1, "map": 1, "decode": 2}
