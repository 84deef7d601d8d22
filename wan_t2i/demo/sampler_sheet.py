"""The picture in docs/samplers.md: the demo model under every sampler from one seed, on its own grid and on a
few-step student's grid and on explicit timesteps, each image labelled with its sampler and its final latent std.

    python -m wan_t2i.demo.sampler_sheet                      # writes docs/images/samplers.png (a few minutes on a CPU)
    python -m wan_t2i.demo.sampler_sheet --seed 3 --out outputs/sheet.png --device cuda

Every sampler of a row starts from the same noise and the same text encoding (one `generate` call), so the sampler is
the only difference within a row.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from wan_t2i.choices import SAMPLER_NOTES, SAMPLERS
from wan_t2i.diagnostics import HEALTHY_STD_RATIO
from wan_t2i.pipeline import WanT2IPipeline

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "images" / "samplers.png"
PROMPT = "A serene lake at sunset"
ROWS = {  # label lines -> settings beyond the model's own (the demo model: 20 steps, shift 5, guidance 2)
    ("the model's own grid", "20 steps, shift 5"): {},
    (
        "4 steps, shift 5:",
        "LightX2V's 4-step list",
        "[1000,750,500,250] at shift 5",
        "(t 1000,937,833,625",
        "for flow_dpmpp, flow_lcm)",
    ): {"steps": 4},
    ("explicit timesteps", "1000,750,500,250, as given", "(legacy_ddim: 4 steps", "on its own grid)"): {
        "timesteps": (1000, 750, 500, 250)
    },
}
CELL = 176  # pixels per image on the sheet (the demo model renders 256 x 256)
LABEL_W, TITLE_H, HEADER_H, CAPTION_H = 190, 24, 52, 18


def render_rows(pipe: WanT2IPipeline, prompt: str, seed: int, samplers: Sequence[str]) -> dict[str, list]:
    """Per row (its label's lines joined), one (sampler, image, latent std ratio) per sampler, all from `seed`."""
    rows = {}
    for label, settings in ROWS.items():
        generation = pipe.generate(prompt, samplers=list(samplers), seed=seed, **settings)
        rows["\n".join(label)] = [(name, r.image, r.diagnostics.std_ratio) for name, r in generation.results.items()]
    return rows


def draw_sheet(rows: dict[str, list], title: str) -> Image.Image:
    """Samplers across (with their one-line notes), grids down; each image captioned with its latent std ratio."""
    samplers = [name for name, _, _ in next(iter(rows.values()))]
    width, row_h = LABEL_W + CELL * len(samplers), CELL + CAPTION_H
    top, (low, high) = TITLE_H + HEADER_H, HEALTHY_STD_RATIO
    sheet = Image.new("RGB", (width, top + row_h * len(rows) + CAPTION_H), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    draw.text((6, 6), title, fill="black", font=font)
    for j, name in enumerate(samplers):
        x = LABEL_W + j * CELL + 4
        draw.text((x, TITLE_H + 4), name, fill="black", font=font)
        note = "\n".join(textwrap.wrap(SAMPLER_NOTES[name], width=30))
        draw.multiline_text((x, TITLE_H + 21), note, fill="#555555", font=small, spacing=2)
    for i, (label, cells) in enumerate(rows.items()):
        y = top + i * row_h
        draw.multiline_text((6, y + 6), label, fill="black", font=small, spacing=3)
        for j, (_, image, std_ratio) in enumerate(cells):
            x = LABEL_W + j * CELL
            sheet.paste(image.resize((CELL, CELL), Image.Resampling.LANCZOS), (x, y))
            colour = "#16a34a" if low <= std_ratio <= high else "#dc2626"
            draw.text((x + 4, y + CELL + 2), f"latent std {std_ratio:.2f}x the VAE's", fill=colour, font=small)
    note = f"green: latent std within {low}-{high}x, the band the VAE decodes cleanly; red: outside it"
    draw.text((6, sheet.height - CAPTION_H + 2), note, fill="#555555", font=small)
    return sheet


def save_small(sheet: Image.Image, path: Path) -> None:
    """Write a PNG for the docs: an adaptive 256-colour palette keeps it small (the noise of legacy_ddim is costly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="default: cuda when available")
    args = parser.parse_args(argv)
    pipe = WanT2IPipeline.from_pretrained(device=args.device)
    rows = render_rows(pipe, args.prompt, args.seed, SAMPLERS)
    save_small(draw_sheet(rows, f"{pipe.defaults.name}: '{args.prompt}', seed {args.seed}"), args.out)
    for label, cells in rows.items():
        print(label.replace("\n", " "), {name: round(std, 3) for name, _, std in cells})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
