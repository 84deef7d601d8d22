"""Sweeps and previews on the embedded demo model (CPU): a sweep against its cells run one by one, previews' cost.

    python -m benchmarks.sweep [--repeats 5] [--steps 20]

1. A sweep of 3 shifts x 2 samplers (flow_unipc, legacy_ddim) at 20 steps, against the same 6 cells rendered as
   6 separate `generate` calls: seconds, their ratio, and the transformer forwards each makes (counted by forward
   hooks, not computed).
2. Previews: one A/B (legacy_ddim + flow_unipc) at 20 steps without previews, with a preview every 5 steps and with
   one every step; the overhead of each against the run without (target: at most ~10%).
Every run uses the same prompt and seed; the text encoding is cached after the first run, for all alike. The runs
are interleaved (the previews' in a rotating order) so that a busy host hits each alike, and each figure is given as
the fastest of the repeats, the run least disturbed by other work on a shared host, and as their median; the host's
load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
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


def seconds(times: list[float]) -> str:
    return f"{min(times):.2f} s fastest, {statistics.median(times):.2f} s median"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    pipe = WanT2IPipeline.from_pretrained(device="cpu")
    request = pipe.request(PROMPT, seed=1, steps=args.steps)
    pipe.generate(request)  # warm-up: the text cache and the allocator
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs (load {load})")
    print(f"demo model, {args.steps} steps, {args.repeats} repeats")

    sweep_times, separate_times = [], []
    for _ in range(args.repeats):
        elapsed, sweep = timed(lambda: pipe.sweep(request, AXES))
        sweep_times.append(elapsed)
        counter, cells = ForwardCounter(pipe), [cell.request for cell in sweep.cells]
        with counter:
            elapsed, _ = timed(lambda: [pipe.generate(cell) for cell in cells])  # noqa: B023 (called at once)
        separate_times.append(elapsed)
    print(f"sweep 3 shifts x 2 samplers: {seconds(sweep_times)}; {sweep.forwards} forwards (up to 8 rows each)")
    print(f"6 separate runs:             {seconds(separate_times)}; {counter.calls} forwards")
    ratio = min(sweep_times) / min(separate_times), statistics.median(sweep_times) / statistics.median(separate_times)
    print(f"sweep / separate: {ratio[0]:.2f}x time ({ratio[1]:.2f}x by medians), "
          f"{sweep.forwards / counter.calls:.2f}x forwards")  # fmt: skip
    rounded = [[round(t, 2) for t in times] for times in (sweep_times, separate_times)]
    print(f"  (all repeats: sweep {rounded[0]}, separate {rounded[1]})")

    ab = pipe.request(PROMPT, seed=1, steps=args.steps, samplers=["legacy_ddim", "flow_unipc"])
    every = {"none": None, "every 5": 5, "every step": 1}
    runs: dict[str, list[float]] = {name: [] for name in every}
    for repeat in range(args.repeats):
        names = list(every)[repeat % 3 :] + list(every)[: repeat % 3]  # each first as often as the others
        for name in names:
            runs[name].append(timed(lambda: pipe.generate(ab, preview_every=every[name]))[0])  # noqa: B023
    base = min(runs["none"]), statistics.median(runs["none"])
    for name, times in runs.items():
        overhead = 100 * (min(times) / base[0] - 1), 100 * (statistics.median(times) / base[1] - 1)
        print(f"A/B with previews {name:>10}: {seconds(times)} ({overhead[0]:+.1f}% fastest, "
              f"{overhead[1]:+.1f}% median, against none)")  # fmt: skip
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"(load at the end: {load})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
