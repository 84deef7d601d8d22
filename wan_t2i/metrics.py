"""Image comparison: PSNR between an image and a reference (an optimised image against the eager one, a VAE round
trip against its input)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def psnr(image: Image.Image | np.ndarray, reference: Image.Image | np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB (inf when identical).

    Args:
        image: a PIL image or an array of 0-255 values, e.g. (H, W, 3).
        reference: the same shape as `image`.

    Returns:
        10 log10(255^2 / MSE) over every pixel and channel; `math.inf` when the two are equal.
    """
    a, b = np.asarray(image, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
