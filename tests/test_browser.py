"""The demo in a real browser: headless Chromium, driven by Playwright, on the tiny random Wan model.

The browser is the one in PLAYWRIGHT_CHROMIUM_EXECUTABLE, else the first Chromium or Chrome on PATH, else Playwright's
own download (`python -m playwright install chromium`); docs/install.md says how to get one.

Also a helper for the README screenshot, on the embedded demo model:

    python tests/test_browser.py --screenshot assets/screenshot.png --phone_screenshot assets/screenshot-phone.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if __name__ == "__main__":  # run as a script: this checkout's wan_t2i, before conftest imports whatever is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browsers import find_chromium  # noqa: E402
from conftest import free_port  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 1400) -> Iterator[Page]:
    """A page of headless Chromium at `url`; FileNotFoundError saying how to get a Chromium when there is none."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        executable = find_chromium(p.chromium.executable_path)  # None: Playwright's own download
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def compare(page: Page, prompt: str, screenshot: Path | None = None, *, seed: int | None = None) -> dict:
    """Type `prompt`, turn the comparison on, click Generate, wait for both images and the plot; save a screenshot.

    With `seed`, set it in the Advanced accordion (randomize off) first, for a reproducible screenshot.

    Returns what the page showed: the image sources, the labels, the badges and the summary text.
    """
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#compare input[type=checkbox]").check()
    if seed is not None:
        set_seed(page, seed)
    before = page.locator("#summary").inner_text()
    page.locator("#generate").click()
    wait_for_new_summary(page, before)
    page.locator("#image-a img").wait_for(state="visible")
    page.locator("#image-b img").wait_for(state="visible")
    page.locator("#latent-plot img").wait_for(state="visible")
    page.wait_for_timeout(300)  # let the page settle before the screenshot
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return shown(page)


def set_seed(page: Page, seed: int) -> None:
    """Type `seed` into the Advanced accordion's Seed field, closing the accordion again.

    On a slow first visit, the field's value has been seen to change back to the model's default after the typing
    (the app had answered it: Randomize unticked), so Generate used seed 0. Each attempt ticks Randomize, types the
    seed, waits for the app's answer (Randomize unticked: the page took the typed value), lets the page settle, and
    checks that the field still holds the seed; otherwise it types again."""
    from playwright.sync_api import expect

    page.get_by_text("Advanced").click()
    randomize = page.locator("#randomize-seed input[type=checkbox]")
    box = page.locator("#seed input")
    box.wait_for(state="visible")
    for attempt in range(5):
        randomize.check()  # ticked here, so that the app unticking it proves the page took the typed seed
        box.fill(str(seed))
        box.press("Tab")
        try:
            expect(randomize).not_to_be_checked(timeout=5_000)
            page.wait_for_timeout(500)  # a late update of the field would land here
            expect(box).to_have_value(str(seed), timeout=1_000)
            break
        except AssertionError:
            if attempt == 4:
                raise
    page.get_by_text("Advanced").click()  # closed again, so the images are in view


def wait_for_new_summary(page: Page, before: str) -> None:
    """Until the summary differs from `before` (a run's outputs arrived) and Generate is idle again."""
    page.wait_for_function(
        "(before) => { const s = document.querySelector('#summary').innerText;"
        " return s.includes('Seed') && s !== before; }",
        arg=before,
    )
    page.locator("#generate:not([disabled])").wait_for()


def shown(page: Page) -> dict:
    """What the page shows now: image sources and alt texts (None: no image), labels, badges, summary."""

    def attribute(selector: str, name: str) -> str | None:
        found = page.locator(selector)
        return found.first.get_attribute(name) if found.count() else None

    return {
        "sources": [attribute(f"#{i} img", "src") for i in ("image-a", "image-b")],
        "alts": [attribute(f"#{i} img", "alt") for i in ("image-a", "image-b")],
        "labels": page.locator("#image-a, #image-b").all_inner_texts(),
        "badges": [
            page.locator(f"#{i}").inner_text() if page.locator(f"#{i}").count() else "" for i in ("badge-a", "badge-b")
        ],
        "summary": page.locator("#summary").inner_text(),
    }


def launch(pipe, **kwargs) -> tuple:
    """The demo on `pipe`, launched on a free port as the app launches it (its guards and CSS): (demo, url)."""
    from wan_t2i.app import create_demo

    demo = create_demo(pipe, **kwargs)
    _, local_url, _ = demo.launch(
        **demo.launch_args, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    return demo, local_url


@pytest.fixture(scope="module")
def url(tiny_pipe) -> Iterator[str]:
    demo, local_url = launch(tiny_pipe)
    yield local_url
    demo.close()


@pytest.fixture(scope="module")
def opening_url(tiny_pipe) -> Iterator[str]:
    demo, local_url = launch(tiny_pipe, render_on_load=True)
    yield local_url
    demo.close()


@pytest.mark.slow
@pytest.mark.browser
def test_compare_side_by_side_in_a_real_browser(url: str, tmp_path: Path) -> None:
    # Without a Chromium this fails (NO_CHROMIUM says how to get one), never skips: a skipped UI test tests nothing.
    with open_page(url) as page:
        first = compare(page, "A serene lake at sunset", tmp_path / "compare.png")
        assert all(source and source.endswith(".png") for source in first["sources"]), first["sources"]
        assert first["sources"][0] != first["sources"][1]
        labels = "\n".join(first["labels"])
        assert "legacy_ddim" in labels and "flow_unipc" in labels
        assert "the decoded image will be garbage" in first["summary"]  # the legacy loop's verdict, under the images
        # Each image says whether it can be decoded (#4), and carries alt text (#13).
        assert "too wide: the VAE cannot decode this" in first["badges"][0]
        assert first["alts"][0].startswith("legacy_ddim render of 'A serene lake at sunset', seed ")
        assert first["alts"][1].startswith("flow_unipc render of")
        assert (tmp_path / "compare.png").stat().st_size > 10_000
        # The pair is shown once (#8): side by side, or as a slider with labelled ends, never both.
        assert not page.locator("#slider").is_visible()
        page.locator("#view input[type=checkbox]").check()
        page.locator("#slider img").first.wait_for(state="visible")
        assert not page.locator("#image-b").is_visible() and page.locator("#slider img").count() == 2
        assert (
            "A: legacy_ddim" in page.locator("#slider").inner_text()
            and "B: flow_unipc" in page.locator("#slider").inner_text()
        )
        page.locator("#view input[type=checkbox]").uncheck()
        page.locator("#image-b img").wait_for(state="visible")
        assert not page.locator("#slider").is_visible()
        with page.expect_download() as download:  # the pair downloads as one labelled PNG named for what it shows
            page.locator("#download-pair").click()
        name = download.value.suggested_filename
        assert name.startswith("a-serene-lake-at-sunset_legacy_ddim-vs-flow_unipc_seed") and name.endswith(".png")
        from PIL import Image

        with Image.open(download.value.path()) as sheet:
            assert sheet.width > 2 * 48 and "pair" in sheet.text["parameters"]
        with page.expect_download() as download:  # ... and each image under its prompt, sampler and seed
            page.locator("#image-b button[aria-label='Download'], #image-b a[download]").first.click()
        name = download.value.suggested_filename
        assert name.startswith("a-serene-lake-at-sunset_flow_unipc_seed") and name.endswith(".png")
        with Image.open(download.value.path()) as image:
            assert '"sampler": "flow_unipc"' in image.text["parameters"]

        # Comparison off, and Enter in the prompt generates: only sampler B's image, one verdict.
        page.locator("#compare input[type=checkbox]").uncheck()
        page.locator("#image-a").wait_for(state="hidden")
        page.locator("#prompt textarea").fill("Snowy mountains at dawn")
        page.locator("#prompt textarea").press("Enter")
        wait_for_new_summary(page, first["summary"])
        alone = shown(page)
        assert "flow_unipc" in alone["summary"] and "legacy_ddim" not in alone["summary"]
        assert alone["sources"][1] != first["sources"][1]
        assert not page.locator("#download-pair").is_visible()  # no pair to download

        # Comparison on again: no image A from the older run beside the new image B (#3).
        page.locator("#compare input[type=checkbox]").check()
        page.locator("#badge-a").wait_for(state="attached")
        assert page.locator("#image-a img").count() == 0, "image A of an older run is shown beside the new B"
        assert page.locator("#badge-a").inner_text().strip() == ""

        # Another sampler A: the labels and the summary name it, not the old one (#2).
        page.locator("#sampler-a input").click()
        page.get_by_role("option", name="flow_euler").click()
        euler = compare(page, "A serene lake at sunset")
        assert "flow_euler" in euler["labels"][0] and "legacy_ddim" not in euler["summary"]
        assert "in range" in euler["badges"][0]
    print(f"screenshot: {tmp_path / 'compare.png'}")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_page_opens_at_the_top_on_the_comparison(opening_url: str, width: int, height: int) -> None:
    """render_on_load: the first visit shows both images without a click, results right under the prompt, the page
    at its top (#5: no autofocus scrolling a phone past the title), and a plot a phone can read (#1)."""
    from wan_t2i.app_compare import OPENING

    with open_page(opening_url, width=width, height=height) as page:
        page.locator("#image-a img").wait_for(state="visible")
        page.locator("#image-b img").wait_for(state="visible")
        page.locator("#summary").get_by_text("Seed").wait_for()
        page.locator("#latent-plot img").wait_for(state="visible")
        page.wait_for_timeout(500)
        assert page.evaluate("window.scrollY") == 0
        assert page.locator("#prompt textarea").input_value() == OPENING.values["prompt"]
        assert "legacy_ddim" in page.locator("#summary").inner_text()
        top = {i: page.locator(f"#{i}").bounding_box()["y"] for i in ("hero", "prompt", "image-b", "latent-plot")}
        assert top["hero"] < top["prompt"] < top["image-b"] < top["latent-plot"], top
        assert page.locator("#why").bounding_box()["y"] > top["latent-plot"]  # the explanation waits below
        plot = page.locator("#latent-plot img").bounding_box()
        assert plot["width"] >= min(300, width - 60) and plot["height"] >= 160, plot
        if width < 500:  # on a phone the first screen holds the title, the prompt and the start of the images
            assert top["image-b"] > 0 and top["prompt"] < height


@pytest.mark.slow
@pytest.mark.browser
def test_an_input_error_keeps_the_results_and_the_seed_field(url: str) -> None:
    """#6: a bad prompt is marked at its field, the previous results stay, and the Seed input stays an input."""
    with open_page(url) as page:
        before = compare(page, "A serene lake at sunset", seed=5)
        assert "seed used: 5" in page.locator("#seed-used").inner_text()
        page.locator("#prompt textarea").fill("")
        page.locator("#generate").click()
        page.get_by_text("the prompt is empty").first.wait_for()
        page.locator("#generate:not([disabled])").wait_for()
        after = shown(page)
        assert after["sources"] == before["sources"] and after["summary"] == before["summary"]
        assert "Error" not in page.locator("#image-b").inner_text()
        # The seed field is still a field: typing a seed into it unticks "Randomize seed".
        page.get_by_text("Advanced").click()
        page.locator("#shift [data-testid='block-info']").wait_for()
        colors = page.locator("[data-testid='block-info']").evaluate_all(
            "(all) => all.filter(e => e.offsetParent).map(e => getComputedStyle(e).color)"
        )
        assert colors and set(colors) == {"rgb(75, 85, 99)"}, colors  # #10: help text at 7.6:1 on white
        page.locator("#randomize-seed input[type=checkbox]").check()
        page.locator("#seed input").fill("")
        page.locator("#seed input").press_sequentially("42")
        page.wait_for_timeout(300)
        assert page.locator("#seed input").input_value() == "42"
        assert not page.locator("#randomize-seed input[type=checkbox]").is_checked()
        # ♻ puts the seed of the shown images back.
        page.locator("#reuse-seed").click()
        page.wait_for_function("() => document.querySelector('#seed input').value === '5'")
        # A seed out of range is marked at the Seed field; the field stays a field and the results stay.
        page.locator("#prompt textarea").fill("A serene lake at sunset")
        page.locator("#seed input").fill("-3")
        page.locator("#seed input").press("Tab")
        page.locator("#generate").click()
        page.get_by_text("seed must be an integer from 0").first.wait_for()
        page.locator("#generate:not([disabled])").wait_for()
        assert shown(page)["sources"] == before["sources"] and page.locator("#seed input").is_editable()
        page.locator("#seed input").fill("5")
        # #10: shift is greyed out when only legacy_ddim runs, which ignores it.
        assert page.locator("#shift input[type=number]").is_enabled()
        page.locator("#compare input[type=checkbox]").uncheck()
        page.locator("#sampler-b input").click()
        page.get_by_role("option", name="legacy_ddim").click()
        page.locator("#shift input[type=number]:disabled").wait_for()


@pytest.mark.slow
@pytest.mark.browser
def test_one_progress_display_a_busy_button_and_stop(demo_url: str) -> None:
    """#7: while a long render runs there is one progress display, Generate is disabled, and Stop ends it. On the
    demo model: the tiny model's longest render (the slider's 100 steps) can end before Stop is clicked."""
    with open_page(demo_url) as page:
        page.get_by_text("Advanced").click()
        page.locator("#steps input[type=number]").fill("100")
        page.locator("#steps input[type=number]").press("Tab")
        page.locator("#prompt textarea").fill("A serene lake at sunset")
        page.locator("#generate").click()
        page.locator("#stop").wait_for(state="visible")
        assert page.locator("#generate").is_disabled()
        page.locator("#status .eta-bar, #status .progress-text, #status .meta-text").first.wait_for()
        bars = page.wait_for_function(  # the ids of the blocks drawing a progress display, once one is drawn
            "() => { const ids = [...document.querySelectorAll('.progress-text, .meta-text-center, .meta-text')]"
            ".filter(e => e.offsetParent !== null).map(e => e.closest('[id]')?.id); return ids.length && ids; }"
        ).json_value()
        assert set(bars) == {"status"}, bars
        page.locator("#stop").click()
        page.locator("#stop").wait_for(state="hidden")
        page.locator("#generate:not([disabled])").wait_for()
        page.wait_for_timeout(500)
        assert "Seed" not in page.locator("#summary").inner_text()  # stopped before it finished: no final result
        assert (
            page.locator("#image-b img").count() == 0
            or "predicted clean image" in page.locator("#image-b").inner_text()
        )


@pytest.mark.slow
@pytest.mark.browser
def test_ignored_words_and_a_lesson_that_runs_on_click(url: str) -> None:
    """#9: words outside a fixed vocabulary are named; #11: the lessons sit under the prompt, each sets its tab and
    runs: a comparison, and a sweep in the Sweep tab."""
    with open_page(url) as page:
        compare(page, "a cyberpunk lake with neon cars")
        assert "cyberpunk, neon, cars" in page.locator("#ignored").inner_text()
        lesson = page.get_by_role("button", name="Euler vs UniPC: both fine")
        assert lesson.bounding_box()["y"] < page.locator("#image-b").bounding_box()["y"]
        assert page.locator(".lesson").count() == 4
        before = page.locator("#summary").inner_text()
        lesson.click()
        wait_for_new_summary(page, before)
        assert page.locator("#prompt textarea").input_value() == "Snowy mountains at dawn"
        assert "flow_euler" in page.locator("#image-a").inner_text()
        assert page.locator("#ignored").inner_text().strip() == ""
        page.get_by_role("button", name="A shift sweep: 1, 3, 5, 8").click()
        page.locator("#sweep-grid img").wait_for(state="visible")  # the Sweep tab, filled in and run
        assert page.locator("#sweep-values-1 textarea, #sweep-values-1 input").first.input_value() == "1,3,5,8"
        words = [line.strip() for line in page.locator("#sweep-table").inner_text().splitlines()]
        assert words.count("flow_euler") == 4 and words.count("flow_unipc") == 4, words


@pytest.mark.slow
@pytest.mark.browser
def test_the_vocabulary_as_chips_that_add_to_the_prompt(tiny_pipe) -> None:
    """#9: a fixed-vocabulary model's phrases as chips grouped by what they choose; a click adds one to the prompt."""
    import copy
    from dataclasses import replace

    pipe = copy.copy(tiny_pipe)
    pipe.defaults = replace(
        tiny_pipe.defaults, vocabulary={"time of day": ["at dawn", "at noon"], "sky": ["a clear sky"]}
    )
    demo, local_url = launch(pipe)
    try:
        with open_page(local_url) as page:
            page.get_by_text("Words this model understands").click()
            slots = [text.strip() for text in page.locator(".chip-slot").all_inner_texts()]
            assert list(dict.fromkeys(slots)) == ["time of day", "sky"]  # in order, each once (Gradio nests the class)
            page.locator("#prompt textarea").fill("A lake")
            page.get_by_role("button", name="at dawn").click()
            page.get_by_role("button", name="a clear sky").click()
            page.wait_for_function(
                "() => document.querySelector('#prompt textarea').value === 'A lake at dawn a clear sky'"
            )
    finally:
        demo.close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_a_sweep_renders_its_grid_and_table(url: str, width: int, height: int) -> None:
    with open_page(url, width=width, height=height) as page:
        page.get_by_role("tab", name="Sweep").click()
        page.locator("#sweep-values-1 textarea, #sweep-values-1 input").first.fill("1,5")
        page.locator("#sweep-run").click()
        page.locator("#sweep-grid img").wait_for(state="visible")
        page.wait_for_function("() => document.querySelector('#sweep-table').innerText.includes('garbage')")
        words = [line.strip() for line in page.locator("#sweep-table").inner_text().splitlines()]
        assert words.count("garbage") == 2 and words.count("ok") == 2, words  # one verdict per cell
        assert words.count("legacy_ddim") == 2 and words.count("flow_unipc") == 2
        box = page.locator("#sweep-grid img").bounding_box()
        assert box["width"] > 100 and box["x"] + box["width"] <= width  # fits the page, on a phone too


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_the_diagnose_tab_renders_its_report(url: str, width: int, height: int) -> None:
    with open_page(url, width=width, height=height) as page:
        page.get_by_role("tab", name="Diagnose").click()
        page.locator("#diagnose-run").click()
        page.locator("#diagnose-figure img").wait_for(state="visible")
        report = page.locator("#diagnose-report").inner_text()
        assert "Checkpoint doctor" in report and "The VAE at T = 1" in report
        box = page.locator("#diagnose-figure img").bounding_box()
        assert box["x"] + box["width"] <= width  # fits the page, on a phone too


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    """The app on the embedded demo model: its 100-step pair takes seconds on a CPU, long enough to watch live (the
    tiny model's takes a fraction of a second, and a fast machine shows its previews and plots at once)."""
    from wan_t2i.pipeline import WanT2IPipeline

    demo, local_url = launch(WanT2IPipeline.from_pretrained(device="cpu"))
    yield local_url
    demo.close()


@pytest.mark.slow
@pytest.mark.browser
def test_live_previews_arrive_before_the_final_image(demo_url: str) -> None:
    """Live steps: both sides show the predicted clean image during the render, and the plot grows, then the final
    images and plot."""
    with open_page(demo_url) as page:
        page.evaluate(
            "() => { window.labels = []; window.plots = []; new MutationObserver(() => {"
            " window.labels.push(document.querySelector('#image-b').innerText);"
            " const plot = document.querySelector('#latent-plot img'); if (plot) window.plots.push(plot.src); })"
            ".observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true}); }"
        )
        page.get_by_text("Advanced").click()
        page.locator("#steps input[type=number]").fill("100")  # the slider's most
        page.locator("#steps input[type=number]").press("Tab")
        compare(page, "A serene lake at sunset")
        labels = page.evaluate("() => window.labels")
        live = [i for i, label in enumerate(labels) if "step" in label and "predicted clean image" in label]
        final = [i for i, label in enumerate(labels) if "Wan's flow UniPC" in label]
        assert live and final and live[0] < final[-1], labels[-5:]
        assert "predicted clean image" not in page.locator("#image-b").inner_text()  # the final image's label
        plots = list(dict.fromkeys(page.evaluate("() => window.plots")))
        assert len(plots) >= 2, "the plot appeared only at the end"  # one or more live plots, then the final one


def main(argv: list[str] | None = None) -> int:
    """`--screenshot PATH`: the comparison on the embedded demo model (or --teacher_path), as a PNG for the README."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write, e.g. assets/screenshot.png")
    parser.add_argument(
        "--phone_screenshot", type=Path, help="also at a phone's width (390 px), e.g. assets/screenshot-phone.png"
    )
    parser.add_argument("--prompt", default="A serene lake at sunset")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--teacher_path", help="default: the embedded demo model")
    args = parser.parse_args(argv)

    from wan_t2i.pipeline import WanT2IPipeline

    demo, url = launch(WanT2IPipeline.from_pretrained(teacher_path=args.teacher_path))
    try:
        with open_page(url) as page:
            result = compare(page, args.prompt, args.screenshot, seed=args.seed)
        if args.phone_screenshot is not None:
            with open_page(url, width=390, height=844) as page:
                compare(page, args.prompt, args.phone_screenshot, seed=args.seed)
    finally:
        demo.close()
    print(f"wrote {args.screenshot}\n{result['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
