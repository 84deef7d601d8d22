"""A sweep's axes: parsed from `NAME=V1,V2,...`, checked, and turned into request fields. No torch here, so that the
CLI checks a sweep before anything heavy loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

AXES = ("sampler", "shift", "steps", "guidance", "seed", "model", "timesteps")
MAX_CELLS = 64  # a sweep past this is refused: each cell is a whole render


def parse_axis(text: str) -> tuple[str, list]:
    """`"shift=3,5,7"` -> ("shift", [3.0, 5.0, 7.0]); timesteps lists are separated by ';' (`"timesteps=1000,500;999"`).

    Raises ValueError naming the axis and what it takes.
    """
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or name not in AXES:
        raise ValueError(f"a sweep axis is NAME=V1,V2,...; NAME one of {', '.join(AXES)}, got {text!r}")
    parts = [v.strip() for v in values.split(";" if name == "timesteps" else ",") if v.strip()]
    if not parts:
        raise ValueError(f"sweep axis {name} has no values, got {text!r}")
    convert = {"shift": float, "guidance": float, "steps": int, "seed": int}.get(name, str)
    try:
        if name == "timesteps":
            return name, [tuple(int(t) for t in part.split(",")) for part in parts]
        return name, [convert(v) for v in parts]
    except ValueError:
        kind = "integers" if convert is int or name == "timesteps" else "numbers"
        raise ValueError(f"sweep axis {name} takes {kind}, got {text!r}") from None


def check_axes(axes: dict[str, Sequence], max_cells: int = MAX_CELLS, *, timesteps: Sequence[int] = ()) -> int:
    """The number of cells of `axes` (over a request with explicit `timesteps`, if it has them), checked before
    anything loads or renders.

    Raises ValueError for an unknown axis, an axis without values or with a value twice, steps or shift swept beside
    timesteps (explicit timesteps replace both: every cell would be the same), or more than `max_cells` cells.
    """
    if max_cells < 1:
        raise ValueError(f"max_cells must be at least 1, got {max_cells}")
    for name, values in axes.items():
        if name not in AXES:
            raise ValueError(f"unknown sweep axis {name!r}; choose from {', '.join(AXES)}")
        if not values:
            raise ValueError(f"sweep axis {name} has no values")
        if len(set(map(as_text, values))) != len(values):
            raise ValueError(f"sweep axis {name} repeats a value: {list(values)}")
    replaced = " and ".join(name for name in ("steps", "shift") if name in axes)
    if "timesteps" in axes and replaced:
        raise ValueError(
            f"explicit timesteps replace steps and shift, so sweeping {replaced} beside timesteps changes nothing: "
            f"sweep timesteps lists of other lengths, or {replaced} without timesteps"
        )
    if timesteps and replaced:
        raise ValueError(
            f"the request has explicit timesteps ({as_text(timesteps)}), which replace steps and shift: sweep "
            f"timesteps instead of {replaced}, or give the request timesteps='none'"
        )
    count = math.prod(len(v) for v in axes.values())
    if count > max_cells:
        raise ValueError(f"the sweep has {count} cells; the limit is {max_cells} (max_cells): drop values or axes")
    return count


def cell_fields(values: dict[str, Any]) -> dict[str, Any]:
    """GenerationRequest fields for a cell's axis values."""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name == "sampler":
            fields["samplers"] = (value,)
        elif name == "model":
            fields["models"] = (value,)
        elif name == "guidance":
            fields["guidance_scale"] = fields["guidance_scale_2"] = value
        else:
            fields[name] = value
    return fields


def as_text(value: Any) -> Any:
    """A value as tables and labels show it: lists joined by commas, whole floats as integers (5.0 -> 5)."""
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return int(value) if abs(value) < 1e15 else value
    return value


def slug(value: Any) -> str:
    """A value as part of a file name."""
    return "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in str(as_text(value)))[:40]
