"""Write tests/data/wan_dpmpp_reference.json: final latents of Wan's own `--sample_solver dpm++` loop on analytic
fields.

Wan's scheduler is run, not re-implemented: pass the path of a checkout's wan/utils/fm_solvers.py (Wan2.1 and Wan2.2
ship the same file) and the commit it came from; it is loaded from there and never copied into this repository.

    git -C <Wan2.2 clone> show HEAD:wan/utils/fm_solvers.py > /tmp/wan22/fm_solvers.py
    python tests/data/make_wan_dpmpp_reference.py --fm-solvers /tmp/wan22/fm_solvers.py --wan-commit <sha>

The loop is the one in Wan2.2 wan/text2video.py (`sample_solver == 'dpm++'`): FlowDPMSolverMultistepScheduler(
num_train_timesteps=1000, shift=1, use_dynamic_shifting=False), its grid from `retrieve_timesteps(scheduler,
sigmas=get_sampling_sigmas(steps, shift))`, the model given `torch.stack([t])` for each integer timestep t, and
`scheduler.step(pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False, generator=seed_g)`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests")]  # the analytic fields the test recomputes

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from analytic import FIELDS  # noqa: E402

OUT = Path(__file__).with_name("wan_dpmpp_reference.json")
SETTINGS = [(1, 5.0), (2, 5.0), (3, 5.0), (4, 1.0), (4, 5.0), (4, 12.0), (8, 3.0), (20, 5.0), (20, 12.0), (40, 12.0)]
SETTINGS += [(50, 1.0), (50, 5.0)]  # (steps, shift)
LATENT_SHAPE = (4, 1, 4, 4)  # (C, F, H, W): Wan's loop keeps one sample's latents without a batch dimension
NOISE_SEED = 0


def load_wan_solvers(path: Path):
    """Wan's fm_solvers.py as a module, from wherever it was checked out."""
    spec = importlib.util.spec_from_file_location("wan_fm_solvers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_wan_dpmpp(wan, model_fn, noise: torch.Tensor, steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan2.2 wan/text2video.py's dpm++ branch with `model_fn` for the guided transformer; (timesteps, final x)."""
    scheduler = wan.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    timesteps, _ = wan.retrieve_timesteps(scheduler, device="cpu", sigmas=wan.get_sampling_sigmas(steps, shift))
    seed_g = torch.Generator("cpu").manual_seed(NOISE_SEED)  # unused by dpmsolver++ (deterministic), passed as Wan does
    latents = [noise]
    for t in timesteps:
        pred = model_fn(latents[0].unsqueeze(0), torch.stack([t]))[0]
        x = scheduler.step(pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False, generator=seed_g)[0]
        latents = [x.squeeze(0)]
    return timesteps, latents[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fm-solvers", type=Path, required=True, help="Wan's wan/utils/fm_solvers.py, outside the repo"
    )
    parser.add_argument("--wan-commit", required=True, help="the Wan commit the file was taken from")
    parser.add_argument("--wan-repo", default="Wan-Video/Wan2.2")
    args = parser.parse_args()
    wan = load_wan_solvers(args.fm_solvers)
    noise = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(NOISE_SEED))
    runs = {}
    for steps, shift in SETTINGS:
        scheduler = wan.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        wan.retrieve_timesteps(scheduler, device="cpu", sigmas=wan.get_sampling_sigmas(steps, shift))
        run = {"steps": steps, "shift": shift, "sigmas": scheduler.sigmas.tolist()}
        for name, model_fn in FIELDS.items():
            timesteps, final = run_wan_dpmpp(wan, model_fn, noise, steps, shift)
            run["timesteps"] = timesteps.tolist()
            run[f"final_{name}"] = final.flatten().tolist()
        runs[f"steps{steps}_shift{shift:g}"] = run
    record = {
        "about": (
            "Final latents of Wan's FlowDPMSolverMultistepScheduler as Wan's `--sample_solver dpm++` runs it (see "
            "make_wan_dpmpp_reference.py's docstring for the loop), from `noise` (C, F, H, W) = (4, 1, 4, 4) "
            "flattened, with the model replaced by the analytic fields of tests/analytic.py (FIELDS), which read "
            "sigma = t / 1000 from the integer timestep Wan gives the model. Per setting: Wan's timesteps, its float32 "
            "sigmas (ending at 0) and the final latents per field, float32, flattened."
        ),
        "produced": {
            "command": "python tests/data/make_wan_dpmpp_reference.py --fm-solvers <Wan>/wan/utils/fm_solvers.py "
            f"--wan-commit {args.wan_commit}",
            "wan_repository": args.wan_repo,
            "wan_commit": args.wan_commit,
            "wan_files": ["wan/utils/fm_solvers.py", "wan/text2video.py (the loop, re-stated in the script)"],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
            "cpu": platform.machine(),
        },
        "noise": noise.flatten().tolist(),
        "latent_shape": list(LATENT_SHAPE),
        "fields": list(FIELDS),
        "runs": runs,
    }
    text = json.dumps(record, indent=1)  # then each list of numbers on one line, not one number a line
    OUT.write_text(re.sub(r"\[\s+([^\[\]{}\"]+?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
