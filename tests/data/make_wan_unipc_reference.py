"""Write tests/data/wan_unipc_reference.json: final latents of Wan's own `--sample_solver unipc` loop (its default) on
analytic fields, as make_wan_dpmpp_reference.py does for dpm++ (same noise, fields and settings).

Wan's scheduler is run, not re-implemented: pass the path of a checkout's wan/utils/fm_solvers_unipc.py and the
commit it came from; it is loaded from there and never copied into this repository.

    git -C <Wan2.2 clone> show HEAD:wan/utils/fm_solvers_unipc.py > /tmp/wan22/fm_solvers_unipc.py
    python tests/data/make_wan_unipc_reference.py --fm-solvers-unipc /tmp/wan22/fm_solvers_unipc.py --wan-commit <sha>

The loop is the one in Wan2.2 wan/text2video.py (`sample_solver == 'unipc'`): FlowUniPCMultistepScheduler(
num_train_timesteps=1000, shift=1, use_dynamic_shifting=False), `set_timesteps(steps, shift=shift)`, the model given
`torch.stack([t])` for each timestep t, and `scheduler.step(pred.unsqueeze(0), t, latents[0].unsqueeze(0),
return_dict=False, generator=seed_g)`.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent)]
import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from make_wan_dpmpp_reference import FIELDS, LATENT_SHAPE, NOISE_SEED, SETTINGS, load_wan_solvers  # noqa: E402

OUT = Path(__file__).with_name("wan_unipc_reference.json")


def run_wan_unipc(wan, model_fn, noise: torch.Tensor, steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan2.2 wan/text2video.py's unipc branch with `model_fn` for the guided transformer; (timesteps, final x)."""
    scheduler = wan.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    scheduler.set_timesteps(steps, device="cpu", shift=shift)
    seed_g = torch.Generator("cpu").manual_seed(NOISE_SEED)  # unused by UniPC (deterministic), passed as Wan does
    latents = [noise]
    for t in scheduler.timesteps:
        pred = model_fn(latents[0].unsqueeze(0), torch.stack([t]))[0]
        x = scheduler.step(pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False, generator=seed_g)[0]
        latents = [x.squeeze(0)]
    return scheduler.timesteps, latents[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fm-solvers-unipc", type=Path, required=True, help="Wan's wan/utils/fm_solvers_unipc.py")
    parser.add_argument("--wan-commit", required=True, help="the Wan commit the file was taken from")
    parser.add_argument("--wan-repo", default="Wan-Video/Wan2.2")
    args = parser.parse_args()
    wan = load_wan_solvers(args.fm_solvers_unipc)
    noise = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(NOISE_SEED))
    runs = {}
    for steps, shift in SETTINGS:
        run = {"steps": steps, "shift": shift}
        for name, model_fn in FIELDS.items():
            timesteps, final = run_wan_unipc(wan, model_fn, noise, steps, shift)
            run["timesteps"] = timesteps.tolist()
            run[f"final_{name}"] = final.flatten().tolist()
        runs[f"steps{steps}_shift{shift:g}"] = run
    record = {
        "about": (
            "Final latents of Wan's FlowUniPCMultistepScheduler as Wan's `--sample_solver unipc` runs it (see "
            "make_wan_unipc_reference.py's docstring for the loop), from `noise` (C, F, H, W) = (4, 1, 4, 4) "
            "flattened, with the model replaced by the analytic fields of tests/analytic.py (FIELDS). Per setting: "
            "Wan's timesteps and the final latents per field, float32, flattened."
        ),
        "produced": {
            "command": "python tests/data/make_wan_unipc_reference.py --fm-solvers-unipc "
            f"<Wan>/wan/utils/fm_solvers_unipc.py --wan-commit {args.wan_commit}",
            "wan_repository": args.wan_repo,
            "wan_commit": args.wan_commit,
            "wan_files": ["wan/utils/fm_solvers_unipc.py", "wan/text2video.py (the loop, re-stated in the script)"],
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
