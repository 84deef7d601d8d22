"""The demo model on a GPU under each performance preset: its held-out attribute accuracy (scored as
`wan_t2i.demo.evaluate` scores it) and each image's PSNR against the same prompt, seed and sampler under the first
preset (bf16 as loaded, eager) and under `fastest` (bf16, compiled, bf16 VAE), so that fp8's own effect shows.

    python -m benchmarks.gpu_fp8_demo --out DIR [--presets default,fastest,fp8] [--prompts 24] [--seeds 2]

Writes DIR/demo_fp8.json and DIR/demo_fp8.md. The analyzer's own validation on ground-truth renders (which
`wan_t2i.demo.evaluate` runs first) is left out: it is CPU work, and the comparison here is between presets scored
by the same analyzer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from wan_t2i.demo.analyzer import analyze_image, attribute_matches
from wan_t2i.demo.evaluate import ATTRIBUTES, summarize
from wan_t2i.demo.scenes import held_out_prompts, requested_attributes
from wan_t2i.metrics import psnr
from wan_t2i.pipeline import WanT2IPipeline


def render_all(pipe: WanT2IPipeline, prompts: list[str], seeds: list[int], samplers: list[str], settings: dict):
    """Rows as `evaluate.score_sampler_runs` makes them, and the images by (sampler, prompt, seed)."""
    rows: dict[str, list[dict]] = {name: [] for name in samplers}
    images: dict[tuple[str, str, int], np.ndarray] = {}
    for prompt in prompts:
        requested = requested_attributes(prompt)
        for seed in seeds:
            generation = pipe.generate(prompt, samplers=samplers, seed=seed, **settings)
            for name, result in generation.results.items():
                matches = attribute_matches(requested, analyze_image(result.image))
                rows[name].append({
                    "prompt": prompt, "seed": seed, "matches": matches, "std_ratio": result.diagnostics.std_ratio,
                    "final_std": result.diagnostics.final_std, "seconds": result.seconds,
                })  # fmt: skip
                images[(name, prompt, seed)] = np.asarray(result.image)
    return rows, images


def psnr_against(images: dict, reference: dict) -> dict:
    values = [psnr(images[key], reference[key]) for key in reference if key in images]
    finite = [v for v in values if np.isfinite(v)]
    return {
        "median_db": statistics.median(finite) if finite else float("inf"),
        "min_db": min(finite) if finite else float("inf"),
        "identical": len(values) - len(finite),
        "images": len(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--presets", default="default,fastest,fp8")
    parser.add_argument("--prompts", type=int, default=None, help="the first N held-out prompts (default: all)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samplers", default="flow_unipc,flow_euler")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=5.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = held_out_prompts()[: args.prompts]
    seeds, samplers = list(range(args.seeds)), [s.strip() for s in args.samplers.split(",") if s.strip()]
    report: dict = {"prompts": len(prompts), "seeds": seeds, "samplers": samplers, "presets": {},
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "torch": torch.__version__}  # fmt: skip
    kept: dict[str, dict] = {}
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        torch._dynamo.reset()
        start = time.perf_counter()
        pipe = WanT2IPipeline.from_pretrained(device="cuda", performance=name)
        settings = {"steps": args.steps, "shift": args.shift, "guidance_scale": pipe.defaults.guidance_scale}
        load_s = time.perf_counter() - start
        first = time.perf_counter()
        pipe.generate(prompts[0], samplers=samplers, seed=0, **settings)  # compiles, where the preset compiles
        torch.cuda.synchronize()
        first_s = time.perf_counter() - first
        start = time.perf_counter()
        rows, images = render_all(pipe, prompts, seeds, samplers, settings)
        torch.cuda.synchronize()
        entry = {
            "load_s": load_s, "first_generation_s": first_s, "render_s": time.perf_counter() - start,
            "settings": settings, "summary": {s: summarize(r) for s, r in rows.items()},
        }  # fmt: skip
        for reference in ("default", "fastest"):
            if reference in kept and reference != name:
                entry[f"psnr_vs_{reference}"] = psnr_against(images, kept[reference])
        report["presets"][name] = entry
        kept[name] = images
        print(f"{name}: " + json.dumps({s: round(v["attribute_accuracy"], 4) for s, v in entry["summary"].items()})
              + "".join(f"; PSNR vs {r}: {entry[f'psnr_vs_{r}']}" for r in ("default", "fastest")
                        if f"psnr_vs_{r}" in entry), flush=True)  # fmt: skip
        del pipe
        (args.out / "demo_fp8.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [
        f"Demo model, {len(prompts)} held-out prompts x {len(seeds)} seeds, samplers {', '.join(samplers)}, "
        f"{args.steps} steps, on {report['device']}. PSNR: median (min) over the images, against the same prompt, "
        "seed and sampler under the preset named.",
        "",
        "| preset | sampler | attribute accuracy | " + " | ".join(ATTRIBUTES) + " | PSNR vs default | vs fastest |",
        "|---|---|---|" + "---|" * len(ATTRIBUTES) + "---|---|",
    ]
    for name, entry in report["presets"].items():
        cells = []
        for reference in ("default", "fastest"):
            p = entry.get(f"psnr_vs_{reference}")
            cells.append(f"{p['median_db']:.1f} ({p['min_db']:.1f}) dB" if p else "")
        for sampler, s in entry["summary"].items():
            per = " | ".join(f"{100 * s['per_attribute'].get(a, float('nan')):.0f}%" for a in ATTRIBUTES)
            accuracy = f"{100 * s['attribute_accuracy']:.1f}%"
            lines.append(f"| {name} | {sampler} | {accuracy} | {per} | " + " | ".join(cells) + " |")
    (args.out / "demo_fp8.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
