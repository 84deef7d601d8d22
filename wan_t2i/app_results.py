"""What the Compare tab shows of a render: the image files, the pair's labelled sheet, badges, plot, summary, seed.

`Results.show` turns a finished generation into the tab's outputs, `Results.live` a running render's latest preview.
Images are written as PNGs named for what they show (prompt, sampler, seed), each carrying its request, so that a
download is both meaningful and reproducible; pinned results (the opening comparison, the lessons) go to a folder of
their own that the cache sweeper never ages out.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_t2i.choices import SAMPLER_NOTES

if TYPE_CHECKING:
    from PIL import Image

    from wan_t2i.jobs import Live
    from wan_t2i.pipeline import Generation

LIVE_PLOT_SECONDS = 1.0  # a render's live plot is redrawn at most this often (a figure costs ~0.1-0.3 s of CPU)
# The outputs in the order `show` and `live` give them; the tab lays out a component for each.
OUTPUTS = (
    "image_a", "image_b", "slider", "badge_a", "badge_b", "plot", "summary", "seed_used", "last_seed", "ignored",
    "alt_text", "download",
)  # fmt: skip


def slug(prompt: str) -> str:
    """`"A serene lake at sunset"` -> `"a-serene-lake-at-sunset"`, at most 48 characters."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48].rstrip("-") or "image"


def figure_image(figure: Any) -> Image.Image:
    """A matplotlib figure as a PNG image: the page shows the plot as an image (Gradio's Plot component costs a
    first visit about 0.2 s of script before anything is drawn, measured in headless Chromium on 2 cores)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def sampler_choices() -> list[tuple[str, str]]:
    """Each sampler with its one-line note, for a dropdown: ("flow_dpmpp · Wan's second solver (dpm++)", ...)."""
    return [(f"{name} · {note}", name) for name, note in SAMPLER_NOTES.items()]


def pair_file_name(prompt: str, samplers: Sequence[str], seed: int) -> str:
    """A download's name that says what it is: `a-serene-lake-at-sunset_legacy_ddim-vs-flow_unipc_seed7.png`."""
    return f"{slug(prompt)}_{'-vs-'.join(samplers)}_seed{seed}.png"


class Results:
    """Shapes generations into the Compare tab's outputs (see `OUTPUTS`)."""

    def __init__(
        self,
        has_teacher: bool,
        cache_folder: Callable[[], str],
        is_pinned: Callable[[Any], bool],
        ignored: Callable[[str], str],
    ):
        """Args: `cache_folder()` Gradio's cache folder (swept by age); `is_pinned(result)` whether a result is kept
        for the server's life (its files then go to a folder of their own); `ignored(prompt)` the ignored-words line."""
        self.has_teacher, self.cache_folder, self.is_pinned, self.ignored = (
            has_teacher,
            cache_folder,
            is_pinned,
            ignored,
        )
        self.pinned_folder = Path(tempfile.mkdtemp(prefix="wan-t2i-pinned-"))
        self._last_plot = 0.0

    def names(self, generation: Generation) -> list[str]:
        """Each branch's sampler, with its model where a teacher is loaded."""
        model = (lambda r: f" · {r.model}") if self.has_teacher else (lambda r: "")
        return [f"{r.sampler}{model(r)}" for r in generation.results.values()]

    def show(self, generation: Generation, values: dict[str, Any]) -> tuple:
        """The tab's outputs, all from this one run: A (cleared when B renders alone), B, the slider, their badges,
        the plot, the summary, the seed, the ignored words, alt texts and the pair's download."""
        import gradio as gr

        from wan_t2i import images
        from wan_t2i.report import badge, latent_health_figure, summary

        results = list(generation.results.values())
        pair = len(results) == 2
        names = self.names(generation)
        labels = [f"{n}: {SAMPLER_NOTES[r.sampler]}" for n, r in zip(names, results, strict=True)]
        prompt = generation.request.prompt if generation.request else str(values.get("prompt") or "")
        folder = self.folder_for(generation)
        files = [folder / f"{slug(prompt)}_{r.label.replace('/', '-')}_seed{generation.seed}.png" for r in results]
        paths = [str(images.save_png(r.image, f, r.parameters)) for r, f in zip(results, files, strict=True)]
        alts = [f"{r.sampler} render of {prompt!r}, seed {generation.seed}" for r in results]
        a = (gr.update(value=paths[0], label=labels[0]), badge(results[0].diagnostics), alts[0]) if pair else (
            gr.update(value=None, label="A"), "", ""
        )  # fmt: skip
        slider = gr.update(value=None, label="A | B")
        download = gr.update(visible=False, value=None)
        if pair:  # the pair as one labelled PNG (the CLI's side by side), named for what it shows
            slider = gr.update(value=tuple(paths), label=f"◀ A: {names[0]}  |  B: {names[1]} ▶")
            sheet = images.side_by_side({label: r.image for label, r in zip(labels, results, strict=True)})
            name = pair_file_name(prompt, [r.sampler for r in results], generation.seed)
            path = images.save_png(sheet, folder / name, {"pair": [r.parameters for r in results]})
            download = gr.update(visible=True, value=str(path))
        return (
            a[0],
            gr.update(value=paths[-1], label=labels[-1]),
            slider,
            a[1],
            badge(results[-1].diagnostics),
            figure_image(latent_health_figure(generation, names)),
            summary(generation, labels),
            f"seed used: **{generation.seed}**",
            generation.seed,
            self.ignored(prompt),
            [a[2], alts[-1]],
            download,
        )

    def live(self, live: Live) -> tuple:
        """While a render runs: each side's predicted clean image at this step and, at most every
        `LIVE_PLOT_SECONDS`, the plot as far as it has come; the rest unchanged."""
        import gradio as gr

        from wan_t2i.report import health_figure, std_ratios

        shown = [gr.update(value=image, label=f"{label} · step {live.step} of {live.total}: its predicted clean image")
                 for label, image in live.images.items()]  # fmt: skip
        sides = shown if len(shown) == 2 else [gr.skip(), *shown]
        plot = gr.skip()
        now = time.monotonic()
        if live.latent_std and (now - self._last_plot >= LIVE_PLOT_SECONDS or live.step >= live.total):
            series = [(label, std_ratios(stds)) for label, stds in live.latent_std.items()]
            plot = figure_image(health_figure(series, live.total))
            self._last_plot = now
        rest = [gr.skip()] * (len(OUTPUTS) - 3)
        rest[OUTPUTS.index("plot") - 3] = plot
        return (*sides, gr.skip(), *rest)

    def folder_for(self, result: Any) -> Path:
        """Where a result's files go: the pinned folder, or a new folder in Gradio's cache (swept by age)."""
        if self.is_pinned(result):
            return self.pinned_folder
        Path(self.cache_folder()).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="render-", dir=self.cache_folder()))
