"""Evaluate the demo model: render held-out prompts with each sampler and score the attributes the prompts ask for.

    python -m wan_t2i.demo.evaluate --model wan_t2i/demo_model --out outputs/eval [--update-card]
    python -m wan_t2i.demo.evaluate --out outputs/eval-4 --steps 4      # every sampler at a student's step count
    python -m wan_t2i.demo.evaluate --out outputs/eval-list --timesteps 1000,750,500,250

The scorer is `wan_t2i.demo.analyzer`, validated on ground-truth renders first (it must be >= 95% right on each
attribute, or the evaluation refuses to run). Writes eval.json, eval.md (one table row per sampler) and
contact_sheet.png (prompts down, samplers across).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wan_t2i.choices import PRESETS
from wan_t2i.demo.analyzer import validate_analyzer
from wan_t2i.demo.scenes import held_out_prompts
from wan_t2i.loading import DEMO_MODEL_DIR
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.samplers import SAMPLERS

ORIGINAL_PROMPTS = ("A beautiful mountain landscape", "A serene lake at sunset")
ATTRIBUTES = ("time_of_day", "mountains", "water", "clouds")
MIN_ANALYZER_ACCURACY = 0.95


def score_sampler_runs(
    pipe: WanT2IPipeline,
    prompts: list[str],
    seeds: list[int],
    samplers: Sequence[str] = SAMPLERS,
    out: Path | None = None,
    **settings,
) -> dict:
    """Render every prompt x seed with each sampler from shared noise; per sampler, attribute hits and latent stats.

    One use of the batch runner `wan_t2i.evaluate` (a sweep of seed x sampler per prompt) into `out` (default: a
    temporary folder): cells already there are kept, so an interrupted evaluation resumes.
    """
    import tempfile

    from wan_t2i.evaluate import RESULTS, run

    settings = {k: v for k, v in settings.items() if v is not None}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        run(pipe, prompts, {"seed": list(seeds), "sampler": list(samplers)}, folder, settings=settings, score=True)
        lines = [json.loads(line) for path in sorted((folder / RESULTS).glob("rank*.jsonl"))
                 for line in path.read_text().splitlines()]  # fmt: skip
    wanted = {
        (prompt, int(row["seed"]), row["sampler"]): row
        for row in lines
        for prompt in [row["prompt"]]
        if prompt in prompts and row["sampler"] in samplers and int(row["seed"]) in seeds
    }
    rows: dict[str, list[dict]] = {name: [] for name in samplers}
    for prompt in prompts:
        for seed in seeds:
            for name in samplers:
                row = wanted[(prompt, seed, name)]
                rows[name].append(
                    {
                        "prompt": prompt,
                        "seed": seed,
                        "matches": row["matches"],
                        "std_ratio": row["std_ratio"],
                        "final_std": row["final_std"],
                        "seconds": row["seconds"],
                    }
                )
    return rows


def summarize(rows: list[dict]) -> dict:
    """Attribute accuracy (all requested attributes pooled), per attribute, all-correct rate, latent std ratio."""
    hits = [ok for row in rows for ok in row["matches"].values()]
    per_attribute = {
        name: float(np.mean([row["matches"][name] for row in rows if name in row["matches"]]))
        for name in ATTRIBUTES
        if any(name in row["matches"] for row in rows)
    }
    return {
        "attribute_accuracy": float(np.mean(hits)),
        "per_attribute": per_attribute,
        "all_correct": float(np.mean([all(row["matches"].values()) for row in rows])),
        "latent_std_ratio": float(np.median([row["std_ratio"] for row in rows])),
        "final_latent_std": float(np.median([row["final_std"] for row in rows])),
        "images": len(rows),
    }


def contact_sheet(
    pipe: WanT2IPipeline,
    prompts: list[str],
    seed: int,
    cell: int = 192,
    samplers: Sequence[str] = SAMPLERS,
    **settings,
) -> Image.Image:
    """Prompts down, samplers across, all from one seed."""
    label_w, header_h = 260, 28
    sheet = Image.new("RGB", (label_w + cell * len(samplers), header_h + cell * len(prompts)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for j, name in enumerate(samplers):
        draw.text((label_w + j * cell + 6, header_h // 2), name, fill="black", font=font, anchor="lm")
    for i, prompt in enumerate(prompts):
        generation = pipe.generate(prompt, samplers=list(samplers), seed=seed, **settings)
        y = header_h + i * cell
        draw.multiline_text((6, y + 6), _wrap(prompt, 34), fill="black", font=font)
        for j, result in enumerate(generation.results.values()):
            sheet.paste(result.image.resize((cell, cell)), (label_w + j * cell, y))
    return sheet


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def markdown_table(summary: dict, analyzer: dict, settings: dict, seeds: list[int], n_prompts: int) -> str:
    grid = f"timesteps {settings['timesteps']}" if settings.get("timesteps") else f"{settings['steps']} steps"
    lines = [
        f"Held-out attribute combinations never seen in training: {n_prompts} prompts x {len(seeds)} seeds, "
        f"{grid}, shift {settings['shift']}, guidance {settings['guidance_scale']}; all samplers "
        "start from the same noise. Scored by `wan_t2i.demo.analyzer`, which is "
        f"{100 * min(analyzer.values()):.1f}% right or better on every attribute of ground-truth renders.",
        "",
        "| sampler | attribute accuracy | time of day | mountains | water | clouds | all four right | "
        "final latent std / VAE's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        per = s["per_attribute"]
        cells = " | ".join(f"{100 * per[a]:.0f}%" for a in ATTRIBUTES)
        lines.append(
            f"| `{name}` | **{100 * s['attribute_accuracy']:.1f}%** | {cells} | {100 * s['all_correct']:.0f}% | "
            f"{s['latent_std_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def update_model_card(model_dir: Path, evaluation_md: str) -> None:
    """Replace the card's '## Evaluation' section with `evaluation_md`."""
    card = model_dir / "README.md"
    text = card.read_text() if card.exists() else "# wan-t2i demo model\n"
    section = f"## Evaluation\n\n{evaluation_md}\n\n![contact sheet](contact_sheet.png)\n"
    if "## Evaluation" in text:
        text = re.sub(r"## Evaluation\n.*?(?=\n## |\Z)", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section
    card.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL_DIR), help="the demo bundle (Diffusers layout)")
    parser.add_argument("--out", default="outputs/eval")
    parser.add_argument("--device")
    parser.add_argument("--performance", choices=PRESETS, default="default", help="wan_t2i.performance preset")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=5.0)
    parser.add_argument("--guidance", type=float, help="default: the model's own (wan_t2i.json)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated (default: every sampler)")
    parser.add_argument("--timesteps", help="explicit model timesteps for every flow sampler, e.g. 1000,750,500,250")
    parser.add_argument("--analyzer-samples", type=int, default=400)
    parser.add_argument("--update-card", action="store_true", help="write the table into the bundle's README.md")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"validating the analyzer on {args.analyzer_samples} ground-truth renders...", flush=True)
    analyzer = validate_analyzer(n=args.analyzer_samples)
    analyzer = {k: v for k, v in analyzer.items() if k in ATTRIBUTES}
    print("analyzer on ground-truth renders:", {k: f"{100 * v:.1f}%" for k, v in analyzer.items()})
    if min(analyzer.values()) < MIN_ANALYZER_ACCURACY:
        print(f"error: the analyzer is below {100 * MIN_ANALYZER_ACCURACY:.0f}% on ground truth; scores would mislead")
        return 1

    pipe = WanT2IPipeline.from_pretrained(teacher_path=args.model, device=args.device, performance=args.performance)
    guidance = args.guidance if args.guidance is not None else pipe.defaults.guidance_scale
    samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]
    settings = {"steps": args.steps, "shift": args.shift, "guidance_scale": guidance, "timesteps": args.timesteps}
    prompts, seeds = held_out_prompts(), list(range(args.seeds))
    start = time.perf_counter()
    rows = score_sampler_runs(pipe, prompts, seeds, samplers, out / "held_out", **settings)
    summary = {name: summarize(r) for name, r in rows.items()}
    originals = score_sampler_runs(pipe, list(ORIGINAL_PROMPTS), seeds, samplers, out / "originals", **settings)
    print(f"rendered {len(prompts) * len(seeds)} x {len(samplers)} images in {time.perf_counter() - start:.1f} s")

    table = markdown_table(summary, analyzer, settings, seeds, len(prompts))
    original_lines = [
        f"- {name}: " + "; ".join(f"'{p}' {_hit_rate(originals[name], p)}" for p in ORIGINAL_PROMPTS)
        for name in samplers
    ]
    evaluation_md = table + "\n\nThe two original prompts (requested attributes found, over seeds):\n\n"
    evaluation_md += "\n".join(original_lines)
    print(evaluation_md)
    sheet = contact_sheet(pipe, [*ORIGINAL_PROMPTS, *prompts[::3]], seed=0, samplers=samplers, **settings)
    sheet.save(out / "contact_sheet.png")
    (out / "eval.md").write_text(evaluation_md + "\n")
    report = {"analyzer": analyzer, "settings": settings, "seeds": seeds, "summary": summary, "rows": rows}
    (out / "eval.json").write_text(json.dumps(report | {"originals": originals}, indent=1))
    if args.update_card:
        sheet.save(Path(args.model) / "contact_sheet.png", optimize=True)
        update_model_card(Path(args.model), evaluation_md)
    print(f"wrote {out / 'eval.md'}, {out / 'eval.json'}, {out / 'contact_sheet.png'}")
    return 0


def _hit_rate(rows: list[dict], prompt: str) -> str:
    hits = [ok for row in rows if row["prompt"] == prompt for ok in row["matches"].values()]
    return f"{sum(hits)}/{len(hits)}"


if __name__ == "__main__":
    raise SystemExit(main())
