"""Parity with stock diffusers: WanPipeline on Wan's sigma grid renders the image this pipeline's samplers render."""

import functools

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline
from sensitive_wan import one_torch_thread, save_sensitive_wan

from wan_t2i.pipeline import WanT2IPipeline

PROMPT, NEGATIVE_PROMPT, SEED, STEPS, SHIFT = "a serene lake at sunset", "night", 3, 6, 5.0
HEIGHT, WIDTH = 32, 48
LATENT_SHAPE = (1, 16, 1, HEIGHT // 8, WIDTH // 8)  # (B, C, F, H, W): 16 latent channels, VAE stride 8, one frame

# Spelt out here rather than imported, so that the stock side shares no code with the pipeline under test:
# wan/utils/fm_solvers_unipc.py starts its unshifted grid at float32(1 - 1/1000); diffusers' own flow grid at 1.0.
WAN_SIGMA_MAX = float(np.float32(1 - 1 / 1000))


def wan_sigmas(steps: int) -> np.ndarray:
    """Wan's unshifted grid (steps,), from 0.999 down, without the final 0 (the scheduler appends it)."""
    return np.linspace(WAN_SIGMA_MAX, 0.0, steps + 1)[:-1]


class WanGridUniPC(UniPCMultistepScheduler):
    """Stock UniPC on Wan's grid: WanPipeline calls `set_timesteps(steps)` and takes no sigmas of its own."""

    def set_timesteps(self, num_inference_steps: int, device=None, **kwargs) -> None:
        super().set_timesteps(device=device, sigmas=wan_sigmas(num_inference_steps))


class WanGridEuler(FlowMatchEulerDiscreteScheduler):
    """Stock flow-matching Euler on Wan's grid, giving the model whole timesteps as Wan does (stock: 999.8)."""

    def set_timesteps(self, num_inference_steps: int, device=None, **kwargs) -> None:
        sigmas = wan_sigmas(num_inference_steps)
        shifted = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        timesteps = (shifted * self.config.num_train_timesteps).astype(np.int64)  # truncated, as UniPC's are
        super().set_timesteps(device=device, sigmas=sigmas, timesteps=timesteps)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def sensitive_dir(tmp_path_factory):
    return save_sensitive_wan(tmp_path_factory.mktemp("sensitive-wan"))


@pytest.fixture(scope="module")
def pipe(sensitive_dir) -> WanT2IPipeline:
    return WanT2IPipeline.from_pretrained(teacher_path=sensitive_dir, device="cpu")


@pytest.fixture(scope="module")
def stock(sensitive_dir) -> WanPipeline:
    """diffusers' WanPipeline loaded by diffusers itself from the same folder."""
    stock = WanPipeline.from_pretrained(sensitive_dir)
    stock.set_progress_bar_config(disable=True)
    return stock


def stock_scheduler(stock: WanPipeline, sampler: str, shift: float, wan_grid: bool = True):
    """The folder's UniPC config (as diffusers' Wan2.1 checkpoints ship it), or Euler; on Wan's grid or their own."""
    if sampler == "flow_unipc":
        return (WanGridUniPC if wan_grid else UniPCMultistepScheduler).from_config(
            stock.scheduler.config, flow_shift=shift
        )
    return (WanGridEuler if wan_grid else FlowMatchEulerDiscreteScheduler)(shift=shift)


def run_stock(
    stock: WanPipeline,
    pipe: WanT2IPipeline,
    sampler: str,
    *,
    shift: float = SHIFT,
    guidance_scale: float,
    wan_grid: bool = True,
):
    """Final latents (1, 16, 1, h, w) and pixels (H, W, 3) of stock WanPipeline from this pipeline's noise and text."""
    noise = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(SEED))  # as pipe.generate draws it
    final = {}

    def keep_latents(_pipe, i, t, tensors):
        final["latents"] = tensors["latents"]
        return {}

    frames = WanPipeline(**{**stock.components, "scheduler": stock_scheduler(stock, sampler, shift, wan_grid)})(
        prompt_embeds=pipe.encode_prompt(PROMPT),
        negative_prompt_embeds=pipe.encode_prompt(NEGATIVE_PROMPT),
        latents=noise,
        height=HEIGHT,
        width=WIDTH,
        num_frames=1,
        num_inference_steps=STEPS,
        guidance_scale=guidance_scale,
        output_type="np",
        callback_on_step_end=keep_latents,
    ).frames  # (1, F, H, W, 3) in [0, 1]
    return final["latents"], (frames[0, 0] * 255).round()


@functools.cache  # the failure checks reuse the parity runs' own outputs
def run_pipe(pipe: WanT2IPipeline, sampler: str, *, guidance_scale: float):
    """Final latents (1, 16, 1, h, w) and pixels (H, W, 3) of `pipe.generate`."""
    result = pipe.generate(
        PROMPT,
        samplers=[sampler],
        negative_prompt=NEGATIVE_PROMPT,
        seed=SEED,
        steps=STEPS,
        shift=SHIFT,
        guidance_scale=guidance_scale,
        height=HEIGHT,
        width=WIDTH,
    )[sampler]
    return result.latents, np.asarray(result.image, dtype=np.float64)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
@pytest.mark.parametrize("sampler", ["flow_unipc", "flow_euler"])
def test_samplers_render_what_stock_wan_pipeline_renders(pipe, stock, sampler, guidance_scale):
    latents, pixels = run_pipe(pipe, sampler, guidance_scale=guidance_scale)
    stock_latents, stock_pixels = run_stock(stock, pipe, sampler, shift=SHIFT, guidance_scale=guidance_scale)
    torch.testing.assert_close(latents, stock_latents, atol=1e-4, rtol=1e-4)
    assert np.abs(pixels - stock_pixels).max() <= 1


@pytest.mark.parametrize(
    "stock_kwargs",
    [{"shift": 4.8}, {"guidance_scale": 2.0}, {"wan_grid": False}],
    ids=["shift 4.8 for 5", "guidance 2 for 4", "diffusers' grid from sigma 1"],
)
@pytest.mark.parametrize("sampler", ["flow_unipc", "flow_euler"])
def test_parity_fails_when_one_thing_differs(pipe, stock, sampler, stock_kwargs):
    """The comparison above can fail: one change on the stock side moves some pixel by more than 1/255 (3 to 11)."""
    _, pixels = run_pipe(pipe, sampler, guidance_scale=4.0)
    _, stock_pixels = run_stock(stock, pipe, sampler, **({"guidance_scale": 4.0} | stock_kwargs))
    assert np.abs(pixels - stock_pixels).max() > 1
