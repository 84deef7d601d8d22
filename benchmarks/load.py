"""A bounded load check of the app: N clients for a fixed time, mixing valid requests, bad inputs, cancels and
disconnects; then what must hold afterwards, and the figures.

    python -m benchmarks.load                          # the tests' tiny random model: 8 clients for 45 s
    python -m benchmarks.load --clients 4 --seconds 20
    python -m benchmarks.load --demo --seconds 120     # the embedded demo model (about 1 s a step on 2 busy cores)

Local only: the app runs in this process on 127.0.0.1 (a free port), with its own Gradio cache folder, and the
clients are threads here speaking HTTP to it (gradio_client, and raw requests for what a client would not send). Each
client picks, at random from its own seed: a valid `/generate` (or now and then `/compare`, a small `/sweep`, or
`/diagnose`) with a seed, a bad input (each with the one-line message it must get), a long render or sweep it
cancels, or a long render it walks away from.

Afterwards it checks, and exits 1 where one fails:
  - the app still serves: the page, and a request after the load;
  - every completed request got its seed's exact image: each PNG against `pipe.generate` of the same request here,
    each sweep's grid against `pipe.sweep` of the same sweep, each doctor's report the same;
  - every bad input got its own one-line message, and nothing failed that the request did not cause;
  - no render ran beside the slot: the pipeline's `generate` and `sweep` are wrapped to count the renders running at
    once and to name the thread each runs on (a job's thread under the handler's one worker); no cancelled or
    abandoned render ran to its end;
  - memory (RSS of this process, server and clients) is back within --max_rss_growth_mb of where it was before;
  - disk: the Gradio cache is empty again once served images pass their age (--keep_outputs_seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROMPTS = ("A serene lake at sunset", "Snowy mountains at dawn", "A green meadow at noon", "a lake at night")
LONG_STEPS = 200  # a render long enough to be cancelled or abandoned mid-way; within the tiny model's budget
SAMPLERS = ("flow_unipc", "flow_euler", "flow_dpmpp")
# What each client does, by share of its requests.
MIX = {"valid": 0.4, "compare": 0.1, "sweep": 0.1, "diagnose": 0.05, "bad": 0.15, "cancel": 0.1, "disconnect": 0.1}
# Bad inputs: (kind, how it is sent, its values, what its one-line message must contain).
BAD_INPUTS = (
    ("steps out of range", "client", {"steps": 0}, "steps must be"),
    ("empty prompt", "client", {"prompt": "&nbsp;&nbsp;\u200b"}, "the prompt is empty"),
    ("prompt not text", "client", {"prompt": 42}, "the prompt must be text"),
    ("over the side limit", "client", {"height": None}, "(public_max_side)"),  # the app's limit + 16: see bad()
    ("over the work budget", "client", {"steps": 1000}, "(max_work)"),
    ("400-digit number", "raw", {}, "(401 digits)"),
    ("body over 1 MiB", "body", {}, "413"),
)
SAMPLE_SECONDS = 0.05  # how often the monitor samples RSS, the cache folder and the renders running
# A cancelled or abandoned render must end within this long of its client's cancel or leaving: the handler's poll
# (0.1 s), the step that is running, and the thread switches of a busy 2-core machine. One that ends later ran on.
STOP_GRACE_SECONDS = 1.0


@dataclass
class Outcome:
    """One client request: its kind ("served", a bad input's kind, "cancelled", ...), latency and what to check."""

    kind: str
    seconds: float
    sent: dict[str, Any] = field(default_factory=dict)  # a served request's values
    paths: tuple[str, ...] = ()  # a served request's PNGs, as the client downloaded them
    seed: int | None = None  # the seed the app says it used
    problem: str | None = None  # what went wrong, for a request whose outcome was not the expected one


class Renders:
    """Wraps a pipeline's `generate` and `sweep` (the real ones run) to record each render: its thread, steps, end."""

    def __init__(self, pipe: Any):
        self.started = self.stopped = self.peak = self.active = 0
        self.threads: Counter[str] = Counter()
        self.long_finished: list[tuple[int, float]] = []  # (seed, end) of each LONG_STEPS render that ran to its end
        self.left: dict[int, float] = {}  # seed -> when its client cancelled or went away (LoadClient writes it)
        self._lock = threading.Lock()
        self.generate, self.sweep = pipe.generate, pipe.sweep  # the real ones, for the reference renders
        pipe.generate = lambda request, /, **settings: self._render(self.generate, request, (), settings)
        pipe.sweep = lambda request, axes, **options: self._render(self.sweep, request, (axes,), options)

    def ran_on(self) -> list[int]:
        """The seeds of cancelled or abandoned renders that ended more than STOP_GRACE_SECONDS after their client
        left: a cancel or a disconnect not honoured. (One that finished before its cancel arrived is not counted.)"""
        return [seed for seed, end in self.long_finished if end > self.left.get(seed, end) + STOP_GRACE_SECONDS]

    def _render(self, method: Any, request: Any, args: tuple, settings: dict) -> Any:
        with self._lock:
            self.started += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads[threading.current_thread().name.rsplit("_", 1)[0]] += 1
        try:
            result = method(request, *args, **settings)
            if request.steps == LONG_STEPS:
                with self._lock:
                    self.long_finished.append((request.seed, time.monotonic()))
            return result
        except Exception as error:
            with self._lock:
                self.stopped += type(error).__name__ == "RenderStopped"
            raise
        finally:
            with self._lock:
                self.active -= 1


class Monitor(threading.Thread):
    """Samples this process's RSS and the cache folder's size until stopped; keeps the peaks."""

    def __init__(self, cache: Path):
        super().__init__(daemon=True)
        self.cache, self.peak_rss, self.peak_cache, self.peak_files = cache, 0, 0, 0
        self.process = psutil.Process()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            size, files = cache_size(self.cache)
            self.peak_cache, self.peak_files = max(self.peak_cache, size), max(self.peak_files, files)
            time.sleep(SAMPLE_SECONDS)


def cache_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) under `folder`; files deleted while it is walked are skipped."""
    size = files = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                size, files = size + os.stat(os.path.join(root, name)).st_size, files + 1
            except FileNotFoundError:
                pass
    return size, files


def raw_data(prompt: Any, steps: Any, seed: int) -> list:
    """The positional `data` of a raw `/generate` call: prompt, negative prompt, sampler, model, steps, shift,
    guidance, seed (the rest left out: the server fills them in)."""
    return [prompt, None, None, None, steps, None, None, seed]


class LoadClient(threading.Thread):
    """One visitor: requests of the mix, one after another, until the deadline."""

    def __init__(self, index: int, url: str, deadline: float, downloads: Path, max_side: int, renders: Renders):
        super().__init__(name=f"client-{index}", daemon=True)
        self.url, self.deadline, self.downloads, self.max_side = url, deadline, downloads, max_side
        self.renders = renders  # where it notes when it cancelled or left a render (by seed)
        self.rng = random.Random(index)
        self.outcomes: list[Outcome] = []

    def run(self) -> None:
        import httpx
        from gradio_client import Client

        self.client = Client(self.url, verbose=False, download_files=str(self.downloads))
        self.http = httpx.Client(base_url=self.url + "gradio_api/", timeout=60)
        actions = {"valid": self.valid, "compare": self.compare, "bad": self.bad, "cancel": self.cancel}
        actions |= {"disconnect": self.disconnect, "sweep": self.sweep, "diagnose": self.diagnose}
        while time.monotonic() < self.deadline:
            action = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
            start = time.monotonic()
            try:
                outcome = actions[action]()
            except Exception as error:  # anything a request did not cause: a failure of the app
                outcome = Outcome(f"{action}: unexpected", 0.0, problem=f"{type(error).__name__}: {error}"[:300])
            outcome.seconds = time.monotonic() - start
            self.outcomes.append(outcome)
        self.http.close()

    def valid(self) -> Outcome:
        sent = dict(prompt=self.rng.choice(PROMPTS), steps=self.rng.randint(1, 4), seed=self.rng.randrange(1 << 31))
        sent["sampler"] = self.rng.choice(SAMPLERS)
        path, seed, _ = self.client.predict(**sent, api_name="/generate")
        return Outcome("served", 0.0, sent, (path,), seed)

    def compare(self) -> Outcome:
        sent = dict(prompt=self.rng.choice(PROMPTS), steps=self.rng.randint(1, 4), seed=self.rng.randrange(1 << 31))
        path_a, path_b, seed, _ = self.client.predict(**sent, api_name="/compare")
        return Outcome("served", 0.0, sent | {"samplers": ("legacy_ddim", "flow_unipc")}, (path_a, path_b), seed)

    def sweep(self) -> Outcome:
        sent = dict(prompt=self.rng.choice(PROMPTS), steps=self.rng.randint(1, 3), seed=self.rng.randrange(1 << 31))
        sent |= dict(axis_1="shift", values_1="1,5", axis_2="sampler", values_2="legacy_ddim,flow_unipc")
        grid, _, details = self.client.predict(**sent, api_name="/sweep")
        return Outcome("sweep served", 0.0, sent, (grid,), details["seed"])

    def diagnose(self) -> Outcome:
        _, report = self.client.predict(api_name="/diagnose")
        ok = report.startswith("# Checkpoint doctor")
        return Outcome("diagnosed", 0.0, problem=None if ok else f"report {report[:100]!r}")

    def bad(self) -> Outcome:
        from gradio_client.exceptions import AppError

        kind, how, values, expected = self.rng.choice(BAD_INPUTS)
        if "height" in values:  # over this app's public side, within what the model renders
            values = {"height": self.max_side + 16}
        if how == "body":
            return self.oversized_body(kind)
        try:
            if how == "raw":
                message = self.raw_error(raw_data(PROMPTS[0], "@", 1))
            else:
                self.client.predict(**({"prompt": PROMPTS[0], "steps": 1} | values), api_name="/generate")
                return Outcome(kind, 0.0, problem="rendered, though it should have been refused")
        except AppError as error:
            message = str(error)
        if expected not in message or "\n" in message:
            return Outcome(kind, 0.0, problem=f"message {message[:200]!r} lacks {expected!r} or is not one line")
        return Outcome(kind, 0.0)

    def raw_error(self, data: list) -> str:
        """POST `data` to /call/generate with a 400-digit steps in place of "@"; the error event's message."""
        body = json.dumps({"data": data}).replace('"@"', "1" + "0" * 400)
        response = self.http.post("call/generate", content=body, headers={"content-type": "application/json"})
        stream = self.http.get(f"call/generate/{response.json()['event_id']}").text
        errors = [line for line in stream.splitlines() if line.startswith("data: ") and "error" in line]
        return json.loads(errors[-1].removeprefix("data: "))["error"] if errors else f"no error in {stream[-200:]!r}"

    def oversized_body(self, kind: str) -> Outcome:
        import httpx

        body = json.dumps({"data": ["x" * (2 << 20)]}).encode()
        try:
            response = self.http.post("call/generate", content=body, headers={"content-type": "application/json"})
        except httpx.TransportError:  # the server answered 413 and closed before the client finished sending
            return Outcome(kind, 0.0)
        return Outcome(kind, 0.0, problem=None if response.status_code == 413 else f"status {response.status_code}")

    def cancel(self) -> Outcome:
        """Submit a long render and cancel it, once the server has named the event (gradio_client's cancel before
        then carries no event id, and no server can stop what it was not told: docs/reliability.md)."""
        from gradio_client.utils import Status

        seed = self.rng.randrange(1 << 31)
        if self.rng.random() < 0.3:  # a long sweep, stopped as a render is
            sweep = dict(axis_1="shift", values_1="1,5", axis_2="none", values_2="")
            job = self.client.submit(PROMPTS[0], steps=LONG_STEPS, seed=seed, **sweep, api_name="/sweep")
        else:
            job = self.client.submit(PROMPTS[0], steps=LONG_STEPS, seed=seed, api_name="/generate")
        time.sleep(self.rng.uniform(0.05, 1.0))
        named_by = time.monotonic() + 30
        while job.status().code in (Status.STARTING, Status.JOINING_QUEUE) and time.monotonic() < named_by:
            time.sleep(0.02)
        self.renders.left[seed] = time.monotonic()
        job.cancel()
        return Outcome("cancelled", 0.0)

    def disconnect(self) -> Outcome:
        seed = self.rng.randrange(1 << 31)
        data = raw_data(PROMPTS[1], LONG_STEPS, seed)
        event = self.http.post("call/generate", json={"data": data}).json()["event_id"]
        leave = time.monotonic() + self.rng.uniform(0.05, 1.0)
        with self.http.stream("GET", f"call/generate/{event}") as stream:
            for _ in stream.iter_bytes():
                if time.monotonic() > leave:
                    break
            self.renders.left[seed] = time.monotonic()
        return Outcome("disconnected", 0.0)  # the connection closes as the stream's block ends


def check_images(outcomes: list[Outcome], pipe: Any, renders: Renders) -> list[str]:
    """Each served request's PNGs (a sweep's grid) against a direct render of the same request; the mismatches."""
    import numpy as np
    from PIL import Image

    from wan_t2i.app_sweep import sweep_axes

    problems = []
    for outcome in outcomes:
        sent = dict(outcome.sent)
        if "axis_1" in sent:
            axes = sweep_axes(*(sent.pop(k) for k in ("axis_1", "values_1", "axis_2", "values_2")))
            grid = renders.sweep(pipe.request(sent.pop("prompt"), **sent), axes).grid()
            if not np.array_equal(np.asarray(Image.open(outcome.paths[0]).convert("RGB")), np.asarray(grid)):
                problems.append(f"{outcome.paths[0]}: not the grid of {outcome.sent}")
            continue
        generate = renders.generate
        samplers = sent.pop("samplers", None) or (sent.pop("sampler"),)
        if outcome.seed != sent["seed"]:
            problems.append(f"asked for seed {sent['seed']}, the app used {outcome.seed}")
            continue
        generation = generate(pipe.request(sent.pop("prompt"), samplers=samplers, **sent))
        for path, result in zip(outcome.paths, generation.results.values(), strict=True):
            served = np.asarray(Image.open(path).convert("RGB"))
            if not np.array_equal(served, np.asarray(result.image)):
                problems.append(f"{path}: not the image of {outcome.sent}")
    return problems


def held_rss() -> int:
    """This process's RSS once garbage is collected and glibc has given freed memory back (`malloc_trim`): what is
    still held, not what the allocator keeps for later."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo", action="store_true", help="the embedded demo model (default: the tiny test model)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=45, help="how long the clients send requests (default 45)")
    parser.add_argument("--keep_outputs_seconds", type=int, default=8, help="age at which served images go (8)")
    parser.add_argument("--max_rss_growth_mb", type=float, default=200, help="allowed RSS growth (default 200)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="wan-t2i-load-") as scratch:
        scratch = Path(scratch)
        cache, downloads = scratch / "gradio-cache", scratch / "downloads"
        os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read when the demo is created: this run's cache alone
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        return run(args, scratch, cache, downloads)


def run(args: argparse.Namespace, scratch: Path, cache: Path, downloads: Path) -> int:
    import httpx
    from gradio_client import Client

    from benchmarks.app_latency import free_port, tiny_model
    from wan_t2i.app import create_demo
    from wan_t2i.pipeline import WanT2IPipeline
    from wan_t2i.request import Limits

    teacher_path = None if args.demo else tiny_model(scratch / "tiny")
    pipe = WanT2IPipeline.from_pretrained(teacher_path=teacher_path, device="cpu")
    renders = Renders(pipe)
    demo = create_demo(pipe, keep_outputs_seconds=args.keep_outputs_seconds)
    _, url, _ = demo.launch(
        **demo.launch_args, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    checks: dict[str, tuple[bool, str]] = {}
    try:
        Client(url, verbose=False, download_files=str(downloads)).predict(PROMPTS[0], steps=1, api_name="/generate")
        rss_before = held_rss()
        monitor = Monitor(cache)
        monitor.start()

        # 1. The load: N clients for a fixed time.
        deadline = time.monotonic() + args.seconds
        max_side = Limits.for_model(pipe.defaults).max_side
        clients = [LoadClient(i, url, deadline, downloads, max_side, renders) for i in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        outcomes = [o for client in clients for o in client.outcomes]
        idle_by = time.monotonic() + 30
        while renders.active and time.monotonic() < idle_by:
            time.sleep(SAMPLE_SECONDS)

        # 2. The app still serves, and each served request got its seed's image (rendered again here).
        page = httpx.get(url, timeout=30).status_code
        after = Client(url, verbose=False, download_files=str(downloads))
        path, seed, _ = after.predict(PROMPTS[0], steps=2, seed=11, sampler="flow_unipc", api_name="/generate")
        served = [o for o in outcomes if o.kind in ("served", "sweep served")]
        final = Outcome("served", 0.0, dict(prompt=PROMPTS[0], steps=2, seed=11, sampler="flow_unipc"), (path,), seed)
        mismatches = check_images([*served, final], pipe, renders)
        checks["the app still serves"] = (page == 200 and seed == 11, f"page {page}, a request after the load")
        checks["each served request got its seed's exact image"] = (
            not mismatches,
            f"{len(served) + 1} requests rendered again with pipe.generate" + "".join(f"\n    {m}" for m in mismatches),
        )
        problems = [f"{o.kind}: {o.problem}" for o in outcomes if o.problem]
        checks["each bad input got its one-line message; nothing else failed"] = (
            not problems,
            f"{sum(o.kind in {b[0] for b in BAD_INPUTS} for o in outcomes)} bad inputs"
            + "".join(f"\n    {p}" for p in problems[:10]),
        )
        threads = ", ".join(f"{name} x{n}" for name, n in renders.threads.items())
        checks["no render ran beside the slot"] = (
            renders.peak == 1 and set(renders.threads) == {"wan-t2i-gpu"} and not renders.ran_on(),
            f"at most {renders.peak} at once, on {threads}; {renders.stopped} stopped mid-way, "
            f"{len(renders.ran_on())} cancelled or abandoned ran on past their client's leaving "
            f"({len(renders.long_finished) - len(renders.ran_on())} had finished before it)",
        )

        # 3. Disk and memory back to a bounded level once served images pass their age.
        empty_by = time.monotonic() + 2 * args.keep_outputs_seconds + 10
        while cache_size(cache)[1] and time.monotonic() < empty_by:
            time.sleep(0.5)
        left, left_files = cache_size(cache)
        monitor.running = False
        monitor.join()
        rss_after = held_rss()
        checks["the cache is empty again"] = (
            left_files == 0,
            f"peak {monitor.peak_cache / 1e6:.2f} MB in {monitor.peak_files} files; {left_files} files "
            f"({left} bytes) left after {args.keep_outputs_seconds} s",
        )
        growth = (rss_after - rss_before) / 2**20
        checks["memory is back to a bounded level"] = (
            growth < args.max_rss_growth_mb,
            f"RSS {rss_before / 2**20:.0f} MiB before, peak {monitor.peak_rss / 2**20:.0f} MiB, "
            f"{rss_after / 2**20:.0f} MiB after ({growth:+.0f} MiB; allowed {args.max_rss_growth_mb:g})",
        )
    finally:
        demo.close()

    report(args, pipe, outcomes, renders, checks)
    return 0 if all(ok for ok, _ in checks.values()) else 1


def report(args: argparse.Namespace, pipe: Any, outcomes: list[Outcome], renders: Renders, checks: dict) -> None:
    d = pipe.defaults
    served = sorted(o.seconds for o in outcomes if o.kind == "served")
    print(f"model: {d.name} on {pipe.device}, {d.width}x{d.height}; {args.clients} clients for {args.seconds:g} s")
    print(f"requests: {len(outcomes)} sent, {len(served)} served, {renders.started} renders started")
    for kind, n in sorted(Counter(o.kind for o in outcomes).items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<34} {n:>5}")
    if served:
        print(f"latency of served requests (queue included): p50 {percentile(served, 50):.2f} s, "
              f"p95 {percentile(served, 95):.2f} s, max {served[-1]:.2f} s")  # fmt: skip
    for name, (ok, detail) in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
