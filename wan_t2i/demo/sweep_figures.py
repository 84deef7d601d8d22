"""The pictures in docs/sweeps.md: a sweep grid and an A/B filmstrip of step previews, from the embedded demo model.

    python -m wan_t2i.demo.sweep_figures                 # writes docs/images/sweep-grid.png and previews-ab.png
    python -m wan_t2i.demo.sweep_figures --out outputs/figures --device cuda

The grid is the seed's own troubleshooting as one picture: shifts 3, 5 and 7 down, the legacy DDIM loop and Wan's
flow UniPC across, all from one seed. The filmstrip shows each sampler's predicted clean image every 4 of 20 steps.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from wan_t2i.images import save_png
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.previews import filmstrip

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "images"
PROMPT = "A serene lake at sunset"
SEED = 7
CELL = 160  # pixels per cell in the grid, so that the picture stays small


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder (default: {DEFAULT_OUT})")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pipe = WanT2IPipeline.from_pretrained(device=args.device)

    request = pipe.request(PROMPT, seed=SEED, steps=20)
    sweep = pipe.sweep(request, {"shift": [3.0, 5.0, 7.0], "sampler": ["legacy_ddim", "flow_unipc"]})
    grid = save_png(sweep.grid(cell_size=CELL), out / "sweep-grid.png", sweep.parameters())
    print(f"{grid}: {len(sweep.cells)} cells, {sweep.forwards} forwards ({sweep.cell_forwards} cell by cell)")

    ab = pipe.request(PROMPT, seed=SEED, steps=20, samplers=["legacy_ddim", "flow_unipc"])
    generation = pipe.generate(ab, preview_every=4)
    small = {
        label: [(step, image.resize((CELL // 2 * 3 // 2,) * 2)) for step, image in frames]
        for label, frames in generation.previews.items()
    }
    strip = save_png(filmstrip(small), out / "previews-ab.png", {"preview_every": 4} | ab.branch(1).to_parameters(""))
    print(f"{strip}: previews every 4 of 20 steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
