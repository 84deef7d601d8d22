"""Image comparison metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from wan_t2i.metrics import psnr


def test_psnr():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[..., 0] = 3  # mse = 9 / 3 = 3
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 3))
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == psnr(a, b)  # PIL images as their pixels
    with pytest.raises(ValueError, match="shape"):
        psnr(a, np.zeros((4, 5, 3), dtype=np.uint8))
