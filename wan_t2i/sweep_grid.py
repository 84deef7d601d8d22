"""The labelled grid of a sweep: column labels across the top, row labels down the side, each image framed by its
verdict's colour and captioned. `GridLayout` says where everything goes, so that a test can look there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

GOOD, BAD = (22, 163, 74), (220, 38, 38)  # cell edges: green where the VAE can decode the latents, red where not
EDGE, PAD = 4, 6  # pixels: a cell's verdict-coloured frame; the margin around a label


@dataclass(frozen=True)
class GridLayout:
    """Where the grid draws, in pixels. Boxes are (left, top, right, bottom), right and bottom exclusive."""

    rows: int
    columns: int
    image: tuple[int, int]  # a cell's image as shown, (width, height)
    font_size: int
    side: int  # width of the row labels' strip, left
    head: int  # height of the column labels' strip, top
    pitch: int  # a column's width: its framed image, or its widest label or caption, and a margin
    caption: int  # height of a caption, under its cell

    @classmethod
    def fit(
        cls, image: tuple[int, int], columns: Sequence[str], rows: Sequence[str], captions: Sequence[str]
    ) -> GridLayout:
        """The layout of images of size `image` whose labels and captions fit: a text wider than its image breaks
        into lines (`fit_text`); a column is as wide as its widest text still is."""
        font = grid_font(image[0])
        frame = image[0] + 2 * EDGE
        labels = [_text_size(fit_text(t, frame, font), font) for t in columns]
        under = [_text_size(fit_text(t, frame, font), font) for t in captions]
        return cls(
            rows=len(rows),
            columns=len(columns),
            image=image,
            font_size=font.size,
            side=max(_text_size(t, font)[0] for t in rows) + 2 * PAD,
            head=max(h for _, h in labels) + 2 * PAD,
            pitch=max(frame, *(w for w, _ in labels + under)) + PAD,
            caption=max(h for _, h in under) + PAD,
        )

    @property
    def frame(self) -> tuple[int, int]:
        return self.image[0] + 2 * EDGE, self.image[1] + 2 * EDGE

    @property
    def row_height(self) -> int:
        return self.frame[1] + self.caption + PAD

    @property
    def size(self) -> tuple[int, int]:
        return self.side + self.columns * self.pitch, self.head + self.rows * self.row_height

    def column_label(self, c: int) -> tuple[int, int, int, int]:
        x = self.side + c * self.pitch
        return x, 0, x + self.pitch, self.head

    def row_label(self, r: int) -> tuple[int, int, int, int]:
        y = self.head + r * self.row_height
        return 0, y, self.side, y + self.frame[1]

    def cell(self, r: int, c: int) -> tuple[int, int, int, int]:
        """The framed cell: the image inside a band of EDGE pixels."""
        x, y = self.side + c * self.pitch + (self.pitch - self.frame[0]) // 2, self.head + r * self.row_height
        return x, y, x + self.frame[0], y + self.frame[1]

    def caption_box(self, r: int, c: int) -> tuple[int, int, int, int]:
        x, y = self.side + c * self.pitch, self.head + r * self.row_height + self.frame[1]
        return x, y, x + self.pitch, y + self.caption


def grid_font(cell_width: int) -> ImageFont.FreeTypeFont:
    """The grid's font for cells `cell_width` pixels wide."""
    return ImageFont.load_default(size=max(11, cell_width // 18))


def fit_text(text: str, width: int, font: ImageFont.FreeTypeFont) -> str:
    """`text`, broken after its ' = ' and at its ' · ' where a line is wider than `width` pixels less the margins."""
    if _text_size(text, font)[0] <= width - PAD:
        return text
    return text.replace(" = ", " =\n").replace(" · ", "\n")


def text_tile(text: str, size: tuple[int, int], font: ImageFont.FreeTypeFont) -> Image.Image:
    """`text` in black, centred on a white tile of `size` (width, height), broken to fit (`fit_text`)."""
    tile = Image.new("RGB", size, "white")
    text = fit_text(text, size[0], font)
    left, top, right, bottom = _text_box(text, font)
    origin = ((size[0] - (right - left)) // 2 - left, (size[1] - (bottom - top)) // 2 - top)
    ImageDraw.Draw(tile).multiline_text(origin, text, fill="black", font=font, align="center")
    return tile


def _text_box(text: str, font: ImageFont.FreeTypeFont) -> tuple[int, int, int, int]:
    """The box `text` covers drawn at (0, 0), in whole pixels (Pillow measures in fractions)."""
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=font, align="center")
    return math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])


def _text_size(text: str, font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    left, top, right, bottom = _text_box(text, font)
    return right - left, bottom - top


def _paste_text(sheet: Image.Image, text: str, box: tuple[int, int, int, int], font: ImageFont.FreeTypeFont) -> None:
    sheet.paste(text_tile(text, (box[2] - box[0], box[3] - box[1]), font), box[:2])


def draw_grid(
    layout: GridLayout,
    images: Sequence[Image.Image],
    healthy: Sequence[bool],
    columns: Sequence[str],
    rows: Sequence[str],
    captions: Sequence[str],
) -> Image.Image:
    """The grid of `images` (row by row) on `layout`: labels, a GOOD or BAD frame per image, a caption under each."""
    font = grid_font(layout.image[0])
    sheet = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(columns):
        _paste_text(sheet, text, layout.column_label(c), font)
    for r, text in enumerate(rows):
        _paste_text(sheet, text, layout.row_label(r), font)
    for i, (image, ok, text) in enumerate(zip(images, healthy, captions, strict=True)):
        r, c = divmod(i, layout.columns)
        left, top, right, bottom = layout.cell(r, c)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=GOOD if ok else BAD)
        sheet.paste(image.convert("RGB").resize(layout.image), (left + EDGE, top + EDGE))
        _paste_text(sheet, text, layout.caption_box(r, c), font)
    return sheet
