"""The Gradio demo: one prompt, two samplers from the same seed, and what happened to their latents.

`create_demo(pipe)` puts the tabs together around a pipeline built once and one handler that runs every job;
`main()` parses the flags, builds the pipeline and launches (`wan-t2i-app`, `python app.py`, or the Space's app.py at
import). The parts, each in its own module:

| module | holds |
|---|---|
| `wan_t2i.app_compare` | the Compare tab (the story: A/B, verdicts, the plot, live steps) and the lessons |
| `wan_t2i.app_results` | what a render shows: files named for what they show, badges, plot, summary |
| `wan_t2i.app_sweep` | the Sweep tab and `/sweep` |
| `wan_t2i.app_diagnose` | the Diagnose tab and `/diagnose` |
| `wan_t2i.app_api` | `/generate`, `/compare`, and the server's guards (body, inputs, uploads, disk) |
| `wan_t2i.app_args` | the flags and their `WAN_T2I_*` variables |
| `wan_t2i.handlers` | the one handler: values -> job -> GPU -> outputs, stoppable, bounded |

Importing this module loads neither Gradio nor torch (seconds each): they load when a demo is created, so that
`wan-t2i-app --help` and a bad flag answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wan_t2i.app_args import KEEP_OUTPUTS_SECONDS, load_pipeline, parse_args

if TYPE_CHECKING:
    import gradio as gr

    from wan_t2i.pipeline import WanT2IPipeline
    from wan_t2i.request import Limits

__all__ = ["build", "create_demo", "load_pipeline", "main", "parse_args"]
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full" rather than waiting minutes
CACHE_CLEANUP_SECONDS = 600  # how often served images past their age are deleted (docs/reliability.md)
HERO = "# Why the sampler must match the model\nSame model, same seed, two samplers: one of them cannot work."
CSS = """
.verdict { padding: 6px 10px; border-radius: 6px; font-weight: 600; }
.verdict-bad { background: #fee2e2; color: #991b1b; }
.verdict-warn { background: #fef3c7; color: #92400e; }
.verdict-good { background: #dcfce7; color: #166534; }
[data-testid="block-info"], .info { color: #4b5563 !important; }
.chips, #lessons { flex-wrap: wrap !important; gap: 6px; align-items: center; }
.chip, .lesson, #lessons-title { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
"""  # the help text in #4b5563 on white: 7.6:1 contrast (Gradio's default grey is under 2:1)


def create_demo(
    pipe: WanT2IPipeline,
    *,
    render_on_load: bool = False,
    limits: Limits | None = None,
    keep_outputs_seconds: int = KEEP_OUTPUTS_SECONDS,
    warm_up: bool = False,
) -> gr.Blocks:
    """The whole UI and its API endpoints (`/generate`, `/compare`, `/sweep`, `/diagnose`) around one pipeline.

    `render_on_load` renders the opening comparison and every lesson once, here, so that a page opens on the story
    and a lesson shows at once, with no render in the shared queue; meant for small models (the embedded demo model:
    a few seconds on a CPU). Without it a lesson renders on its first click and is kept from then on. `limits` are
    the public limits of each request (default: the model's, `Limits.for_model`); `keep_outputs_seconds` how long
    served images stay on disk. `warm_up` renders a two-step pair first, through the GPU, so that what compiles
    lazily (`--compile_cache`) compiles at start-up rather than in a visitor's request. `demo.launch_args` holds
    what `launch` needs to guard the server (body and upload limits): `demo.launch(**demo.launch_args)`.
    """
    import gradio as gr  # the layout's imports, here rather than at the top: see the module's docstring

    from wan_t2i.app_api import api_endpoints, server_guards
    from wan_t2i.app_compare import LESSONS, OPENING, add_compare_tab, lesson_job, wire_lessons
    from wan_t2i.app_diagnose import add_diagnose_tab
    from wan_t2i.app_results import Results
    from wan_t2i.app_sweep import add_sweep_tab
    from wan_t2i.handlers import GPU_LOCK, Handler
    from wan_t2i.vocabulary import ignored_words

    handler = Handler(pipe, limits)
    if warm_up:
        handler.warm_up()

    def ignored(prompt: str) -> str:
        words = ignored_words(pipe.components.tokenizer, prompt) if isinstance(prompt, str) and prompt else []
        note = " (see *Words this model understands*)" if pipe.defaults.vocabulary else ""
        return f"**ignored** (not in this model's vocabulary): {', '.join(words)}{note}" if words else ""

    cleanup = (min(CACHE_CLEANUP_SECONDS, keep_outputs_seconds), keep_outputs_seconds)  # (every, age) seconds
    demo = gr.Blocks(title="wan-t2i: DDIM vs flow matching", delete_cache=cleanup)
    results = Results(pipe.components.has_teacher, lambda: demo.GRADIO_CACHE, handler.is_pinned, ignored)
    shown = []  # the lessons this model can render (a few-step student's fixed timesteps rule out a steps sweep)
    for lesson in LESSONS:  # each lesson's result is kept once rendered: here with render_on_load, else on first click
        try:
            job = lesson_job(handler, lesson)
        except ValueError:
            continue
        handler.pin(job, render_now=render_on_load)
        shown.append(lesson)
    opening = None
    if render_on_load and OPENING in shown:
        job = lesson_job(handler, OPENING)
        opening = handler.shaped(results.show, job, handler.pinned(job), {})
    with demo:
        gr.Markdown(HERO, elem_id="hero")
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare-tab"):
                compare = add_compare_tab(handler, results, opening, shown)
            with gr.Tab("Sweep", id="sweep-tab"):
                sweep = add_sweep_tab(handler, pipe.defaults, GPU_LOCK, OPENING.values["prompt"], results.folder_for)
            with gr.Tab("Diagnose", id="diagnose-tab"):
                add_diagnose_tab(handler, GPU_LOCK)
        wire_lessons(handler, compare, sweep, tabs)
        for event in compare.on_load:
            demo.load(**event)
        api_endpoints(handler, OPENING.values["prompt"])
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch_args = server_guards(demo) | dict(css=CSS)
    return demo


def build(argv: Sequence[str] | None = None) -> gr.Blocks:
    """Parse the flags, load the pipeline once and create the demo around it; exits with a message on bad flags."""
    args = parse_args(argv)
    from wan_t2i.aot import ahead_of
    from wan_t2i.request import Limits

    try:
        pipe = load_pipeline(args)
        limits = Limits.for_model(pipe.defaults, max_work=args.max_work, max_seconds=args.max_render_seconds)
    except ValueError as error:  # ModelLoadError (a path, device or dtype), or settings that do not fit
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)
    embedded = args.model_path is None and args.teacher_path is None
    demo = create_demo(
        pipe,
        render_on_load=args.render_on_load == "yes" or (args.render_on_load == "auto" and embedded),
        limits=limits,
        keep_outputs_seconds=args.keep_outputs_seconds,
        warm_up=ahead_of(pipe.components.transformer) is not None,  # --compile_cache, or ZeroGPU's by default
    )
    demo.launch_args |= dict(server_name=args.server_name, server_port=args.server_port)
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """`wan-t2i-app [flags]` and `python app.py [flags]`: build and launch."""
    demo = build(argv)
    demo.launch(**demo.launch_args)
