"""How long each command takes to answer `--help` or a bad flag: the flags are parsed before torch, diffusers or Gradio
load, so this should be the interpreter's own start-up plus a few milliseconds.

    python -m benchmarks.cli_help [--runs 7]

Each command runs --runs times in a fresh process from the repository root; the table gives the median and the
fastest run, and the fastest less the fastest of `python -c pass` (the interpreter alone): on a shared CPU the fastest
run is the one least disturbed. Where the runs of one command spread widely, other work shared the CPU: the row says
"host busy". A difference under NOISE_S (or below zero, which only contention makes) reads "~0". The last row, run
fewer times, is what the commands no longer load before parsing: torch, diffusers and Gradio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY_SPREAD = 2.0  # slowest run / fastest run above this: the host was busy, not the command slow
NOISE_S = 0.01  # differences from the bare interpreter smaller than this are run-to-run noise
HEAVY_RUNS = 3  # the heavy-imports row takes seconds a run
HEAVY = ("python -c 'import torch, diffusers, gradio' (for comparison)", ["-c", "import torch, diffusers, gradio"])
COMMANDS = {
    "python -c pass (the interpreter alone)": ["-c", "pass"],
    "python -m wan_t2i --help": ["-m", "wan_t2i", "--help"],
    "python -m wan_t2i (no --prompt: an error)": ["-m", "wan_t2i"],
    "python app.py --help": ["app.py", "--help"],
    "python app.py --performance warp (an error)": ["app.py", "--performance", "warp"],
    "wan-t2i-app --help (wan_t2i.app:main)": [
        "-c",
        "import sys; from wan_t2i.app import main; main(sys.argv[1:])",
        "--help",
    ],
    "python -m wan_t2i.doctor --help": ["-m", "wan_t2i.doctor", "--help"],
}


def time_command(arguments: list[str], runs: int) -> list[float]:
    """Wall-clock seconds of `python ARGUMENTS`, once per run; RuntimeError if it fails for another reason than
    an argument error (status 2)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 2):
            raise RuntimeError(f"python {' '.join(arguments)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return times


def overhead(seconds: float) -> str:
    """A command's time over the bare interpreter's; "~0" where it is within noise (below zero: contention)."""
    return "~0" if seconds < NOISE_S else f"+{seconds:.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default: 7)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    doctor = (ROOT / "wan_t2i" / "doctor" / "__main__.py").exists()
    commands = {name: a for name, a in COMMANDS.items() if doctor or "doctor" not in name}
    load = os.getloadavg()[0]
    print(f"{args.runs} runs each, {sys.executable}, {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    print(f"{'command':<62} {'median':>8} {'fastest':>8} {'over python':>12}")
    baseline = None
    for name, arguments in [*commands.items(), HEAVY]:
        times = time_command(arguments, min(args.runs, HEAVY_RUNS) if arguments is HEAVY[1] else args.runs)
        median, fastest = statistics.median(times), min(times)
        over = "-" if baseline is None else overhead(fastest - baseline)
        baseline = fastest if baseline is None else baseline
        busy = "  host busy" if max(times) > BUSY_SPREAD * fastest else ""
        print(f"{name:<62} {median:>6.3f} s {fastest:>6.3f} s {over:>12}{busy}")
    if not doctor:
        print("(wan_t2i/doctor/__main__.py is not there yet: the doctor is not timed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
