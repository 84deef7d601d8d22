"""PNG files that carry their generation parameters, and labelled side-by-side images."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"  # the tEXt chunk name that A1111-style tools also read


def with_parameters(image: Image.Image, parameters: dict) -> Image.Image:
    """Attach `parameters` to the image so that a PNG save (ours or Gradio's) writes them as a text chunk."""
    image.info[PARAMETERS_KEY] = json.dumps(parameters, ensure_ascii=False, sort_keys=True)
    return image


def save_png(image: Image.Image, path: str | Path, parameters: dict) -> Path:
    """Save `image` as PNG with `parameters` as JSON in a `parameters` text chunk; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, json.dumps(parameters, ensure_ascii=False, sort_keys=True))
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_parameters(path: str | Path) -> dict:
    """The parameters stored by `save_png`, enough to reproduce the image."""
    with Image.open(path) as image:
        return json.loads(image.text[PARAMETERS_KEY])


def side_by_side(labelled: dict[str, Image.Image], *, gap: int = 8, label_height: int = 28) -> Image.Image:
    """Images in a row, each with its label above it."""
    images = list(labelled.values())
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    height = max(image.height for image in images) + label_height
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(12, label_height // 2))
    x = 0
    for label, image in labelled.items():
        sheet.paste(image, (x, label_height))
        draw.text((x + 6, label_height // 2), label, fill="black", font=font, anchor="lm")
        x += image.width + gap
    return sheet
