"""Write tests/data/stored_outputs.json: each sampler's outputs on the tiny sensitive Wan, pinned for a refactor.

Run from the repository root, at the commit whose outputs are to be pinned (a clean checkout of it, e.g. a
`git worktree`, when the working tree holds unfinished edits): `python tests/data/make_stored_outputs.py`.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's wan_t2i, and tests/ for the model builders

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sensitive_wan import save_sensitive_wan  # noqa: E402

from wan_t2i.pipeline import WanT2IPipeline  # noqa: E402

OUT = Path(__file__).with_name("stored_outputs.json")
PROMPT = "a serene lake at sunset"
SETTINGS = {  # generate()'s keyword arguments; every sampler in one call, as the A/B comparison runs them
    "samplers": ["flow_unipc", "flow_euler", "legacy_ddim"],
    "negative_prompt": "night",
    "seed": 11,
    "steps": 6,
    "shift": 5.0,
    "guidance_scale": 4.0,
    "height": 32,
    "width": 48,
}
LATENT_STRIDE = 7  # of the 384 latent values (16 x 4 x 6): 55, every channel and position
PIXEL_STRIDE = 97  # of the 4608 pixel values (32 x 48 x 3): 48, prime to 3 so every colour channel is sampled


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        pipe = WanT2IPipeline.from_pretrained(teacher_path=save_sensitive_wan(Path(folder)), device="cpu")
        generation = pipe.generate(PROMPT, **SETTINGS)
    outputs = {}
    for sampler in SETTINGS["samplers"]:
        latents, pixels = generation[sampler].latents.flatten(), np.asarray(generation[sampler].image).flatten()
        outputs[sampler] = {
            "latents": latents[::LATENT_STRIDE].tolist(),
            "latents_mean": latents.double().mean().item(),
            "latents_std": latents.double().std().item(),
            "pixels": pixels[::PIXEL_STRIDE].tolist(),
        }
    record = {
        "about": (
            "Outputs of WanT2IPipeline.generate(prompt, **settings) on tests/sensitive_wan.py's save_sensitive_wan("
            "seed=0), a tiny random Wan built on CPU: per sampler the final latents (1, 16, 1, 4, 6) flattened and "
            "read every latent_stride-th value, their mean and std, and the image's uint8 pixels (32, 48, 3) flattened "
            "and read every pixel_stride-th value. tests/test_stored_outputs.py compares them within float rounding."
        ),
        "produced": {
            "command": "python tests/data/make_stored_outputs.py",
            "commit": git("rev-parse", "HEAD"),
            "uncommitted_changes_in_wan_t2i_or_tests": bool(git("status", "--porcelain", "--", "wan_t2i", "tests")),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "cpu": platform.machine(),
        },
        "prompt": PROMPT,
        "settings": SETTINGS,
        "latent_stride": LATENT_STRIDE,
        "pixel_stride": PIXEL_STRIDE,
        "outputs": outputs,
    }
    text = json.dumps(record, indent=1)  # then each list of numbers on one line, not one number a line
    OUT.write_text(re.sub(r"\[\s+([^\[\]{}\"]+?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
