"""Cheap step previews: a linear latent -> RGB map instead of the VAE, and filmstrips of the predicted clean image.

A preview shows each step's predicted clean latents x0_pred, not the noisy x: that is what shows the legacy loop
going wrong from its first steps. The map is `rgb = latents @ factors + bias` per latent pixel, on the VAE's
normalised latents, giving RGB in [-1, 1]; a model stores its own (fitted by least squares on decoded samples, see
`fit_latent_rgb`) in its `wan_t2i.json` as `latent_rgb`. The Wan 2.1 VAE's published factors come from ComfyUI's
`Wan21` latent format (comfy/latent_formats.py), which applies them to the same normalised latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

# ComfyUI comfy/latent_formats.py, class Wan21: latent_rgb_factors (16 x RGB) and latent_rgb_factors_bias.
WAN21_FACTORS = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_BIAS = (-0.1835, -0.0868, -0.3360)


@dataclass(frozen=True)
class LatentRGB:
    """A linear map from normalised latents (C channels) to RGB in [-1, 1]."""

    factors: tuple[tuple[float, float, float], ...]  # (C, 3)
    bias: tuple[float, float, float]
    source: str = ""  # where the numbers come from

    @classmethod
    def wan21(cls) -> LatentRGB:
        return cls(WAN21_FACTORS, WAN21_BIAS, "ComfyUI comfy/latent_formats.py, Wan21")

    @classmethod
    def from_dict(cls, values: dict) -> LatentRGB:
        factors = tuple(tuple(float(v) for v in row) for row in values["factors"])
        if not factors or any(len(row) != 3 for row in factors) or len(values["bias"]) != 3:
            raise ValueError(
                "latent_rgb needs 'factors' as rows of 3 numbers (one row per latent channel) and 3 'bias'"
            )
        return cls(factors, tuple(float(v) for v in values["bias"]), str(values.get("source", "")))

    def to_dict(self) -> dict:
        return {"factors": [list(row) for row in self.factors], "bias": list(self.bias), "source": self.source}

    @property
    def channels(self) -> int:
        return len(self.factors)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, 1, h, w) or (B, C, h, w) -> RGB (B, 3, h, w) in [-1, 1] (not clamped)."""
        if latents.dim() == 5:
            latents = latents[:, :, 0]
        factors = torch.tensor(self.factors, device=latents.device, dtype=torch.float32)
        bias = torch.tensor(self.bias, device=latents.device, dtype=torch.float32)
        return torch.einsum("bchw,cr->brhw", latents.float(), factors) + bias.view(1, 3, 1, 1)

    def images(self, latents: torch.Tensor, scale: int = 8) -> list[Image.Image]:
        """Preview images of latents (B, C, 1, h, w), upscaled `scale` times (the VAE's stride) for display."""
        rgb = self(latents).clamp(-1, 1)
        rgb = F.interpolate(rgb, scale_factor=scale, mode="bilinear", align_corners=False) if scale > 1 else rgb
        pixels = ((rgb + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(p) for p in pixels]


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor, *, source: str = "") -> LatentRGB:
    """Least-squares fit of the linear map from latents to the images they decode to.

    Args:
        latents: normalised latents (N, C, 1, h, w) or (N, C, h, w).
        images: their decoded images (N, 3, H, W) in [-1, 1], H = h * stride; averaged down to (h, w) to fit.
    """
    if latents.dim() == 5:
        latents = latents[:, :, 0]
    target = F.adaptive_avg_pool2d(images.float(), latents.shape[-2:])  # (N, 3, h, w)
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (N h w, C)
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()  # a column of ones for the bias
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(x, y).solution.float()  # (C + 1, 3)
    factors = tuple(tuple(round(v, 6) for v in row) for row in solution[:-1].tolist())
    bias = tuple(round(v, 6) for v in solution[-1].tolist())
    return LatentRGB(factors, bias, source)


def filmstrip(
    rows: dict[str, Sequence[tuple[int, Image.Image]]], *, gap: int = 4, label_width: int = 150
) -> Image.Image:
    """One row per sampler: its label, then (step, preview) pairs left to right, each captioned with its step."""
    cells = [image for row in rows.values() for _, image in row]
    width, height = max(c.width for c in cells), max(c.height for c in cells)
    caption = 16
    columns = max(len(row) for row in rows.values())
    sheet = Image.new("RGB", (label_width + columns * (width + gap), len(rows) * (height + caption + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for r, (label, row) in enumerate(rows.items()):
        y = r * (height + caption + gap)
        draw.text((6, y + caption + height // 2), label, fill="black", font=font, anchor="lm")
        for c, (step, image) in enumerate(row):
            x = label_width + c * (width + gap)
            draw.text((x + 2, y + 2), f"step {step}", fill="black", font=font)
            sheet.paste(image, (x, y + caption))
    return sheet
