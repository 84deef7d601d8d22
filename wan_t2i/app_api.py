"""The app's API endpoints `/generate` and `/compare`, and the guards around the server (body, inputs, uploads, disk).

`/sweep` and `/diagnose` are their tabs' own events (`wan_t2i.app_sweep`, `wan_t2i.app_diagnose`); every one of them
goes through the one `wan_t2i.handlers.Handler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wan_t2i.choices import SAMPLERS
from wan_t2i.handlers import GPU_LOCK

if TYPE_CHECKING:
    import gradio as gr

    from wan_t2i.handlers import Handler
    from wan_t2i.pipeline import Generation

MAX_UPLOAD = "100kb"  # no input takes a file; Gradio's upload route is there all the same (bodies: 1 MiB)


def api_endpoints(handler: Handler, example_prompt: str) -> None:
    """`/generate` and `/compare`: typed, unbounded inputs, so that the request, not a widget, judges each value.

    Gradio needs a component per API input; one hidden set serves both endpoints (`inputs_kwargs` names them).
    """
    import gradio as gr

    from wan_t2i.report import details
    from wan_t2i.request import MODELS

    d, (default_a, default_b) = handler.pipe.defaults, handler.pair

    with gr.Column(visible=False):
        # Each label says what its parameter does: the API page and `view_api` show it (the names come from the
        # endpoint's signature).
        field = dict(
            prompt=gr.Textbox(label="prompt: what to draw, e.g. 'A serene lake at sunset'"),
            negative_prompt=gr.Textbox(value=d.negative_prompt, label="negative_prompt: what to steer away from"),
            sampler_a=gr.Dropdown(list(SAMPLERS), value=default_a, label="sampler_a: the first sampler"),
            sampler_b=gr.Dropdown(list(SAMPLERS), value=default_b, label="sampler: the sampler (the second of a pair)"),
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
        field["prompt"].example_payload = field["prompt"].example_value = lambda: example_prompt  # the API page's call
        images = [gr.Image(format="png", type="pil", label=name) for name in ("image", "image_a", "image_b")]
        seed_used, details_json = gr.Number(precision=0, label="seed_used"), gr.JSON(label="details")
    common = {k: field[k] for k in ("steps", "shift", "guidance_scale", "seed", "randomize_seed", "height", "width")}
    text = {k: field[k] for k in ("prompt", "negative_prompt")}

    def shape(generation: Generation, _: dict[str, Any]) -> tuple:
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
