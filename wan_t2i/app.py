"""The Gradio demo: one prompt, two samplers from the same seed, and what happened to their latents.

`create_demo(pipe)` is the layout and its wiring around a pipeline built once; `main()` parses the flags, builds the
pipeline and launches (`wan-t2i-app`, `python app.py`, or the Space's app.py at import). The handler, the report and
the ZeroGPU sizing live in `wan_t2i.handlers`, `wan_t2i.report` and `wan_t2i.zerogpu`.

Importing this module loads neither Gradio nor torch (seconds each): they load when a demo is created, so that
`wan-t2i-app --help` and a bad flag answer at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_t2i.choices import DTYPES, PRESETS, SAMPLER_NOTES, SAMPLERS

if TYPE_CHECKING:
    import gradio as gr

    from wan_t2i.handlers import Handler
    from wan_t2i.pipeline import Generation, WanT2IPipeline
    from wan_t2i.request import Limits

DEFAULT_A, DEFAULT_B = "legacy_ddim", "flow_unipc"
MAX_STEPS_UI = 100  # the slider's range (request.PUBLIC_STEPS); the API accepts 1..1000 within the work budget
MAX_SHIFT_UI = 20.0
IMAGE_HEIGHT = 360  # pixels on the page; the images themselves keep the size they were rendered at
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full" rather than waiting minutes
GPU_LOCK = "gpu"  # one concurrency group for every event that samples: one GPU, one generation at a time
# What the app keeps on disk: Gradio writes every image it serves to its cache; each is deleted once it is an hour
# old (checked every 10 minutes), and all of them when the server stops. docs/reliability.md has the sizes.
KEEP_OUTPUTS_SECONDS = 3600
CACHE_CLEANUP_SECONDS = 600
MAX_UPLOAD = "1mb"  # no input takes a file; Gradio's upload route is there all the same
OPENING_SEED = 0  # the seed of the comparison rendered once at start-up with render_on_load
# Each example teaches one thing: (label, prompt, sampler A, sampler B, steps).
LESSONS = [
    ("DDIM vs UniPC, 20 steps: one is noise", "A serene lake at sunset", "legacy_ddim", "flow_unipc", 20),
    ("Euler vs UniPC: both fine", "Snowy mountains at dawn", "flow_euler", "flow_unipc", 20),
    ("dpm++ vs UniPC, 4 steps: in range, yet blurry", "A beautiful mountain landscape", "flow_dpmpp", "flow_unipc", 4),
]
EXAMPLES = [lesson[1] for lesson in LESSONS]

HERO = "# Why the sampler must match the model\nSame model, same seed, two samplers: one of them cannot work."
DESCRIPTION = """\
A text-to-image student distilled from a Wan video model was trained with **flow matching**: it predicts a velocity.
The legacy **DDIM** loop reads that velocity as noise, so every step pushes the latents further out, far past the range
the VAE was trained to decode: the image is garbage (noise or smears). Wan's **flow UniPC** integrates the velocity as
it was meant, and the latents land in the band the VAE decodes cleanly. Both render here from the same seed and the
same text encoding, so the sampler is the only difference; the plot shows each one's latent width step by step.
"""
CSS = """
.verdict { padding: 6px 10px; border-radius: 6px; font-weight: 600; }
.verdict-bad { background: #fee2e2; color: #991b1b; }
.verdict-warn { background: #fef3c7; color: #92400e; }
.verdict-good { background: #dcfce7; color: #166534; }
[data-testid="block-info"], .info { color: #4b5563 !important; }
"""  # the help text in #4b5563 on white: 7.6:1 contrast (Gradio's default grey is under 2:1)
# Which input a request's error message is about, by how the message starts (request.py words them so).
FIELD_OF_MESSAGE = (
    ("the prompt", "prompt"), ("the negative prompt", "negative_prompt"), ("steps", "steps"), ("shift", "shift"),
    ("guidance", "guidance_scale"), ("seed", "seed"), ("timesteps", "timesteps"), ("resolution", "resolution"),
    ("height", "resolution"), ("width", "resolution"),
)  # fmt: skip


def resolution_choices(pipe: WanT2IPipeline) -> list[tuple[str, str]]:
    """(label, value) pairs `"832 × 480"`, `"832x480"` (width x height), the model's default first."""
    d = pipe.defaults
    sizes = [(d.height, d.width)] + [tuple(r) for r in d.resolutions if tuple(r) != (d.height, d.width)]
    return [(f"{w} × {h}", f"{w}x{h}") for h, w in sizes]


def field_of(message: str) -> str:
    """The form field a request's error message names; the prompt when none does."""
    for start, name in sorted(FIELD_OF_MESSAGE, key=lambda pair: -len(pair[0])):
        if message.startswith(start):
            return name
    return "prompt"


def pair_file_name(prompt: str, samplers: Sequence[str], seed: int) -> str:
    """A download's name that says what it is: `a-serene-lake-at-sunset_legacy_ddim-vs-flow_unipc_seed7.png`."""
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48].rstrip("-") or "image"
    return f"{words}_{'-vs-'.join(samplers)}_seed{seed}.png"


def image_buttons() -> list[str]:
    """The images' corner buttons: Gradio's Share (to Hugging Face discussions) only where it works, on a Space."""
    return ["download", "fullscreen"] + (["share"] if os.environ.get("SPACE_ID") else [])


def create_demo(
    pipe: WanT2IPipeline,
    *,
    render_on_load: bool = False,
    limits: Limits | None = None,
    keep_outputs_seconds: int = KEEP_OUTPUTS_SECONDS,
) -> gr.Blocks:
    """The whole UI and its two API endpoints (`/generate`, `/compare`) around one loaded pipeline.

    `render_on_load` renders the first example's comparison once, here, and shows it to every page that opens, so a
    visitor sees the story at once without a render in the shared queue; meant for small models (the embedded demo
    model: about 2 s on a CPU). `limits` are the public limits of each request (default: the model's,
    `Limits.for_model`); `keep_outputs_seconds` how long served images stay on disk. `demo.launch_args` holds what
    `launch` needs to guard the server (body and upload limits): `demo.launch(**demo.launch_args)`.
    """
    import gradio as gr  # the layout's imports, here rather than at the top: see the module's docstring

    from wan_t2i import images  # its side_by_side, not the checkbox of that name below
    from wan_t2i.app_diagnose import add_diagnose_tab
    from wan_t2i.app_sweep import add_sweep_tab
    from wan_t2i.handlers import Handler, one_line
    from wan_t2i.report import badge, latent_health_figure, summary
    from wan_t2i.request import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, MODELS
    from wan_t2i.vocabulary import ignored_words

    d = pipe.defaults
    has_teacher = pipe.components.has_teacher
    handler = Handler(pipe, limits, pair=(DEFAULT_A, DEFAULT_B))

    def ignored(prompt: str | None) -> str:
        words = ignored_words(pipe.components.tokenizer, prompt) if isinstance(prompt, str) and prompt else []
        return f"**ignored** (not in this model's vocabulary): {', '.join(words)}" if words else ""

    def show(generation: Generation, values: dict[str, Any]) -> tuple:
        """The page's outputs, all from this one run: A (cleared when alone), B, their badges, plot, summary, seed."""
        results = list(generation.results.values())
        pair = len(results) == 2
        model = (lambda r: f" · {r.model}") if has_teacher else (lambda r: "")
        names = [f"{r.sampler}{model(r)}" for r in results]
        labels = [f"{n}: {SAMPLER_NOTES[r.sampler]}" for n, r in zip(names, results, strict=True)]
        prompt = generation.request.prompt if generation.request else values.get("prompt", "")
        alts = [f"{r.sampler} render of {prompt!r}, seed {generation.seed}" for r in results]
        a = (gr.update(value=results[0].image, label=labels[0]), badge(results[0].diagnostics), alts[0]) if pair else (
            gr.update(value=None, label="A"), "", ""
        )  # fmt: skip
        download = gr.update(visible=False, value=None)
        if pair:  # the pair as one labelled PNG (the CLI's side by side), named for what it shows, in Gradio's cache
            sheet = images.side_by_side({label: r.image for label, r in zip(labels, results, strict=True)})
            os.makedirs(demo.GRADIO_CACHE, exist_ok=True)
            folder = tempfile.mkdtemp(prefix="pair-", dir=demo.GRADIO_CACHE)  # swept by age with the served images
            name = pair_file_name(prompt, [r.sampler for r in results], generation.seed)
            path = images.save_png(sheet, Path(folder) / name, {"pair": [r.parameters for r in results]})
            download = gr.update(visible=True, value=str(path))
        return (
            a[0],
            gr.update(value=results[-1].image, label=labels[-1]),
            a[1],
            badge(results[-1].diagnostics),
            latent_health_figure(generation, names),
            summary(generation, labels),
            f"seed used: **{generation.seed}**",
            generation.seed,
            ignored(prompt),
            [a[2], alts[-1]],
            download,
        )

    def live(step: int, total: int, previews: dict[str, Any]) -> tuple:
        """While a render runs: each side's predicted clean image at this step (Live steps), the rest unchanged."""
        shown = [gr.update(value=image, label=f"{label} · step {step} of {total}: its predicted clean image")
                 for label, image in previews.items()]  # fmt: skip
        sides = shown if len(shown) == 2 else [gr.skip(), *shown]
        return (*sides, *(gr.skip() for _ in outputs[2:]))  # the two images come first in `outputs`

    cleanup = (min(CACHE_CLEANUP_SECONDS, keep_outputs_seconds), keep_outputs_seconds)  # (every, age) seconds
    with gr.Blocks(title="wan-t2i: DDIM vs flow matching", delete_cache=cleanup) as demo:
        gr.Markdown(HERO, elem_id="hero")
        with gr.Tabs():
            with gr.Tab("Compare", id="compare-tab"):
                with gr.Row(equal_height=True):
                    prompt = gr.Textbox(
                        label="Prompt", placeholder="A serene lake at sunset", lines=1, max_lines=3, scale=5,
                        max_length=MAX_PROMPT_CHARS, elem_id="prompt", value=EXAMPLES[0] if render_on_load else None,
                    )  # fmt: skip
                    with gr.Column(scale=1, min_width=120):
                        button = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop")
                ignored_box = gr.Markdown(elem_id="ignored")
                lessons = gr.Column()  # filled below, once the inputs a lesson sets (steps, in Advanced) exist
                with gr.Row(equal_height=True):
                    side_by_side = gr.Checkbox(label="Compare side by side", value=True, elem_id="compare")
                    sampler_a = gr.Dropdown(list(SAMPLERS), value=DEFAULT_A, label="Sampler A", elem_id="sampler-a")
                    sampler_b = gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="Sampler B", elem_id="sampler-b")
                    model_a = gr.Radio(list(MODELS), value="student", label="Model A", visible=has_teacher)
                    model_b = gr.Radio(list(MODELS), value="student", label="Model B", visible=has_teacher)
                status = gr.Markdown(elem_id="status", min_height=24)  # the one progress display
                with gr.Row(equal_height=True):
                    with gr.Column() as column_a:
                        image_a = gr.Image(
                            label="A", format="png", type="pil", interactive=False, height=IMAGE_HEIGHT,
                            elem_id="image-a", buttons=image_buttons(),
                        )  # fmt: skip
                        badge_a = gr.HTML(elem_id="badge-a")
                    with gr.Column():
                        image_b = gr.Image(
                            label="B", format="png", type="pil", interactive=False, height=IMAGE_HEIGHT,
                            elem_id="image-b", buttons=image_buttons(),
                        )  # fmt: skip
                        badge_b = gr.HTML(elem_id="badge-b")
                with gr.Row(equal_height=True):
                    seed_used = gr.Markdown(elem_id="seed-used")
                    reuse = gr.Button("♻ Reuse this seed", size="sm", elem_id="reuse-seed")
                    dice = gr.Button("🎲 New seed each time", size="sm", elem_id="random-seed")
                    pair_download = gr.DownloadButton(
                        "Download the pair", size="sm", visible=False, elem_id="download-pair"
                    )
                with gr.Row():
                    plot = gr.Plot(label="Latent health", format="png", elem_id="latent-plot", min_width=320)
                    with gr.Column(min_width=320):
                        summary_box = gr.Markdown(elem_id="summary")
                with gr.Accordion("Advanced", open=False):
                    negative_prompt = gr.Textbox(
                        label="Negative prompt", value=d.negative_prompt, lines=2, max_length=MAX_PROMPT_CHARS
                    )
                    with gr.Row():
                        steps = gr.Slider(1, MAX_STEPS_UI, value=d.steps, step=1, label="Steps", elem_id="steps")
                        shift = gr.Slider(
                            0.1, MAX_SHIFT_UI, value=d.shift, step=0.1, label="Shift", elem_id="shift",
                            info="timestep shift of the flow samplers: more spends more steps at high noise; "
                            "legacy_ddim ignores it",
                        )  # fmt: skip
                        guidance_scale = gr.Slider(
                            1,
                            MAX_GUIDANCE,
                            value=d.guidance_scale,
                            step=0.5,
                            label="Guidance scale",
                            info="1 disables it",
                        )
                    with gr.Row():
                        seed = gr.Number(
                            value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed"
                        )
                        randomize_seed = gr.Checkbox(value=True, label="Randomize seed", elem_id="randomize-seed")
                        choices = resolution_choices(pipe)
                        resolution = gr.Dropdown(
                            choices, value=choices[0][1], label="Resolution (width × height)", visible=len(choices) > 1
                        )
                    timesteps = gr.Textbox(
                        label="Timesteps", value=",".join(map(str, d.timesteps or ())), placeholder="1000,750,500,250",
                        info="explicit model timesteps for few-step students, replacing steps and shift; empty: none",
                        elem_id="timesteps",
                    )  # fmt: skip
                with gr.Accordion("Why: what the samplers do to the latents", open=False, elem_id="why"):
                    gr.Markdown(DESCRIPTION)
                if d.vocabulary_note:
                    with gr.Accordion("What this model understands", open=False, elem_id="vocabulary"):
                        gr.Markdown(f"**{d.name}** · {d.vocabulary_note}", elem_id="vocabulary-note")
                with lessons:
                    examples = gr.Examples(
                        [list(lesson[1:]) for lesson in LESSONS], inputs=[prompt, sampler_a, sampler_b, steps],
                        label="Lessons (click one to run it)", example_labels=[lesson[0] for lesson in LESSONS],
                    )  # fmt: skip
            with gr.Tab("Sweep", id="sweep-tab"):
                add_sweep_tab(handler, d, GPU_LOCK, EXAMPLES[0])
            with gr.Tab("Diagnose", id="diagnose-tab"):
                add_diagnose_tab(pipe, GPU_LOCK)
        last_seed = gr.State()
        alt_text = gr.JSON(visible=False)

        # The page's own event: Enter in the prompt, the button or a lesson. Values reach the handler as sent
        # (preprocess off), so that it, not a widget's conversion, judges each one. The validator runs first, outside
        # the queue: a bad value is marked at its field and the results on the page stay.
        form = dict(
            prompt=prompt, negative_prompt=negative_prompt, side_by_side=side_by_side, sampler_a=sampler_a,
            sampler_b=sampler_b, model_a=model_a, model_b=model_b, steps=steps, shift=shift,
            guidance_scale=guidance_scale, seed=seed, randomize_seed=randomize_seed, resolution=resolution,
            timesteps=timesteps,
        )  # fmt: skip

        def validate(**values: Any) -> list[dict]:
            bad = ("", "")
            try:
                handler.request(values)
            except ValueError as error:
                bad = (field_of(str(error)), one_line(error))
            return [gr.validate(name != bad[0], bad[1] if name == bad[0] else "") for name in form]

        outputs = [image_a, image_b, badge_a, badge_b, plot, summary_box, seed_used, last_seed, ignored_box, alt_text]
        outputs.append(pair_download)
        quiet = dict(queue=False, api_visibility="private", show_progress="hidden")
        busy = gr.on(  # queued, for its validator to run (Gradio validates queued events only), but never waits
            [prompt.submit, button.click],
            lambda **_: (gr.update(value="Generating…", interactive=False), gr.update(visible=True)),
            inputs_kwargs=form,
            outputs=[button, stop],
            validator=validate,
            preprocess=False,
            concurrency_limit=None,
            show_progress="hidden",
            api_visibility="private",
        )
        run = dict(
            fn=handler.endpoint(show, form, len(outputs), live), inputs_kwargs=form, outputs=outputs,
            concurrency_id=GPU_LOCK, api_visibility="private", preprocess=False, show_progress_on=[status],
        )  # fmt: skip
        render = busy.success(**run)
        idle = dict(
            fn=lambda: (gr.update(value="Generate", interactive=True), gr.update(visible=False)),
            outputs=[button, stop], **quiet,
        )  # fmt: skip
        render.then(**idle)
        lesson = examples.load_input_event.then(**idle | dict(fn=lambda: (gr.update(interactive=False),) * 2))
        lesson_render = lesson.then(**run)
        lesson_render.then(**idle)
        stop.click(**idle, cancels=[render, lesson_render])

        alt_js = """(alts) => { if (!alts) return;
            ["image-a", "image-b"].forEach((id, i) => document.querySelectorAll(`#${id} img`).forEach(
                (img) => { img.alt = alts[i] || ""; }));
        }"""  # gr.Image has no alt text of its own: the run's alt texts go onto its <img> elements
        alt_text.change(None, inputs=alt_text, js=alt_js, **quiet)
        if render_on_load:  # rendered once now; each page view only shows it, outside the queue
            values = dict(prompt=EXAMPLES[0], sampler_a=DEFAULT_A, sampler_b=DEFAULT_B, seed=OPENING_SEED)
            opening = pipe.generate(handler.request(values))
            demo.load(lambda: show(opening, values), outputs=outputs, **quiet)

        side_a = [column_a, sampler_a] + ([model_a] if has_teacher else [])
        side_by_side.change(lambda on: [gr.update(visible=on)] * len(side_a), side_by_side, side_a, **quiet)

        def shift_matters(on: bool, a: str, b: str) -> dict:
            flow = any(s != "legacy_ddim" for s in ((a, b) if on else (b,)))
            return gr.update(interactive=flow)

        gr.on([side_by_side.change, sampler_a.change, sampler_b.change], shift_matters,
              [side_by_side, sampler_a, sampler_b], shift, **quiet)  # fmt: skip
        seed.input(lambda: False, outputs=randomize_seed, **quiet)  # a typed seed is meant to be used
        reuse.click(lambda used: (used, False) if used is not None else (gr.skip(), gr.skip()), last_seed,
                    [seed, randomize_seed], **quiet)  # fmt: skip
        dice.click(lambda: True, outputs=randomize_seed, **quiet)
        api_endpoints(handler, d)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch_args = server_guards(demo) | dict(css=CSS)
    return demo


def server_guards(demo: gr.Blocks) -> dict[str, Any]:
    """`launch` arguments that guard the server: bodies over serving.MAX_BODY_BYTES refused before they are read,
    left-out trailing API inputs filled in as defaults, uploads limited (the app takes no file)."""
    from starlette.middleware import Middleware

    from wan_t2i.serving import BodyLimit, CacheSweeper, OmittedInputs

    inputs = {}  # api_name and fn_index of each sampling event -> its number of inputs
    for fn_index, fn in demo.fns.items():
        if fn.concurrency_id == GPU_LOCK:
            inputs[fn_index] = len(fn.inputs)
            if fn.api_name:
                inputs[fn.api_name] = len(fn.inputs)
    middleware = [Middleware(BodyLimit), Middleware(OmittedInputs, inputs=inputs)]  # the first runs first
    middleware.append(Middleware(CacheSweeper, blocks=demo))  # deletes served images by age: see serving.CacheSweeper
    return dict(max_file_size=MAX_UPLOAD, app_kwargs={"middleware": middleware})


def api_endpoints(handler: Handler, d: Any) -> None:
    """`/generate` and `/compare`: typed, unbounded inputs, so that the request, not a widget, judges each value.

    Gradio needs a component per API input; one hidden set serves both endpoints (`inputs_kwargs` names them).
    """
    import gradio as gr

    from wan_t2i.report import details
    from wan_t2i.request import MODELS

    with gr.Column(visible=False):
        # Each label says what its parameter does: the API page and `view_api` show it (the names come from the
        # endpoint's signature).
        field = dict(
            prompt=gr.Textbox(label="prompt: what to draw, e.g. 'A serene lake at sunset'"),
            negative_prompt=gr.Textbox(value=d.negative_prompt, label="negative_prompt: what to steer away from"),
            sampler_a=gr.Dropdown(list(SAMPLERS), value=DEFAULT_A, label="sampler_a: the first sampler"),
            sampler_b=gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="sampler: the sampler (the second of a pair)"),
            model=gr.Dropdown(list(MODELS), value="student", label="model: student, or teacher when one is loaded"),
            steps=gr.Number(value=d.steps, precision=0, label="steps: denoising steps, 1 to 1000"),
            shift=gr.Number(value=d.shift, label="shift: timestep shift of the flow samplers, > 0"),
            guidance_scale=gr.Number(value=d.guidance_scale, label="guidance_scale: classifier-free guidance, 1 = off"),
            # given, it is used; left out, one is drawn
            seed=gr.Number(value=None, precision=0, label="seed: 0 to 2**32-1; left out, one is drawn"),
            # true: draw one even if a seed is given
            randomize_seed=gr.Checkbox(value=False, label="randomize_seed: draw a seed even if one is given"),
            height=gr.Number(value=d.height, precision=0, label="height: pixels, a multiple of the model's stride"),
            width=gr.Number(value=d.width, precision=0, label="width: pixels, a multiple of the model's stride"),
        )
        images = [gr.Image(format="png", type="pil", label=name) for name in ("image", "image_a", "image_b")]
        seed_used, details_json = gr.Number(precision=0, label="seed_used"), gr.JSON(label="details")
    common = {k: field[k] for k in ("steps", "shift", "guidance_scale", "seed", "randomize_seed", "height", "width")}
    text = {k: field[k] for k in ("prompt", "negative_prompt")}

    def shape(generation: Generation, _: dict) -> tuple:
        return (*(r.image for r in generation.results.values()), generation.seed, details(generation))

    generate = text | {"sampler": field["sampler_b"], "model": field["model"]} | common
    pair = {"sampler_a": field["sampler_a"], "sampler_b": field["sampler_b"], "model_a": field["model"]}
    compare = text | pair | {"model_b": field["model"]} | common
    gr.on(
        [],
        handler.endpoint(shape, generate, 3),
        inputs_kwargs=generate,
        outputs=[images[0], seed_used, details_json],
        api_name="generate",
        api_description="Render one image of the prompt with one sampler; returns the PNG (its request in a text "
        "chunk), the seed used and details: timings, the verdict and the latent std per step.",
        concurrency_id=GPU_LOCK,
        preprocess=False,
    )
    gr.on(
        [],
        handler.endpoint(shape, compare, 4),
        inputs_kwargs=compare,
        outputs=[images[1], images[2], seed_used, details_json],
        api_name="compare",
        api_description="Render the prompt with two samplers (default legacy_ddim and flow_unipc) from one seed and "
        "one text encoding; returns both PNGs, the seed used and details per sampler.",
        concurrency_id=GPU_LOCK,
        preprocess=False,
    )


ENVIRONMENT = """\
Each flag defaults to an environment variable (a Space sets them under Settings -> Variables):
  WAN_T2I_MODEL_PATH, WAN_T2I_TEACHER_PATH, WAN_T2I_DEVICE, WAN_T2I_DTYPE, WAN_T2I_WITH_TEACHER (1/true/yes),
  WAN_T2I_PERFORMANCE, WAN_T2I_GPU_MEMORY_GB, WAN_T2I_RENDER_ON_LOAD, WAN_T2I_MAX_WORK,
  WAN_T2I_MAX_RENDER_SECONDS, WAN_T2I_KEEP_OUTPUTS_SECONDS; Gradio's own GRADIO_SERVER_NAME and GRADIO_SERVER_PORT.
  With none set, the embedded demo model is served.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags; each defaults to its environment variable, and those to the embedded demo model."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="The wan-t2i Gradio demo: two samplers side by side, from one seed.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model_path",
        default=env("WAN_T2I_MODEL_PATH"),
        help="student transformer: folder, Hub id ($WAN_T2I_MODEL_PATH)",
    )
    parser.add_argument(
        "--teacher_path",
        default=env("WAN_T2I_TEACHER_PATH"),
        help="Wan model, Diffusers or native layout ($WAN_T2I_TEACHER_PATH)",
    )
    parser.add_argument(
        "--device", default=env("WAN_T2I_DEVICE"), help="cuda, cuda:1, cpu (default: cuda when available)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=env("WAN_T2I_DTYPE"), help="transformer dtype (default: bf16 GPU, fp32 CPU)"
    )
    parser.add_argument(
        "--with_teacher",
        action="store_true",
        default=env("WAN_T2I_WITH_TEACHER", "").lower() in ("1", "true", "yes"),
        help="also load the teacher's transformer, for student-vs-teacher comparisons",
    )
    parser.add_argument(
        "--performance",
        choices=PRESETS,
        default=env("WAN_T2I_PERFORMANCE", "default"),
        help="default | fastest (compiled, for GPU servers) | low_memory (24 GB GPUs); see docs/performance.md",
    )
    parser.add_argument(
        "--gpu_memory_gb",
        type=float,
        default=env("WAN_T2I_GPU_MEMORY_GB"),  # argparse converts a string default with `type` too
        help="with low_memory: GB of GPU memory to plan for (default: the whole card)",
    )
    parser.add_argument(
        "--render_on_load",
        choices=["auto", "yes", "no"],
        default=env("WAN_T2I_RENDER_ON_LOAD", "auto"),
        help="render the first example as each page opens; auto: only for the embedded demo model",
    )
    limits = parser.add_argument_group("public limits (docs/reliability.md)")
    limits.add_argument(
        "--max_work",
        type=float,
        default=env("WAN_T2I_MAX_WORK"),
        help="megapixel-steps one request may ask for, steps x samplers x pixels / 1e6 (default: the model's "
        "public_max_work, else what the page can ask: 100 steps of 2 samplers at the largest preset)",
    )
    limits.add_argument(
        "--max_render_seconds",
        type=float,
        default=env("WAN_T2I_MAX_RENDER_SECONDS"),
        help="wall clock of one render, after which it stops at its next step (default: 300)",
    )
    limits.add_argument(
        "--keep_outputs_seconds",
        type=int,
        default=env("WAN_T2I_KEEP_OUTPUTS_SECONDS", KEEP_OUTPUTS_SECONDS),
        help=f"how long served images stay on disk (default: {KEEP_OUTPUTS_SECONDS})",
    )
    parser.add_argument("--server_name", default=None, help="default: 127.0.0.1 (GRADIO_SERVER_NAME overrides)")
    parser.add_argument("--server_port", type=int, default=None, help="default: 7860 (GRADIO_SERVER_PORT overrides)")
    args = parser.parse_args(argv)
    # argparse checks `choices` only for values typed on the command line, not for defaults from the environment.
    for name, allowed in (("dtype", DTYPES), ("performance", PRESETS), ("render_on_load", ("auto", "yes", "no"))):
        value = getattr(args, name)
        if value is not None and value not in allowed:
            parser.error(f"WAN_T2I_{name.upper()}={value!r}: choose one of {', '.join(allowed)}")
    return args


def load_pipeline(args: argparse.Namespace) -> WanT2IPipeline:
    """Build the pipeline once, from the parsed flags."""
    from wan_t2i.pipeline import WanT2IPipeline

    return WanT2IPipeline.from_pretrained(
        args.model_path,
        args.teacher_path,
        device=args.device,
        dtype=args.dtype,
        with_teacher=args.with_teacher,
        performance=args.performance,
        gpu_memory_gb=args.gpu_memory_gb,
    )


def build(argv: Sequence[str] | None = None) -> gr.Blocks:
    """Parse the flags, load the pipeline once and create the demo around it; exits with a message on bad flags."""
    args = parse_args(argv)
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
    )
    demo.launch_args |= dict(server_name=args.server_name, server_port=args.server_port)
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """`wan-t2i-app [flags]` and `python app.py [flags]`: build and launch."""
    demo = build(argv)
    demo.launch(**demo.launch_args)
