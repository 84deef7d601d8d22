"""Type checks for values that come from users (JSON, forms, flags): the one place that decides what a number is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def is_finite_number(value: Any) -> bool:
    """A finite real number, not a bool; huge integers (10**400) are not finite as floats and are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
