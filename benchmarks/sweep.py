"""Sweeps and previews on the embedded demo model (CPU): a sweep against its cells run one by one, previews' cost.

    python -m benchmarks.sweep [--repeats 3] [--steps 20]

1. A sweep of 3 shifts x 2 samplers (flow_unipc, legacy_ddim) at 20 steps, against the same 6 cells rendered as
   6 separate `generate` calls: seconds (median of the repeats, interleaved so that a busy host hits both alike),
   their ratio, and the transformer forwards each makes (counted by forward hooks, not computed).
2. Previews: one A/B (legacy_ddim + flow_unipc) at 20 steps without previews, with a preview every 5 steps and with
   one every step; the overhead of each against the run without (target: at most ~10%).
Every run uses the same prompt and seed; the text encoding is cached after the first run, for all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.sweep import ForwardCounter

PROMPT = "A serene lake at sunset"
AXES = {"shift": [3.0, 5.0, 7.0], "sampler": ["flow_unipc", "legacy_ddim"]}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    pipe = WanT2IPipeline.from_pretrained(device="cpu")
    request = pipe.request(PROMPT, seed=1, steps=args.steps)
    pipe.generate(request)  # warm-up: the text cache and the allocator

    sweep_times, separate_times = [], []
    for _ in range(args.repeats):
        seconds, sweep = timed(lambda: pipe.sweep(request, AXES))
        sweep_times.append(seconds)
        counter, cells = ForwardCounter(pipe), [cell.request for cell in sweep.cells]
        with counter:
            seconds, _ = timed(lambda: [pipe.generate(cell) for cell in cells])  # noqa: B023 (called at once)
        separate_times.append(seconds)
    sweep_s, separate_s = statistics.median(sweep_times), statistics.median(separate_times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; demo model, {args.steps} steps")
    print(f"sweep 3 shifts x 2 samplers: {sweep_s:.2f} s, {sweep.forwards} forwards (batch of up to 8 rows)")
    print(f"6 separate runs:             {separate_s:.2f} s, {counter.calls} forwards")
    print(f"sweep / separate: {sweep_s / separate_s:.2f}x time, {sweep.forwards / counter.calls:.2f}x forwards")
    rounded = [[round(t, 2) for t in times] for times in (sweep_times, separate_times)]
    print(f"  (all repeats: sweep {rounded[0]}, separate {rounded[1]})")

    ab = pipe.request(PROMPT, seed=1, steps=args.steps, samplers=["legacy_ddim", "flow_unipc"])
    runs: dict[str, list[float]] = {"none": [], "every 5": [], "every step": []}
    for _ in range(args.repeats):
        runs["none"].append(timed(lambda: pipe.generate(ab))[0])
        runs["every 5"].append(timed(lambda: pipe.generate(ab, preview_every=5))[0])
        runs["every step"].append(timed(lambda: pipe.generate(ab, preview_every=1))[0])
    base = statistics.median(runs["none"])
    for name, times in runs.items():
        median = statistics.median(times)
        print(f"A/B with previews {name:>10}: {median:.3f} s ({100 * (median / base - 1):+.1f}% against none)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
