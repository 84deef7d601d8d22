"""The Gradio demo: one prompt, two samplers from the same seed, and what happened to their latents.

`python app.py [--model_path ... --teacher_path ...]` builds the pipeline once, hands it to `create_demo(pipe)` and
launches. On a Hugging Face Space (env SPACE_ID) the pipeline is also built at import, as ZeroGPU wants.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gradio as gr
import pandas as pd
import torch

from wan_t2i.diagnostics import HEALTHY_STD_RATIO
from wan_t2i.performance import PRESETS
from wan_t2i.pipeline import MAX_GUIDANCE, MAX_SEED, MODELS, Generation, WanT2IPipeline
from wan_t2i.samplers import SAMPLERS

try:  # ZeroGPU Spaces provide `spaces`; everywhere else generation runs where the pipeline lives
    import spaces
except ImportError:
    spaces = None

DEFAULT_A, DEFAULT_B = "legacy_ddim", "flow_unipc"
MAX_STEPS_UI = 100  # the slider's range; the API accepts what the pipeline accepts (1..1000)
MAX_SHIFT_UI = 20.0
SERIES_COLORS = ("#dc2626", "#2563eb")  # A red, B blue, in the plot
BAND_COLOR = "#9ca3af"
IMAGE_HEIGHT = 360  # pixels on the page; the images themselves keep the size they were rendered at
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full" rather than waiting minutes
GPU_LOCK = "gpu"  # one concurrency group for every event that samples: one GPU, one generation at a time
EXAMPLES = ["A serene lake at sunset", "A beautiful mountain landscape", "Snowy mountains at dawn"]
SAMPLER_NOTES = {
    "legacy_ddim": "the original loop (reads velocity as noise)",
    "flow_unipc": "Wan's flow UniPC",
    "flow_euler": "flow Euler",
}
# ZeroGPU time to ask for: fixed cost (moving weights, text encoder, VAE decode) plus the sampling itself, measured as
# about a quarter second per step and branch for a 14B Wan transformer at 832x480 on one H200, scaled by pixel count.
GPU_BASE_SECONDS = 20
GPU_SECONDS_PER_STEP = 0.25
GPU_REFERENCE_PIXELS = 832 * 480
GPU_MAX_SECONDS = 120  # ZeroGPU refuses longer requests from visitors without a paid plan

DESCRIPTION = """\
# wan-t2i: why the sampler must match the model

A text-to-image student distilled from a Wan video model was trained with **flow matching**. Sampled with the legacy
**DDIM** loop it gives garbage (noise or smears); sampled with Wan's **flow UniPC** it gives an image. Both render here
from the same seed and the same text encoding, so the sampler is the only difference. The plot shows why: the legacy
loop pushes the latents far outside the range the VAE was trained to decode.
"""


@dataclass(frozen=True)
class Request:
    """One call to `pipe.generate`, as plain values (picklable, for ZeroGPU's worker process)."""

    prompt: Any
    samplers: tuple[str, ...]
    models: tuple[str, ...] | None
    negative_prompt: Any
    steps: Any
    shift: Any
    guidance_scale: Any
    seed: Any  # None picks a random seed; the one used comes back in Generation.seed
    height: Any
    width: Any


def gpu_seconds(request: Request, *_: Any, **__: Any) -> int:
    """ZeroGPU duration for `request`: from its steps, branches and size; a fixed minimum when they are not numbers."""
    try:
        pixels = request.height * request.width / GPU_REFERENCE_PIXELS
        sampling = request.steps * len(request.samplers) * GPU_SECONDS_PER_STEP * pixels
        return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + math.ceil(sampling)))
    except (TypeError, ValueError):
        return GPU_BASE_SECONDS


def on_gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; a no-op where the `spaces` package is missing."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def as_integer(value: Any) -> Any:
    """JSON has one number type: pass 20.0 on as 20, leave anything else for the pipeline to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def resolution_choices(pipe: WanT2IPipeline) -> list[tuple[str, str]]:
    """(label, value) pairs `"832 × 480"`, `"832x480"` (width x height), the model's default first."""
    d = pipe.defaults
    sizes = [(d.height, d.width)] + [tuple(r) for r in d.resolutions if tuple(r) != (d.height, d.width)]
    return [(f"{w} × {h}", f"{w}x{h}") for h, w in sizes]


def parse_resolution(value: str) -> tuple[int, int]:
    """`"832x480"` -> (height 480, width 832)."""
    width, height = (int(side) for side in str(value).split("x"))
    return height, width


def latent_health(generation: Generation, names: Sequence[str]) -> pd.DataFrame:
    """Latent std per step for each branch, plus the band the VAE decodes cleanly, as rows for `gr.LinePlot`."""
    rows = []
    for name, result in zip(names, generation.results.values(), strict=True):
        d = result.diagnostics
        steps = enumerate(zip(d.t, d.latent_std, strict=True))
        rows += [{"step": i + 1, "t": t, "latent std": std, "series": name} for i, (t, std) in steps]
    first = next(iter(generation.results.values())).diagnostics
    for label, value in latent_health_bands(generation).items():
        rows += [{"step": i + 1, "t": t, "latent std": value, "series": label} for i, t in enumerate(first.t)]
    return pd.DataFrame(rows, columns=["step", "t", "latent std", "series"])


def latent_health_bands(generation: Generation) -> dict[str, float]:
    """The edges of the std band the VAE decodes cleanly (`HEALTHY_STD_RATIO` x the expected std), by series name."""
    expected = next(iter(generation.results.values())).diagnostics.expected_std
    low, high = (ratio * expected for ratio in HEALTHY_STD_RATIO)
    return {f"VAE band low ({low:g})": low, f"VAE band high ({high:g})": high}


def report(generation: Generation, names: Sequence[str]) -> str:
    """Markdown: each branch's time and verdict, then the seed and the stage timings."""
    lines = []
    for name, result in zip(names, generation.results.values(), strict=True):
        d = result.diagnostics
        lines.append(
            f"- **{name}** · {result.seconds:.2f} s · final latent std {d.final_std:.2f} "
            f"(VAE expects {d.expected_std:.2f}): {d.verdict}"
        )
    t = generation.timings
    lines.append(
        f"\nSeed **{generation.seed}** · encode {t['encode']:.2f} s · denoise {t['denoise']:.2f} s · "
        f"decode {t['decode']:.2f} s · total {t['total']:.2f} s"
    )
    return "\n".join(lines)


def details(generation: Generation) -> dict:
    """What the API returns beside the images: seed, timings, and per branch its parameters and diagnostics."""

    def finite(value: Any) -> Any:  # NaN and infinity are not JSON
        return value if not isinstance(value, float) or math.isfinite(value) else None

    results = {}
    for label, r in generation.results.items():
        d = r.diagnostics
        results[label] = {
            "sampler": r.sampler,
            "model": r.model,
            "seconds": r.seconds,
            "verdict": d.verdict,
            "final_mean": finite(d.final_mean),
            "final_std": finite(d.final_std),
            "expected_std": d.expected_std,
            "std_ratio": finite(d.std_ratio),
            "t": d.t,
            "latent_std": [finite(v) for v in d.latent_std],
            "parameters": r.parameters,
        }
    return {"seed": generation.seed, "timings": generation.timings, "results": results}


def generate_kwargs(request: Request) -> dict:
    """`WanT2IPipeline.generate`'s keyword arguments for a request."""
    return dict(
        samplers=list(request.samplers),
        models=list(request.models) if request.models is not None else None,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        shift=request.shift,
        guidance_scale=request.guidance_scale,
        seed=request.seed,
        height=request.height,
        width=request.width,
    )


def create_demo(pipe: WanT2IPipeline, *, render_on_load: bool = False) -> gr.Blocks:
    """The whole UI and its two API endpoints (`/generate`, `/compare`) around one loaded pipeline.

    `render_on_load` fills in the first example prompt and renders the comparison as each page opens, so a visitor
    sees the story at once; meant for small models (the embedded demo model: about 1.3 s on a CPU), not for GPUs
    shared by many visitors.
    """
    d = pipe.defaults
    has_teacher = pipe.components.has_teacher

    @on_gpu(duration=gpu_seconds)
    def render(request: Request, progress: gr.Progress | None = None) -> Generation:
        """The one place that samples; on ZeroGPU it runs on a GPU granted for `gpu_seconds(request)`."""

        def step(i: int, total: int) -> None:
            if progress is not None:
                progress((i, total), desc="sampling", unit="steps")

        return pipe.generate(request.prompt, **generate_kwargs(request), progress=step)

    def run(request: Request, randomize_seed: Any, progress: gr.Progress | None) -> Generation:
        """Check what the pipeline does not, then render; every ValueError becomes a message for the user."""
        if not isinstance(randomize_seed, bool):
            raise gr.Error(f"randomize_seed must be true or false, got {randomize_seed!r}", print_exception=False)
        if randomize_seed:
            request = Request(**(asdict(request) | {"seed": None}))
        try:
            pipe.check_arguments(request.prompt, **generate_kwargs(request))  # before a GPU is granted (ZeroGPU)
            return render(request, progress)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except torch.OutOfMemoryError as error:
            raise gr.Error("out of GPU memory: try a smaller resolution, or a GPU with more memory") from error

    def models_for(*models: Any) -> tuple[Any, ...] | None:
        """Models only when a teacher is loaded or asked for, so that a plain student keeps its plain labels."""
        return tuple(models) if has_teacher or any(m != "student" for m in models) else None

    def name(side: str, sampler: str, model: str) -> str:
        return f"{side} · {sampler}" + (f" · {model}" if has_teacher else "")

    def generate(
        prompt: str,
        negative_prompt: str,
        sampler: str,
        model: str,
        steps: float,
        shift: float,
        guidance_scale: float,
        seed: float,
        randomize_seed: bool,
        height: float,
        width: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented way to get a progress bar)
    ) -> tuple:
        """One image with one sampler (default: Wan's flow UniPC). Returns the PNG, the seed used and details."""
        request = Request(
            prompt, (sampler,), models_for(model), negative_prompt, as_integer(steps), shift, guidance_scale,
            as_integer(seed), as_integer(height), as_integer(width),
        )  # fmt: skip
        generation = run(request, randomize_seed, progress)
        (result,) = generation.results.values()
        return result.image, generation.seed, details(generation)

    def compare(
        prompt: str,
        negative_prompt: str,
        sampler_a: str,
        sampler_b: str,
        model_a: str,
        model_b: str,
        steps: float,
        shift: float,
        guidance_scale: float,
        seed: float,
        randomize_seed: bool,
        height: float,
        width: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Samplers A and B from the same seed and text encoding. Returns both PNGs, the seed used and details."""
        request = Request(
            prompt, (sampler_a, sampler_b), models_for(model_a, model_b), negative_prompt, as_integer(steps), shift,
            guidance_scale, as_integer(seed), as_integer(height), as_integer(width),
        )  # fmt: skip
        generation = run(request, randomize_seed, progress)
        result_a, result_b = generation.results.values()
        return result_a.image, result_b.image, generation.seed, details(generation)

    def generate_ui(
        prompt: str,
        negative_prompt: str,
        side_by_side: bool,
        sampler_a: str,
        sampler_b: str,
        model_a: str,
        model_b: str,
        steps: float,
        shift: float,
        guidance_scale: float,
        seed: float,
        randomize_seed: bool,
        resolution: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        height, width = parse_resolution(resolution)
        if side_by_side:
            samplers, models = (sampler_a, sampler_b), (model_a, model_b)
            names = [name("A", sampler_a, model_a), name("B", sampler_b, model_b)]
        else:
            samplers, models, names = (sampler_b,), (model_b,), [name("B", sampler_b, model_b)]
        request = Request(
            prompt, samplers, models_for(*models), negative_prompt, as_integer(steps), shift, guidance_scale,
            as_integer(seed), height, width,
        )  # fmt: skip
        generation = run(request, randomize_seed, progress)
        images = [r.image for r in generation.results.values()]
        labels = [f"{n}: {SAMPLER_NOTES[r.sampler]}" for n, r in zip(names, generation.results.values(), strict=True)]
        image_a = (
            gr.update(value=images[0], label=labels[0], visible=True) if side_by_side else gr.update(visible=False)
        )
        colors = dict(zip(names, SERIES_COLORS[-len(names) :], strict=True))  # B keeps its colour when alone
        colors |= {series: BAND_COLOR for series in latent_health_bands(generation)}
        return (
            image_a,
            gr.update(value=images[-1], label=labels[-1]),
            gr.update(value=tuple(images), visible=True) if side_by_side else gr.update(visible=False),
            generation.seed,
            gr.update(value=latent_health(generation, names), color_map=colors),
            report(generation, labels),
        )

    with gr.Blocks(title="wan-t2i: DDIM vs flow matching") as demo:
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
            summary = gr.Markdown(elem_id="summary")
        gr.Examples([[text] for text in EXAMPLES], inputs=[prompt])

        # The UI's own event: Enter in the prompt or the button (and the page opening, with render_on_load).
        gr.on(
            [prompt.submit, button.click] + ([demo.load] if render_on_load else []),
            generate_ui,
            inputs=[prompt, negative_prompt, side_by_side, sampler_a, sampler_b, model_a, model_b]
            + [steps, shift, guidance_scale, seed, randomize_seed, resolution],
            outputs=[image_a, image_b, slider, seed, plot, summary],
            concurrency_id=GPU_LOCK,
            api_visibility="private",
        )
        side_a = [image_a, slider, sampler_a] + ([model_a] if has_teacher else [])
        side_by_side.change(
            lambda on: [gr.update(visible=on)] * len(side_a),
            inputs=side_by_side,
            outputs=side_a,
            queue=False,
            api_visibility="private",
        )

        # The API: typed, unbounded inputs so that the pipeline, not the widget, says what is wrong with a value.
        with gr.Column(visible=False):
            api = {
                "prompt": gr.Textbox(label="prompt"),
                "negative_prompt": gr.Textbox(value=d.negative_prompt, label="negative_prompt"),
                "sampler": gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="sampler"),
                "sampler_a": gr.Dropdown(list(SAMPLERS), value=DEFAULT_A, label="sampler_a"),
                "sampler_b": gr.Dropdown(list(SAMPLERS), value=DEFAULT_B, label="sampler_b"),
                "model": gr.Dropdown(list(MODELS), value="student", label="model"),
                "model_a": gr.Dropdown(list(MODELS), value="student", label="model_a"),
                "model_b": gr.Dropdown(list(MODELS), value="student", label="model_b"),
                "steps": gr.Number(value=d.steps, label="steps"),
                "shift": gr.Number(value=d.shift, label="shift"),
                "guidance_scale": gr.Number(value=d.guidance_scale, label="guidance_scale"),
                "seed": gr.Number(value=0, label="seed"),
                "randomize_seed": gr.Checkbox(value=True, label="randomize_seed"),
                "height": gr.Number(value=d.height, label="height"),
                "width": gr.Number(value=d.width, label="width"),
            }
            api_image = gr.Image(format="png", type="pil", label="image")
            api_image_a = gr.Image(format="png", type="pil", label="image_a")
            api_image_b = gr.Image(format="png", type="pil", label="image_b")
            api_seed = gr.Number(precision=0, label="seed_used")
            api_details = gr.JSON(label="details")
        common = ["steps", "shift", "guidance_scale", "seed", "randomize_seed", "height", "width"]
        gr.on(
            [],
            generate,
            inputs=[api[k] for k in ["prompt", "negative_prompt", "sampler", "model", *common]],
            outputs=[api_image, api_seed, api_details],
            api_name="generate",
            concurrency_id=GPU_LOCK,
        )
        gr.on(
            [],
            compare,
            inputs=[api[k] for k in ["prompt", "negative_prompt", "sampler_a", "sampler_b", "model_a", "model_b"]]
            + [api[k] for k in common],
            outputs=[api_image_a, api_image_b, api_seed, api_details],
            api_name="compare",
            concurrency_id=GPU_LOCK,
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags; each defaults to its environment variable, and those to the embedded demo model."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description="The wan-t2i Gradio demo.")
    parser.add_argument("--model_path", default=env("WAN_T2I_MODEL_PATH"), help="student transformer: folder, Hub id")
    parser.add_argument(
        "--teacher_path", default=env("WAN_T2I_TEACHER_PATH"), help="Wan model (Diffusers or native layout)"
    )
    parser.add_argument("--device", default=env("WAN_T2I_DEVICE"), help="cuda, cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=env("WAN_T2I_DTYPE"), help="bf16, fp16, fp32 (default: bf16 GPU, fp32 CPU)")
    parser.add_argument(
        "--with_teacher",
        action="store_true",
        default=env("WAN_T2I_WITH_TEACHER", "").lower() in ("1", "true", "yes"),
        help="also load the teacher's transformer, for student-vs-teacher comparisons",
    )
    parser.add_argument(
        "--performance",
        choices=list(PRESETS),
        default=env("WAN_T2I_PERFORMANCE", "default"),
        help="default | fastest (compiled, for GPU servers) | low_memory (24 GB GPUs); see benchmarks/RESULTS.md",
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
    parser.add_argument("--server_name", default=None, help="default: 127.0.0.1 (GRADIO_SERVER_NAME overrides)")
    parser.add_argument("--server_port", type=int, default=None, help="default: 7860 (GRADIO_SERVER_PORT overrides)")
    return parser.parse_args(argv)


def load_pipeline(args: argparse.Namespace) -> WanT2IPipeline:
    """Build the pipeline once, from the parsed flags."""
    return WanT2IPipeline.from_pretrained(
        args.model_path,
        args.teacher_path,
        device=args.device,
        dtype=args.dtype,
        with_teacher=args.with_teacher,
        performance=args.performance,
        gpu_memory_gb=args.gpu_memory_gb,
    )


if __name__ == "__main__" or os.environ.get("SPACE_ID"):
    args = parse_args(None if __name__ == "__main__" else [])
    try:
        pipe = load_pipeline(args)
    except ValueError as error:  # ModelLoadError, or settings that do not fit (a bad gpu_memory_gb)
        sys.exit(f"app.py: {error}")
    embedded = args.model_path is None and args.teacher_path is None
    demo = create_demo(
        pipe, render_on_load=args.render_on_load == "yes" or (args.render_on_load == "auto" and embedded)
    )
    if __name__ == "__main__":
        demo.launch(server_name=args.server_name, server_port=args.server_port)
