"""The Compare tab: one prompt, two samplers from the same seed, what happened to their latents; and the lessons.

`add_compare_tab` lays the tab out and wires its own events (Generate, Stop, the seed buttons, the view); what a
render shows is `wan_t2i.app_results.Results`. The lessons (`LESSONS`) are buttons under the prompt that fill in the
Compare or the Sweep tab and run it; each lesson's result is pinned once rendered (at start-up where the app renders
on load), so a click shows it at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wan_t2i.app_results import OUTPUTS, Results, sampler_choices
from wan_t2i.handlers import GPU_LOCK
from wan_t2i.jobs import one_line

if TYPE_CHECKING:
    import gradio as gr

    from wan_t2i.app_sweep import SweepTab
    from wan_t2i.handlers import Handler
    from wan_t2i.jobs import Job
    from wan_t2i.loading import ModelDefaults

MAX_STEPS_UI = 100  # the slider's range (request.PUBLIC_STEPS); the API accepts 1..1000 within the work budget
MAX_SHIFT_UI = 20.0
IMAGE_HEIGHT = 360  # pixels on the page; the images themselves keep the size they were rendered at
LESSON_SEED = 0  # every lesson renders from this seed, so that its pinned result is what a click asks for
DESCRIPTION = """\
A text-to-image student distilled from a Wan video model was trained with **flow matching**: it predicts a velocity.
The legacy **DDIM** loop reads that velocity as noise, so every step pushes the latents further out, far past the range
the VAE was trained to decode: the image is garbage (noise or smears). Wan's **flow UniPC** integrates the velocity as
it was meant, and the latents land in the band the VAE decodes cleanly. Both render here from the same seed and the
same text encoding, so the sampler is the only difference; the plot shows each one's latent width step by step.
"""
# Which input a request's error message is about, by how the message starts (request.py words them so).
FIELD_OF_MESSAGE = (
    ("the prompt", "prompt"), ("the negative prompt", "negative_prompt"), ("steps", "steps"), ("shift", "shift"),
    ("guidance", "guidance_scale"), ("seed", "seed"), ("timesteps", "timesteps"), ("resolution", "resolution"),
    ("height", "resolution"), ("width", "resolution"),
)  # fmt: skip


@dataclass(frozen=True)
class Lesson:
    """One lesson: a label, the tab it runs in ("compare" or "sweep") and the values it sets there."""

    label: str
    tab: str
    values: dict[str, Any]


LESSONS = (
    Lesson("DDIM vs UniPC, 20 steps: one is noise", "compare",
           dict(prompt="A serene lake at sunset", sampler_a="legacy_ddim", sampler_b="flow_unipc", steps=20)),
    Lesson("Euler vs UniPC: both fine", "compare",
           dict(prompt="Snowy mountains at dawn", sampler_a="flow_euler", sampler_b="flow_unipc", steps=20)),
    Lesson("UniPC at 1, 4 and 20 steps", "sweep",
           dict(prompt="A beautiful mountain landscape", sampler="flow_unipc", axis_1="steps", values_1="1,4,20",
                axis_2="none", values_2="")),
    Lesson("A shift sweep: 1, 3, 5, 8", "sweep",
           dict(prompt="Green hills beyond a calm lake at noon", sampler="flow_unipc", axis_1="shift",
                values_1="1,3,5,8", axis_2="sampler", values_2="flow_euler,flow_unipc", steps=8)),
)  # fmt: skip
OPENING = LESSONS[0]  # what the page opens on, where the app renders on load


@dataclass
class CompareTab:
    """The Compare tab's inputs by name, its outputs in `OUTPUTS` order, its render event's settings and the
    events that Stop cancels."""

    form: dict[str, Any]
    outputs: list[Any]
    run: dict[str, Any]
    lessons: list[Any]  # one button per lesson, wired once every tab exists (`wire_lessons`)
    renders: list[Any] = field(default_factory=list)
    on_load: list[dict[str, Any]] = field(default_factory=list)  # `demo.load` events the page runs as it opens
    idle: dict[str, Any] = field(default_factory=dict)
    busy: Any = None


def field_of(message: str) -> str:
    """The form field a request's error message names; the prompt when none does."""
    for start, name in sorted(FIELD_OF_MESSAGE, key=lambda pair: -len(pair[0])):
        if message.startswith(start):
            return name
    return "prompt"


def resolution_choices(d: ModelDefaults) -> list[tuple[str, str]]:
    """(label, value) pairs `"832 × 480"`, `"832x480"` (width x height), the model's default first."""
    sizes = [(d.height, d.width)] + [tuple(r) for r in d.resolutions if tuple(r) != (d.height, d.width)]
    return [(f"{w} × {h}", f"{w}x{h}") for h, w in sizes]


def compare_values(d: ModelDefaults, pair: tuple[str, str], **values: Any) -> dict[str, Any]:
    """The whole Compare form as a fresh page has it (the model's defaults, `pair` A and B, `LESSON_SEED`), with
    `values` set: what a lesson fills in, and so the request its pinned result answers."""
    form = dict(
        prompt="", negative_prompt=d.negative_prompt, side_by_side=True, sampler_a=pair[0], sampler_b=pair[1],
        model_a="student", model_b="student", steps=d.steps, shift=d.shift, guidance_scale=d.guidance_scale,
        seed=LESSON_SEED, randomize_seed=False, resolution=resolution_choices(d)[0][1],
        timesteps=",".join(map(str, d.timesteps or ())),
    )  # fmt: skip
    return form | values


def sweep_values(d: ModelDefaults, **values: Any) -> dict[str, Any]:
    """The whole Sweep form as a fresh page has it, with `values` set (see `compare_values`)."""
    form = dict(prompt="", sampler=d.sampler, axis_1="shift", values_1="1,3,5", axis_2="none", values_2="",
                steps=d.steps, shift=d.shift, guidance_scale=d.guidance_scale, seed=LESSON_SEED)  # fmt: skip
    return form | values


def lesson_job(handler: Handler, lesson: Lesson) -> Job:
    """The job a lesson's click asks for."""
    from wan_t2i.app_sweep import sweep_job

    d = handler.pipe.defaults
    if lesson.tab == "sweep":
        return sweep_job(handler, sweep_values(d, **lesson.values))
    return handler.generate_job(compare_values(d, handler.pair, **lesson.values))


def add_compare_tab(
    handler: Handler, results: Results, opening: tuple | None, lessons: Sequence[Lesson] = LESSONS
) -> CompareTab:
    """The Compare tab's layout and its own events; call inside a `gr.Tab`. `opening`: the outputs to open on;
    `lessons`: the lessons this model can render (the others' buttons are hidden)."""
    import gradio as gr

    from wan_t2i.request import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, MODELS

    d, has_teacher = handler.pipe.defaults, handler.pipe.components.has_teacher
    first = dict(zip(OUTPUTS, opening, strict=True)) if opening else {}
    start = compare_values(d, handler.pair, **(OPENING.values if opening else {}))

    with gr.Row(equal_height=True):
        prompt = gr.Textbox(
            label="Prompt", placeholder=OPENING.values["prompt"], lines=1, max_lines=3, scale=5,
            max_length=MAX_PROMPT_CHARS, elem_id="prompt", value=start["prompt"] or None,
        )  # fmt: skip
        with gr.Column(scale=1, min_width=120):
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop")
    ignored_box = gr.Markdown(first.get("ignored", ""), elem_id="ignored")
    with gr.Row(elem_id="lessons"):
        gr.Markdown("**Lessons** (click one to run it):", elem_id="lessons-title")
        buttons = [gr.Button(x.label, size="sm", elem_classes="lesson", visible=x in lessons, min_width=0)
                   for x in LESSONS]  # fmt: skip
    if d.vocabulary or d.vocabulary_note:
        vocabulary_chips(prompt, d)
    with gr.Row(equal_height=True):
        side_by_side = gr.Checkbox(label="Compare side by side", value=True, elem_id="compare")
        sampler_a = gr.Dropdown(sampler_choices(), value=start["sampler_a"], label="Sampler A", elem_id="sampler-a")
        sampler_b = gr.Dropdown(sampler_choices(), value=start["sampler_b"], label="Sampler B", elem_id="sampler-b")
        model_a = gr.Dropdown(list(MODELS), value="student", label="Model A", visible=has_teacher)
        model_b = gr.Dropdown(list(MODELS), value="student", label="Model B", visible=has_teacher)
        view = gr.Checkbox(label="As a slider", value=False, elem_id="view", info="A and B in one frame")
    status = gr.Markdown(elem_id="status", min_height=24)  # the one progress display
    image = dict(format="png", interactive=False, height=IMAGE_HEIGHT, buttons=image_buttons())
    with gr.Row(equal_height=True) as pair_row:
        with gr.Column() as column_a:
            image_a = gr.Image(**initial(first.get("image_a"), label="A"), elem_id="image-a", **image)
            badge_a = gr.Markdown(first.get("badge_a", ""), elem_id="badge-a")
        with gr.Column():
            image_b = gr.Image(**initial(first.get("image_b"), label="B"), elem_id="image-b", **image)
            badge_b = gr.Markdown(first.get("badge_b", ""), elem_id="badge-b")
    slider = gr.ImageSlider(
        **initial(first.get("slider"), label="A | B"), type="filepath", format="png", height=IMAGE_HEIGHT,
        interactive=False, visible=False, elem_id="slider",
    )  # fmt: skip
    with gr.Row(equal_height=True):
        seed_used = gr.Markdown(first.get("seed_used", ""), elem_id="seed-used")
        reuse = gr.Button("♻ Reuse this seed", size="sm", elem_id="reuse-seed")
        dice = gr.Button("🎲 New seed each time", size="sm", elem_id="random-seed")
        pair_download = gr.DownloadButton(
            "Download the pair", size="sm", elem_id="download-pair", **initial(first.get("download"), visible=False)
        )
    with gr.Row():
        plot = gr.Image(
            first.get("plot"), label="Latent health", format="png", type="pil", interactive=False, min_width=320,
            elem_id="latent-plot", buttons=["download", "fullscreen"],
        )  # fmt: skip
        with gr.Column(min_width=320):
            summary_box = gr.Markdown(first.get("summary", ""), elem_id="summary")
    with gr.Accordion("Advanced", open=False):
        negative_prompt = gr.Textbox(
            label="Negative prompt", value=d.negative_prompt, lines=2, max_length=MAX_PROMPT_CHARS
        )
        with gr.Row():
            steps = gr.Slider(1, MAX_STEPS_UI, value=start["steps"], step=1, label="Steps", elem_id="steps")
            shift = gr.Slider(
                0.1, MAX_SHIFT_UI, value=d.shift, step=0.1, label="Shift", elem_id="shift",
                info="timestep shift of the flow samplers: more spends more steps at high noise; "
                "legacy_ddim ignores it",
            )  # fmt: skip
            guidance_scale = gr.Slider(
                1, MAX_GUIDANCE, value=d.guidance_scale, step=0.5, label="Guidance scale", info="1 disables it"
            )
        with gr.Row():
            seed = gr.Number(value=LESSON_SEED, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
            randomize_seed = gr.Checkbox(value=not opening, label="Randomize seed", elem_id="randomize-seed")
            choices = resolution_choices(d)
            resolution = gr.Dropdown(
                choices, value=choices[0][1], label="Resolution (width × height)", visible=len(choices) > 1
            )
        timesteps = gr.Textbox(
            label="Timesteps", value=start["timesteps"], placeholder="1000,750,500,250", elem_id="timesteps",
            info="explicit model timesteps for few-step students, replacing steps and shift; empty: none",
        )  # fmt: skip
    with gr.Accordion("Why: what the samplers do to the latents", open=False, elem_id="why"):
        gr.Markdown(DESCRIPTION)
    last_seed = gr.State(first.get("last_seed"))
    alt_text = gr.JSON(first.get("alt_text"), visible=False)

    form = dict(
        prompt=prompt, negative_prompt=negative_prompt, side_by_side=side_by_side, sampler_a=sampler_a,
        sampler_b=sampler_b, model_a=model_a, model_b=model_b, steps=steps, shift=shift,
        guidance_scale=guidance_scale, seed=seed, randomize_seed=randomize_seed, resolution=resolution,
        timesteps=timesteps,
    )  # fmt: skip
    outputs = [image_a, image_b, slider, badge_a, badge_b, plot, summary_box, seed_used, last_seed, ignored_box]
    outputs += [alt_text, pair_download]
    tab = CompareTab(form=form, outputs=outputs, run={}, lessons=buttons)
    wire(tab, handler, results, button, stop, status)

    quiet = dict(queue=False, api_visibility="private", show_progress="hidden")
    alt_js = """(alts) => { if (!alts) return;
        ["image-a", "image-b"].forEach((id, i) => document.querySelectorAll(`#${id} img`).forEach(
            (img) => { img.alt = alts[i] || ""; }));
    }"""  # gr.Image has no alt text of its own: the run's alt texts go onto its <img> elements
    alt_text.change(None, inputs=alt_text, js=alt_js, **quiet)
    tab.on_load.append(dict(fn=None, inputs=alt_text, js=alt_js, **quiet))  # the opening's, once the page is there
    sides = [column_a, sampler_a, view] + ([model_a] if has_teacher else [])

    def show_view(on: bool, as_slider: bool) -> list[dict]:
        """Side by side, or the slider (a pair only); A's column and the pair's controls only while comparing."""
        slider_on = on and as_slider
        return [gr.update(visible=not slider_on), gr.update(visible=slider_on), *[gr.update(visible=on)] * len(sides)]

    gr.on([side_by_side.change, view.change], show_view, [side_by_side, view], [pair_row, slider, *sides], **quiet)

    def shift_matters(on: bool, a: str, b: str) -> dict:
        flow = any(s != "legacy_ddim" for s in ((a, b) if on else (b,)))
        return gr.update(interactive=flow)

    gr.on([side_by_side.change, sampler_a.change, sampler_b.change], shift_matters,
          [side_by_side, sampler_a, sampler_b], shift, **quiet)  # fmt: skip
    seed.input(lambda: False, outputs=randomize_seed, **quiet)  # a typed seed is meant to be used
    reuse.click(lambda used: (used, False) if used is not None else (gr.skip(), gr.skip()), last_seed,
                [seed, randomize_seed], **quiet)  # fmt: skip
    dice.click(lambda: True, outputs=randomize_seed, **quiet)
    return tab


def wire(tab: CompareTab, handler: Handler, results: Results, button: Any, stop: Any, status: Any) -> None:
    """The tab's render: validated at its fields before it queues (a bad value is marked there and the results on
    the page stay), a busy Generate and a Stop while it runs, live previews, then the results."""
    import gradio as gr

    def validate(**values: Any) -> list[dict]:
        bad = ("", "")
        try:
            handler.request(values)
        except ValueError as error:
            bad = (field_of(str(error)), one_line(error))
        return [gr.validate(name != bad[0], bad[1] if name == bad[0] else "") for name in tab.form]

    quiet = dict(queue=False, api_visibility="private", show_progress="hidden")
    tab.busy = dict(fn=lambda **_: (gr.update(value="Generating…", interactive=False), gr.update(visible=True)),
                    outputs=[button, stop], **quiet)  # fmt: skip
    tab.idle = dict(fn=lambda: (gr.update(value="Generate", interactive=True), gr.update(visible=False)),
                    outputs=[button, stop], **quiet)  # fmt: skip
    busy = gr.on(  # queued, for its validator to run (Gradio validates queued events only), but never waits
        [tab.form["prompt"].submit, button.click],
        tab.busy["fn"],
        inputs_kwargs=tab.form,
        outputs=[button, stop],
        validator=validate,
        preprocess=False,
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="private",
    )
    # Values reach the handler as sent (preprocess off), so that it, not a widget's conversion, judges each one.
    tab.run = dict(
        fn=handler.endpoint(results.show, tab.form, len(tab.outputs), results.live), inputs_kwargs=tab.form,
        outputs=tab.outputs, concurrency_id=GPU_LOCK, api_visibility="private", preprocess=False,
        show_progress_on=[status],
    )  # fmt: skip
    render = busy.success(**tab.run)
    render.then(**tab.idle)
    tab.renders.append(render)
    stop.click(**tab.idle, cancels=tab.renders)


def wire_lessons(handler: Handler, tab: CompareTab, sweep: SweepTab, tabs: gr.Tabs) -> None:
    """Each lesson button fills in its tab (the rest of the form as a fresh page has it), shows that tab and runs it;
    Stop cancels a lesson's render as it does Generate's."""
    import gradio as gr

    d = handler.pipe.defaults
    quiet = dict(queue=False, api_visibility="private", show_progress="hidden")
    for button, lesson in zip(tab.lessons, LESSONS, strict=True):
        if lesson.tab == "compare":
            form, run, values = tab.form, tab.run, compare_values(d, handler.pair, **lesson.values)
        else:
            form, run, values = sweep.form, sweep.run, sweep_values(d, **lesson.values)
        fill = button.click(
            lambda v=values, target=lesson.tab: [*v.values(), gr.Tabs(selected=f"{target}-tab")],
            outputs=[*(form[name] for name in values), tabs], **quiet,
        )  # fmt: skip
        render = fill.then(**tab.busy).then(**run)
        render.then(**tab.idle)
        tab.renders.append(render)


def vocabulary_chips(prompt: gr.Textbox, d: ModelDefaults) -> None:
    """What a fixed-vocabulary model understands: its phrases as chips grouped by what they choose, each adding
    itself to the prompt; and its note."""
    import gradio as gr

    with gr.Accordion("Words this model understands (click to add)", open=False, elem_id="vocabulary"):
        for slot, phrases in (d.vocabulary or {}).items():
            with gr.Row(elem_classes="chips"):
                gr.Markdown(f"**{slot}**", elem_classes="chip-slot")
                for phrase in phrases:
                    chip = gr.Button(phrase, size="sm", variant="secondary", elem_classes="chip", min_width=0)
                    add = f"(p) => {{ const w = {json.dumps(phrase)}; return p && p.trim() ? p.trim() + ' ' + w : w; }}"
                    chip.click(None, inputs=prompt, outputs=prompt, js=add, queue=False, api_visibility="private")
        if d.vocabulary_note:
            gr.Markdown(f"**{d.name}** · {d.vocabulary_note}", elem_id="vocabulary-note")


def initial(update: dict | None, **defaults: Any) -> dict[str, Any]:
    """A component's constructor arguments from the `gr.update` that would show a result (value, label, visible)."""
    if not update:
        return defaults
    return defaults | {k: v for k, v in update.items() if k != "__type__"}


def image_buttons() -> list[str]:
    """The images' corner buttons: Gradio's Share (to Hugging Face discussions) only where it works, on a Space."""
    import os

    return ["download", "fullscreen"] + (["share"] if os.environ.get("SPACE_ID") else [])
