"""The demo in a real browser: headless Chromium, driven by Playwright, on the tiny random Wan model.

The browser is the one in PLAYWRIGHT_CHROMIUM_EXECUTABLE, else the first Chromium or Chrome on PATH, else Playwright's
own download (`python -m playwright install chromium`); docs/install.md says how to get one.

Also a helper for the README screenshot, on the embedded demo model:

    python tests/test_browser.py --screenshot assets/screenshot.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
NO_CHROMIUM = (
    "no Chromium found for the browser test: set PLAYWRIGHT_CHROMIUM_EXECUTABLE to a Chromium or Chrome binary, or put "
    "one on PATH (Debian/Ubuntu: apt-get install chromium; macOS: brew install --cask chromium), or download "
    "Playwright's own with `python -m playwright install chromium`"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    """$PLAYWRIGHT_CHROMIUM_EXECUTABLE, else the first Chromium or Chrome on PATH; None when neither is there."""
    chosen = os.environ.get("PLAYWRIGHT_CHROMIUM_EXECUTABLE")
    if chosen:
        if not Path(chosen).is_file():
            raise FileNotFoundError(f"PLAYWRIGHT_CHROMIUM_EXECUTABLE={chosen} does not exist")
        return chosen
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 1400) -> Iterator[Page]:
    """A page of headless Chromium at `url`; FileNotFoundError saying how to get a Chromium when there is none."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        executable = find_chromium()
        if executable is None and not Path(p.chromium.executable_path).is_file():  # nor Playwright's own download
            raise FileNotFoundError(NO_CHROMIUM)
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def compare(page: Page, prompt: str, screenshot: Path, *, seed: int | None = None) -> dict:
    """Type `prompt`, turn the comparison on, click Generate, wait for both images and the plot; save a screenshot.

    With `seed`, set it in the Advanced accordion (randomize off) first, for a reproducible screenshot.

    Returns what the page showed: the image sources, the labels and the summary text.
    """
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#compare input[type=checkbox]").check()
    if seed is not None:
        page.get_by_text("Advanced").click()
        page.locator("#randomize-seed input[type=checkbox]").uncheck()
        page.locator("#seed input").fill(str(seed))
        page.get_by_text("Advanced").click()  # closed again, so the images are in view
    page.locator("#generate").click()
    page.locator("#image-a img").wait_for(state="visible")
    page.locator("#image-b img").wait_for(state="visible")
    page.locator("#slider img").first.wait_for(state="visible")
    page.locator("#latent-plot canvas, #latent-plot svg").first.wait_for(state="visible")
    page.locator("#summary").get_by_text("Seed").wait_for()
    page.wait_for_timeout(500)  # let the plot finish drawing
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    return {
        "sources": [page.locator(f"#{i} img").get_attribute("src") for i in ("image-a", "image-b")],
        "labels": page.locator("#image-a, #image-b").all_inner_texts(),
        "summary": page.locator("#summary").inner_text(),
    }


@pytest.fixture
def url(tiny_pipe) -> Iterator[str]:
    import app

    demo = app.create_demo(tiny_pipe)
    _, local_url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    yield local_url
    demo.close()


@pytest.mark.slow
@pytest.mark.browser
def test_compare_side_by_side_in_a_real_browser(url: str, tmp_path: Path) -> None:
    # Without a Chromium this fails (NO_CHROMIUM says how to get one), never skips: a skipped UI test tests nothing.
    with open_page(url) as page:
        shown = compare(page, "A serene lake at sunset", tmp_path / "compare.png")
        assert all(source and source.endswith(".png") for source in shown["sources"]), shown["sources"]
        assert shown["sources"][0] != shown["sources"][1]
        labels = "\n".join(shown["labels"])
        assert "legacy_ddim" in labels and "flow_unipc" in labels
        assert "the decoded image will be garbage" in shown["summary"]  # the legacy loop's verdict, under the images
        assert (tmp_path / "compare.png").stat().st_size > 10_000

        # Comparison off, and Enter in the prompt generates: only sampler B's image, one verdict.
        page.locator("#compare input[type=checkbox]").uncheck()
        page.locator("#image-a").wait_for(state="hidden")
        page.locator("#prompt textarea").fill("Snowy mountains at dawn")
        page.locator("#prompt textarea").press("Enter")
        page.wait_for_function("() => !document.querySelector('#summary').innerText.includes('legacy_ddim')")
        assert "flow_unipc" in page.locator("#summary").inner_text()
        assert page.locator("#image-b img").get_attribute("src") != shown["sources"][1]
        assert not page.locator("#slider").is_visible()
    print(f"screenshot: {tmp_path / 'compare.png'}")


@pytest.mark.slow
@pytest.mark.browser
def test_page_opens_on_the_comparison_when_asked(tiny_pipe) -> None:
    """render_on_load (on for the embedded demo model): the first visit shows both images without a click."""
    import app

    demo = app.create_demo(tiny_pipe, render_on_load=True)
    _, local_url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        with open_page(local_url) as page:
            page.locator("#image-a img").wait_for(state="visible")
            page.locator("#image-b img").wait_for(state="visible")
            page.locator("#summary").get_by_text("Seed").wait_for()
            assert page.locator("#prompt textarea").input_value() == app.EXAMPLES[0]
            assert "legacy_ddim" in page.locator("#summary").inner_text()
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> int:
    """`--screenshot PATH`: the comparison on the embedded demo model (or --teacher_path), as a PNG for the README."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write, e.g. assets/screenshot.png")
    parser.add_argument("--prompt", default="A serene lake at sunset")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--teacher_path", help="default: the embedded demo model")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import app
    from wan_t2i.pipeline import WanT2IPipeline

    demo = app.create_demo(WanT2IPipeline.from_pretrained(teacher_path=args.teacher_path))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with open_page(url) as page:
            shown = compare(page, args.prompt, args.screenshot, seed=args.seed)
    finally:
        demo.close()
    print(f"wrote {args.screenshot}\n{shown['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
