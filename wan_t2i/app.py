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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_t2i.choices import DTYPES, PRESETS, SAMPLERS

if TYPE_CHECKING:
    import gradio as gr

    from wan_t2i.handlers import Handler
    from wan_t2i.pipeline import Generation, WanT2IPipeline
    from wan_t2i.request import Limits

DEFAULT_A, DEFAULT_B = "legacy_ddim", "flow_unipc"
MAX_STEPS_UI = 100  # the slider's range (request.PUBLIC_STEPS); the API accepts 1..1000 within the work budget
MAX_SHIFT_UI = 20.0
SERIES_COLORS = ("#dc2626", "#2563eb")  # A red, B blue, in the plot
BAND_COLOR = "#9ca3af"
IMAGE_HEIGHT = 360  # pixels on the page; the images themselves keep the size they were rendered at
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full" rather than waiting minutes
GPU_LOCK = "gpu"  # one concurrency group for every event that samples: one GPU, one generation at a time
# What the app keeps on disk: Gradio writes every image it serves to its cache; each is deleted once it is an hour
# old (checked every 10 minutes), and all of them when the server stops. docs/reliability.md has the sizes.
KEEP_OUTPUTS_SECONDS = 3600
CACHE_CLEANUP_SECONDS = 600
MAX_UPLOAD = "1mb"  # no input takes a file; Gradio's upload route is there all the same
OPENING_SEED = 0  # the seed of the comparison rendered once at start-up with render_on_load
EXAMPLES = ["A serene lake at sunset", "A beautiful mountain landscape", "Snowy mountains at dawn"]
SAMPLER_NOTES = {  # one line per sampler: what it is for (docs/samplers.md has the table)
    "legacy_ddim": "the original loop (reads velocity as noise)",
    "flow_unipc": "Wan's flow UniPC (its default)",
    "flow_dpmpp": "Wan's second solver (dpm++)",
    "flow_euler": "flow Euler (first order)",
    "flow_lcm": "few-step students (LCM: fresh noise each step)",
}

DESCRIPTION = """\
# wan-t2i: why the sampler must match the model

A text-to-image student distilled from a Wan video model was trained with **flow matching**. Sampled with the legacy
**DDIM** loop it gives garbage (noise or smears); sampled with Wan's **flow UniPC** it gives an image. Both render here
from the same seed and the same text encoding, so the sampler is the only difference. The plot shows why: the legacy
loop pushes the latents far outside the range the VAE was trained to decode.
"""


def resolution_choices(pipe: WanT2IPipeline) -> list[tuple[str, str]]:
    """(label, value) pairs `"832 × 480"`, `"832x480"` (width x height), the model's default first."""
    d = pipe.defaults
    sizes = [(d.height, d.width)] + [tuple(r) for r in d.resolutions if tuple(r) != (d.height, d.width)]
    return [(f"{w} × {h}", f"{w}x{h}") for h, w in sizes]


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

    from wan_t2i.handlers import Handler
    from wan_t2i.report import latent_health, latent_health_bands, summary
    from wan_t2i.request import MAX_GUIDANCE, MAX_SEED, MODELS

    d = pipe.defaults
    has_teacher = pipe.components.has_teacher
    handler = Handler(pipe, limits, pair=(DEFAULT_A, DEFAULT_B))

    def show(generation: Generation, values: dict[str, Any]) -> tuple:
        """The page's outputs: both images (A hidden when alone), the slider, the seed, the plot and the summary."""
        results = list(generation.results.values())
        pair = len(results) == 2
        sides = ("A", "B") if pair else ("B",)
        model = (lambda r: f" · {r.model}") if has_teacher else (lambda r: "")
        names = [f"{side} · {r.sampler}{model(r)}" for side, r in zip(sides, results, strict=True)]
        labels = [f"{n}: {SAMPLER_NOTES[r.sampler]}" for n, r in zip(names, results, strict=True)]
        colors = dict(zip(names, SERIES_COLORS[-len(names) :], strict=True))  # B keeps its colour when alone
        colors |= {series: BAND_COLOR for series in latent_health_bands(generation)}
        return (
            gr.update(value=results[0].image, label=labels[0], visible=True) if pair else gr.update(visible=False),
            gr.update(value=results[-1].image, label=labels[-1]),
            gr.update(value=tuple(r.image for r in results), visible=True) if pair else gr.update(visible=False),
            generation.seed,
            gr.update(value=latent_health(generation, names), color_map=colors),
            summary(generation, labels),
        )

    cleanup = (min(CACHE_CLEANUP_SECONDS, keep_outputs_seconds), keep_outputs_seconds)  # (every, age) seconds
    with gr.Blocks(title="wan-t2i: DDIM vs flow matching", delete_cache=cleanup) as demo:
        gr.Markdown(DESCRIPTION)
        if d.vocabulary_note:
            gr.Markdown(f"**{d.name}** · {d.vocabulary_note}", elem_id="vocabulary-note")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(
                label="Prompt", placeholder="A serene lake at sunset", lines=1, max_lines=3, scale=5,
                autofocus=True, elem_id="prompt", value=EXAMPLES[0] if render_on_load else None,
            )  # fmt: skip
            button = gr.Button("Generate", variant="primary", scale=1, elem_id="generate")
        with gr.Row(equal_height=True):
            side_by_side = gr.Checkbox(label="Compare side by side", value=True, elem_id="compare")
            sampler_a = gr.Dropdown(list(SAMPLERS), value=DEFAULT_A, label="Sampler A", elem_id="sampler-a")
            sampler_b = gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="Sampler B", elem_id="sampler-b")
            model_a = gr.Radio(list(MODELS), value="student", label="Model A", visible=has_teacher)
            model_b = gr.Radio(list(MODELS), value="student", label="Model B", visible=has_teacher)
        with gr.Accordion("Advanced", open=False):
            negative_prompt = gr.Textbox(label="Negative prompt", value=d.negative_prompt, lines=2)
            with gr.Row():
                steps = gr.Slider(1, MAX_STEPS_UI, value=d.steps, step=1, label="Steps")
                shift = gr.Slider(
                    0.1, MAX_SHIFT_UI, value=d.shift, step=0.1, label="Shift",
                    info="timestep shift: Wan uses 5 at 480p and 720p; fewer pixels want less",
                )  # fmt: skip
                guidance_scale = gr.Slider(
                    1, MAX_GUIDANCE, value=d.guidance_scale, step=0.5, label="Guidance scale", info="1 disables it"
                )
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
                randomize_seed = gr.Checkbox(value=True, label="Randomize seed", elem_id="randomize-seed")
                choices = resolution_choices(pipe)
                resolution = gr.Dropdown(choices, value=choices[0][1], label="Resolution (width × height)")
            timesteps = gr.Textbox(
                label="Timesteps", value=",".join(map(str, d.timesteps or ())), placeholder="1000,750,500,250",
                info="explicit model timesteps for few-step students: they replace steps and shift; empty: none",
                elem_id="timesteps",
            )  # fmt: skip
        with gr.Row(equal_height=True):
            image_a = gr.Image(
                label="A", format="png", type="pil", interactive=False, height=IMAGE_HEIGHT, elem_id="image-a"
            )
            image_b = gr.Image(
                label="B", format="png", type="pil", interactive=False, height=IMAGE_HEIGHT, elem_id="image-b"
            )
        slider = gr.ImageSlider(
            label="Before / after (drag)", format="png", type="pil", max_height=2 * IMAGE_HEIGHT, elem_id="slider"
        )
        with gr.Row():
            plot = gr.LinePlot(
                x="step", y="latent std", color="series", tooltip="all", label="Latent health", x_axis_format="d",
                title="Latent std per step, against the band the VAE decodes cleanly", elem_id="latent-plot",
            )  # fmt: skip
            summary_box = gr.Markdown(elem_id="summary")
        gr.Examples([[text] for text in EXAMPLES], inputs=[prompt])

        # The page's own event: Enter in the prompt or the button. Values reach the handler as sent (preprocess off),
        # so that it, not a widget's conversion, judges each one (a prompt sent as a number is refused, not str()ed).
        form = dict(
            prompt=prompt, negative_prompt=negative_prompt, side_by_side=side_by_side, sampler_a=sampler_a,
            sampler_b=sampler_b, model_a=model_a, model_b=model_b, steps=steps, shift=shift,
            guidance_scale=guidance_scale, seed=seed, randomize_seed=randomize_seed, resolution=resolution,
            timesteps=timesteps,
        )  # fmt: skip
        outputs = [image_a, image_b, slider, seed, plot, summary_box]
        gr.on(
            [prompt.submit, button.click],
            handler.endpoint(show, form, len(outputs)),
            inputs_kwargs=form,
            outputs=outputs,
            concurrency_id=GPU_LOCK,
            api_visibility="private",
            preprocess=False,
        )
        if render_on_load:  # rendered once now; each page view only shows it, outside the queue
            values = dict(prompt=EXAMPLES[0], sampler_a=DEFAULT_A, sampler_b=DEFAULT_B, seed=OPENING_SEED)
            opening = pipe.generate(handler.request(values))
            demo.load(lambda: show(opening, values), outputs=outputs, queue=False, api_visibility="private")
        side_a = [image_a, slider, sampler_a] + ([model_a] if has_teacher else [])
        side_by_side.change(
            lambda on: [gr.update(visible=on)] * len(side_a),
            inputs=side_by_side,
            outputs=side_a,
            queue=False,
            api_visibility="private",
        )
        api_endpoints(handler, d)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch_args = server_guards(demo)
    return demo


def server_guards(demo: gr.Blocks) -> dict[str, Any]:
    """`launch` arguments that guard the server: bodies over serving.MAX_BODY_BYTES refused before they are read,
    left-out trailing API inputs filled in as defaults, uploads limited (the app takes no file)."""
    from starlette.middleware import Middleware

    from wan_t2i.serving import BodyLimit, OmittedInputs

    inputs = {}  # api_name and fn_index of each sampling event -> its number of inputs
    for fn_index, fn in demo.fns.items():
        if fn.concurrency_id == GPU_LOCK:
            inputs[fn_index] = len(fn.inputs)
            if fn.api_name:
                inputs[fn.api_name] = len(fn.inputs)
    middleware = [Middleware(BodyLimit), Middleware(OmittedInputs, inputs=inputs)]  # the first runs first
    return dict(max_file_size=MAX_UPLOAD, app_kwargs={"middleware": middleware})


def api_endpoints(handler: Handler, d: Any) -> None:
    """`/generate` and `/compare`: typed, unbounded inputs, so that the request, not a widget, judges each value.

    Gradio needs a component per API input; one hidden set serves both endpoints (`inputs_kwargs` names them).
    """
    import gradio as gr

    from wan_t2i.report import details
    from wan_t2i.request import MODELS

    with gr.Column(visible=False):
        field = dict(
            prompt=gr.Textbox(label="prompt"),
            negative_prompt=gr.Textbox(value=d.negative_prompt, label="negative_prompt"),
            sampler_a=gr.Dropdown(list(SAMPLERS), value=DEFAULT_A, label="sampler_a"),
            sampler_b=gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="sampler"),
            model=gr.Dropdown(list(MODELS), value="student", label="model"),
            steps=gr.Number(value=d.steps, label="steps"),
            shift=gr.Number(value=d.shift, label="shift"),
            guidance_scale=gr.Number(value=d.guidance_scale, label="guidance_scale"),
            seed=gr.Number(value=None, label="seed"),  # given, it is used; left out, one is drawn
            randomize_seed=gr.Checkbox(value=False, label="randomize_seed"),  # true: draw one even if a seed is given
            height=gr.Number(value=d.height, label="height"),
            width=gr.Number(value=d.width, label="width"),
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
        concurrency_id=GPU_LOCK,
        preprocess=False,
    )
    gr.on(
        [],
        handler.endpoint(shape, compare, 4),
        inputs_kwargs=compare,
        outputs=[images[1], images[2], seed_used, details_json],
        api_name="compare",
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
