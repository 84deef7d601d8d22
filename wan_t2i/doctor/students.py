"""Deliberately wrong tiny students, to watch the doctor name each problem: trained in seconds each on the demo
model's VAE latents of 64 px scenes with `wan_t2i.demo.train.train_student`, and diagnosed against the demo model.

    python -m wan_t2i.doctor.students --out outputs/students       # about 2 minutes on 2 CPU cores
    python -m wan_t2i.doctor --model_path outputs/students/epsilon --teacher_path wan_t2i/demo_model --size 64

`flow` is trained as Wan is (the control), `epsilon` on the noise, `unit` with t = sigma on 0-1, `low_noise` as
`flow` but on sigmas drawn with shift 0.2, almost all below Wan 2.2's 0.875 boundary (shift 5 draws 42% above it);
`two-experts` is a Wan 2.2-style folder (the demo's VAE and text encoder) with `flow` as its high-noise expert
(`transformer`) and `low_noise` as its low-noise one (`transformer_2`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import WanTransformer3DModel

from wan_t2i.constants import BOUNDARY_RATIO

# Wider than the TINY student: a latent patch holds 16 x 2 x 2 = 64 values, and a 32-wide transformer cannot even
# copy x_t through its patch embedding, so its noise predictions fit nothing (measured: miscalibration 0.31 as a
# velocity, 0.36 as noise, after 1200 steps). 64 wide, 600 steps: the epsilon student's is 0.05 against 0.45.
STUDENT_DIM = 64
STUDENT_STEPS = 600
TRAINING_SIZE = 64  # pixels: 8 x 8 latents; diagnose these students with --size 64
TRAINING_SCENES = 128
# Recipe fields of each student.
STUDENTS = {
    "flow": {},
    "epsilon": {"objective": "epsilon"},
    "unit": {"timestep_scale": 1.0},
    "low_noise": {"shift": 0.2},
}
EXPERTS = {"transformer": "flow", "transformer_2": "low_noise"}  # the two-expert folder: expert -> student


def training_latents(pipe, *, seed: int = 0) -> tuple[torch.Tensor, list]:
    """Normalised latents (N, 16, 1, 8, 8) of rendered 64 px scenes through `pipe`'s VAE, and the scenes."""
    from wan_t2i.demo.train import encode_latents, render_dataset

    images, scenes = render_dataset(TRAINING_SCENES, TRAINING_SIZE, seed=seed)
    latents = encode_latents(pipe.components.vae, torch.from_numpy(images).to(pipe.device))
    return (latents - pipe.latents_mean.to(latents.device)) / pipe.latents_std.to(latents.device), scenes


def train_wrong_student(pipe, latents: torch.Tensor, scenes: list, *, seed: int = 0, **recipe) -> WanTransformer3DModel:
    """A tiny student trained on `latents` with `pipe`'s text encoder; `recipe`: fields of `Recipe` to change."""
    from wan_t2i.demo.components import TINY, build_transformer
    from wan_t2i.demo.train import TINY_RECIPE, train_student

    torch.manual_seed(seed)
    text_encoder = pipe.components.text_encoder
    transformer = build_transformer(replace(TINY.student, dim=STUDENT_DIM), text_encoder.config.d_model)
    recipe = replace(TINY_RECIPE, student_steps=STUDENT_STEPS, **recipe)
    rng = np.random.default_rng(seed)
    train_student(transformer.to(latents.device), latents, scenes, pipe.components.tokenizer, text_encoder, recipe, rng)
    return transformer


def write_two_expert_model(folder: Path, teacher: Path, experts: dict[str, WanTransformer3DModel]) -> Path:
    """A Diffusers Wan 2.2 folder: `teacher`'s VAE, text encoder, tokenizer and scheduler with `experts`
    ("transformer": the high-noise one, "transformer_2": the low-noise one, boundary 0.875)."""
    shutil.copytree(teacher, folder, ignore=shutil.ignore_patterns("transformer", "*.png", "train_log.json"))
    for name, expert in experts.items():
        expert.save_pretrained(folder / name)
    index = json.loads((folder / "model_index.json").read_text())
    index |= {"transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": BOUNDARY_RATIO}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write one subfolder per student into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from wan_t2i.loading import DEMO_MODEL_DIR
    from wan_t2i.pipeline import WanT2IPipeline

    pipe = WanT2IPipeline.from_pretrained(device="cpu")
    latents, scenes = training_latents(pipe, seed=args.seed)
    students = {}
    for name, recipe in STUDENTS.items():
        students[name] = train_wrong_student(pipe, latents, scenes, seed=args.seed, **recipe)
        students[name].save_pretrained(args.out / name)
        print(f"wrote {args.out / name}")
    experts = {expert: students[name] for expert, name in EXPERTS.items()}
    print(f"wrote {write_two_expert_model(args.out / 'two-experts', DEMO_MODEL_DIR, experts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
