"""What the Gradio app costs on top of the pipeline: start-up time, and request latency against a bare `generate`.

    python -m benchmarks.app_latency                     # the embedded demo model
    python -m benchmarks.app_latency --tiny              # the tests' tiny random model (no demo model needed)
    python -m benchmarks.app_latency --teacher_path Wan-AI/Wan2.1-T2V-1.3B-Diffusers --steps 20

Start-up: from launching `python app.py` to the first page served (median of --startups runs, each a fresh process).
Latency: `/generate` and `/compare` through `gradio_client` (queue, HTTP, PNG encode and download included) against
`pipe.generate` in this process at the same settings; medians of --runs after one warm-up each. A request through the
app that takes less time than the bare call says only that other work slowed the bare call: that row reads "host busy".
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A serene lake at sunset"
STARTUP_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll `url` until it answers 200; raise if the process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with status {process.returncode} before serving a page")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"app.py served no page at {url} within {timeout:.0f} s")


def start_app(env: dict[str, str]) -> tuple[subprocess.Popen, str, float]:
    """Launch `python app.py` on a free port; return the process, its URL and seconds to the first page."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--server_name", "127.0.0.1", "--server_port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_page(url, process, STARTUP_TIMEOUT_S)
    except Exception:
        stop(process)
        raise RuntimeError(f"app.py did not start:\n{process.stderr.read()[-2000:]}") from None
    return process, url, time.perf_counter() - start


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def median_seconds(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    """One warm-up call, then the median of `runs` timed calls."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def tiny_model(folder: Path) -> Path:
    """The tests' tiny random Wan model, saved to `folder` (for a benchmark without the demo model)."""
    from tests.conftest import TINY_DEFAULTS, save_tiny_wan  # run from the repository root: tests/ is importable

    return save_tiny_wan(folder, defaults=TINY_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.app_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--teacher_path", help="a Wan model in the Diffusers layout (default: the demo model)")
    parser.add_argument("--model_path", help="a student transformer (with --teacher_path)")
    parser.add_argument("--tiny", action="store_true", help="use the tests' tiny random model")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--runs", type=int, default=5, help="timed requests per measurement (default 5)")
    parser.add_argument("--startups", type=int, default=3, help="fresh app processes to time (default 3)")
    args = parser.parse_args(argv)

    from gradio_client import Client

    from wan_t2i.pipeline import WanT2IPipeline

    with tempfile.TemporaryDirectory() as scratch:
        teacher_path = str(tiny_model(Path(scratch))) if args.tiny else args.teacher_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_T2I_") and k != "SPACE_ID"}
        env |= {"WAN_T2I_TEACHER_PATH": teacher_path} if teacher_path else {}
        env |= {"WAN_T2I_MODEL_PATH": args.model_path} if args.model_path else {}
        env |= {"WAN_T2I_DEVICE": args.device} if args.device else {}
        env |= {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}

        startups = []
        for _ in range(args.startups - 1):
            process, _, seconds = start_app(env)
            startups.append(seconds)
            stop(process)
        process, url, seconds = start_app(env)  # the last one stays up for the latency runs
        startups.append(seconds)
        try:
            pipe = WanT2IPipeline.from_pretrained(args.model_path, teacher_path, device=args.device)
            steps = args.steps or pipe.defaults.steps
            client = Client(url, verbose=False)
            settings = {"steps": steps, "seed": 7, "randomize_seed": False}
            rows = []
            for api_name, samplers in (("/generate", ["flow_unipc"]), ("/compare", ["legacy_ddim", "flow_unipc"])):
                bare, _ = median_seconds(
                    lambda s=samplers: pipe.generate(PROMPT, samplers=s, steps=steps, seed=7), args.runs
                )
                served, _ = median_seconds(lambda a=api_name: client.predict(PROMPT, **settings, api_name=a), args.runs)
                rows.append((api_name, bare, served))
        finally:
            stop(process)

    d = pipe.defaults
    print(f"model: {d.name} on {pipe.device}, {d.width}x{d.height}, {steps} steps; {args.runs} runs per median")
    print(f"start-up (python app.py -> first page): median {statistics.median(startups):.2f} s "
          f"over {len(startups)} runs ({', '.join(f'{s:.2f}' for s in startups)})")  # fmt: skip
    print(f"{'endpoint':<10} {'pipe.generate':>14} {'via gradio_client':>18} {'overhead':>10} {'ratio':>7}")
    for api_name, bare, served in rows:
        print(f"{api_name:<10} {bare:>12.3f} s {served:>16.3f} s {overhead_cells(bare, served)}")
    if any(served < bare for _, bare, served in rows):
        print("host busy: a request through the app took less time than the same bare call, which only other work on")
        print("the host slowing the bare calls explains; the overhead is unknown there. Rerun on an idle machine.")
    return 0


def overhead_cells(bare: float, served: float) -> str:
    """The overhead and ratio columns; "host busy" where the app seems faster than the pipeline alone."""
    if served < bare:
        return f"{'host busy':>10} {'-':>7}"
    return f"{served - bare:>8.3f} s {served / bare:>6.2f}x"


if __name__ == "__main__":
    sys.exit(main())
