"""How soon a visitor sees the story: the app's start-up, then the time from opening the page to both images and the
latent-health plot on screen, in a real browser (headless Chromium through Playwright).

    python -m benchmarks.app_first_paint                 # the embedded demo model (renders on load)
    python -m benchmarks.app_first_paint --visitors 4    # also four visitors opening the page at once

Start-up: from launching `python app.py` to the first page served (the opening comparison and the lessons are
rendered before it: that is where their time goes). First paint: `page.goto` until `#image-a img`, `#image-b img` and
`#latent-plot img` are visible, each visit a fresh browser context (no cache); medians of --visits. With --visitors N,
N pages open at once and each one's time is printed: before the opening was rendered once at start-up, every view
rendered it in the shared queue, and four visitors waited 14, 18, 22 and 25 s.

The floor, measured in the same run, each of its visits right after one of the app's: a bare Gradio page of the same
frame (a title, two tabs, a prompt, a button and three images with values), served by this process: what Gradio's own
front end costs a first visit on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.app_latency import start_app, stop
from tests.browsers import find_chromium  # run from the repository root: tests/ is importable

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SHOWN = ("#image-a img", "#image-b img", "#latent-plot img")


def first_paint(url: str, width: int = 1280, height: int = 900) -> float:
    """Seconds from navigating to `url` until both images and the plot are visible, in a fresh browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        executable = find_chromium(p.chromium.executable_path)
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            start = time.perf_counter()
            page.goto(url)
            for selector in SHOWN:
                page.locator(selector).first.wait_for(state="visible", timeout=120_000)
            return time.perf_counter() - start
        finally:
            browser.close()


def floor_page() -> str:
    """Launch the bare page the app's first paint is compared with; returns its URL."""
    import gradio as gr
    from PIL import Image

    with gr.Blocks() as page:
        gr.Markdown("# A title", elem_id="hero")
        with gr.Tabs():
            with gr.Tab("One"):
                gr.Textbox(label="Prompt")
                gr.Button("Generate")
                for elem_id, size in (("image-a", (256, 256)), ("image-b", (256, 256)), ("latent-plot", (560, 360))):
                    gr.Image(Image.new("RGB", size, "gray"), elem_id=elem_id)
            with gr.Tab("Two"):
                gr.Markdown("another tab")
    _, url, _ = page.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.app_first_paint", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--visits", type=int, default=5, help="page visits, one after another (default 5)")
    parser.add_argument("--visitors", type=int, default=0, help="then this many visitors at once (default none)")
    args = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_T2I_") and k != "SPACE_ID"}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    floor_url = floor_page()
    process, url, startup = start_app(env)  # the embedded demo model: it renders on load
    try:
        first_paint(url), first_paint(floor_url)  # first visits warm the browser's own start-up, which is not the app's
        visits, floors = [], []
        for _ in range(args.visits):  # alternated, so that a busy spell of a shared machine weighs on both alike
            visits.append(first_paint(url))
            floors.append(first_paint(floor_url))
        together = []
        if args.visitors:
            with ThreadPoolExecutor(args.visitors) as pool:
                together = sorted(pool.map(lambda _: first_paint(url), range(args.visitors)))
    finally:
        stop(process)
    floor = statistics.median(floors)
    print(f"start-up (python app.py -> first page, opening and lessons rendered): {startup:.2f} s")
    print(f"first paint (page open -> both images and the plot visible): median {statistics.median(visits):.2f} s "
          f"over {len(visits)} visits ({', '.join(f'{v:.2f}' for v in visits)})")  # fmt: skip
    ratio = statistics.median(visits) / floor
    print(f"floor, a bare Gradio page of the same frame, visited in turn with the app: median {floor:.2f} s "
          f"({', '.join(f'{v:.2f}' for v in floors)}); the app: {ratio:.2f}x of it")  # fmt: skip
    if together:
        print(f"{len(together)} visitors at once: {', '.join(f'{v:.2f}' for v in together)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
