"""The app's Sweep tab and its `/sweep` endpoint: up to two axes over one prompt, a labelled grid with a verdict on
each cell, and the cell table (`pipe.sweep`, docs/sweeps.md).

A sweep is checked whole before it renders: every cell against the model and the app's public limits, and the cells'
work together against the one request budget (`Limits.max_work`), so a sweep can ask for no more than a comparison.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from wan_t2i.choices import SAMPLERS

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

    from wan_t2i.handlers import Handler
    from wan_t2i.request import GenerationRequest
    from wan_t2i.sweep import Sweep

SWEEP_AXES = ("sampler", "shift", "steps", "guidance", "seed")  # what the tab offers (the library has more)
NO_AXIS = "none"
MAX_APP_CELLS = 16  # a grid a page can show; the library allows sweep.MAX_CELLS
TABLE_COLUMNS = ("cell", "verdict_word", "std_ratio", "final_mean", "verdict")
DEFAULT_AXES = (("shift", "1,3,5"), ("sampler", "legacy_ddim,flow_unipc"))


def sweep_axes(axis_1: Any, values_1: Any, axis_2: Any = NO_AXIS, values_2: Any = "") -> dict[str, list]:
    """`("shift", "1,3,5", "sampler", "legacy_ddim,flow_unipc")` -> {"shift": [1.0, 3.0, 5.0], "sampler": [...]}.

    The first axis runs down the grid, the second across; raises ValueError naming the axis and what it takes.
    """
    from wan_t2i.sweep import parse_axis

    axes: dict[str, list] = {}
    for axis, values in ((axis_1, values_1), (axis_2, values_2)):
        if axis in (None, "", NO_AXIS):
            continue
        if axis not in SWEEP_AXES:
            raise ValueError(f"sweep axis must be one of {', '.join(SWEEP_AXES)}, got {axis!r}")
        if axis in axes:
            raise ValueError(f"sweep axis {axis} is chosen twice: pick two different axes, or none for the second")
        if not isinstance(values, str):
            raise ValueError(f"sweep values for {axis} must be text such as 1,3,5, got {values!r}")
        name, parsed = parse_axis(f"{axis}={values}")
        axes[name] = parsed
    if not axes:
        raise ValueError("a sweep needs at least one axis with values, such as shift = 1,3,5")
    return axes


def sweep_request(handler: Handler, values: dict[str, Any]) -> tuple[GenerationRequest, dict[str, list]]:
    """The base request and the axes of a sweep event's values, checked whole before anything renders.

    `values`: prompt, sampler, steps, shift, guidance_scale, seed (None: one drawn for every cell), axis_1, values_1,
    axis_2, values_2. Raises ValueError naming what to change.
    """
    from wan_t2i.request import work
    from wan_t2i.sweep import make_cells

    axes = sweep_axes(values.get("axis_1"), values.get("values_1"), values.get("axis_2"), values.get("values_2"))
    settings = {k: values.get(k) for k in ("prompt", "sampler", "steps", "shift", "guidance_scale", "seed")}
    request = handler.request(settings)
    cells = make_cells(request, axes, max_cells=MAX_APP_CELLS)
    for cell in cells:
        handler.limits.check(cell.request)
    total = sum(work(cell.request) for cell in cells)
    if total > handler.limits.max_work:
        raise ValueError(
            f"the sweep asks for {total:g} megapixel-steps over {len(cells)} cells; this app's limit per request is "
            f"{handler.limits.max_work:g} (max_work): fewer cells or fewer steps"
        )
    return request, axes


def table(sweep: Sweep) -> pd.DataFrame:
    """One row per cell: its axis values, the verdict in a word, the std ratio, the final mean, the verdict."""
    rows = []
    for i, row in enumerate(sweep.rows()):
        axes = {k.removeprefix("axis_"): v for k, v in row.items() if k.startswith("axis_")}
        rows.append({"cell": i, **axes, **{k: row[k] for k in TABLE_COLUMNS[1:]}})
    return pd.DataFrame(rows).round({"std_ratio": 2, "final_mean": 2})


def add_sweep_tab(handler: Handler, defaults: Any, concurrency_id: str, example_prompt: str) -> None:
    """The Sweep tab's layout and its event, which is also the API's `/sweep`; call inside a `gr.Tab`."""
    import gradio as gr

    from wan_t2i.handlers import one_line
    from wan_t2i.request import MAX_PROMPT_CHARS, MAX_SEED

    gr.Markdown(
        "Every cell starts from the same noise and the same text encoding; the first axis runs down, the second "
        "across. Each cell is edged green where the VAE can decode its latents, red where it cannot."
    )
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(
            label="Prompt", value=example_prompt, max_length=MAX_PROMPT_CHARS, scale=4, elem_id="sweep-prompt"
        )
        sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler (unless an axis)", scale=1)
    with gr.Row(equal_height=True):
        (a1, v1), (a2, v2) = DEFAULT_AXES
        axis_1 = gr.Dropdown(list(SWEEP_AXES), value=a1, label="Down: axis", elem_id="sweep-axis-1")
        values_1 = gr.Textbox(value=v1, label="values (comma-separated)", elem_id="sweep-values-1")
        axis_2 = gr.Dropdown([NO_AXIS, *SWEEP_AXES], value=a2, label="Across: axis", elem_id="sweep-axis-2")
        values_2 = gr.Textbox(value=v2, label="values (comma-separated)", elem_id="sweep-values-2")
    with gr.Row(equal_height=True):
        steps = gr.Number(value=defaults.steps, precision=0, minimum=1, label="Steps (unless an axis)")
        shift = gr.Number(value=defaults.shift, label="Shift (unless an axis)")
        guidance_scale = gr.Number(value=defaults.guidance_scale, label="Guidance (unless an axis)")
        seed = gr.Number(value=7, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (unless an axis)")
    run = gr.Button(f"Render the sweep (up to {MAX_APP_CELLS} cells)", variant="primary", elem_id="sweep-run")
    grid = gr.Image(
        label="Sweep grid", format="png", type="pil", interactive=False, elem_id="sweep-grid",
        buttons=["download", "fullscreen"],
    )  # fmt: skip
    cells = gr.Dataframe(label="Cells", interactive=False, elem_id="sweep-table", wrap=True)
    details = gr.JSON(visible=False, label="details")

    def render(
        prompt: Any = None, sampler: Any = None, axis_1: Any = None, values_1: Any = None, axis_2: Any = None,
        values_2: Any = None, steps: Any = None, shift: Any = None, guidance_scale: Any = None, seed: Any = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Image.Image, pd.DataFrame, dict]:  # fmt: skip
        """Render a grid of renders over up to two axes (sampler, shift, steps, guidance, seed) from one seed.

        Args:
            prompt: what to draw, e.g. "A serene lake at sunset".
            sampler: the sampler of every cell unless sampler is an axis; default the model's own.
            axis_1: the axis down the grid: sampler, shift, steps, guidance or seed.
            values_1: its values, comma-separated: "1,3,5" or "legacy_ddim,flow_unipc".
            axis_2: the axis across the grid, or "none".
            values_2: its values, comma-separated.
            steps: denoising steps of every cell unless steps is an axis.
            shift: timestep shift unless shift is an axis.
            guidance_scale: classifier-free guidance unless guidance is an axis; 1 disables it.
            seed: the seed of every cell unless seed is an axis; empty draws one.

        Returns:
            The labelled grid (PNG), the cell table, and details: the seed and one row per cell.
        """
        values = dict(
            prompt=prompt, sampler=sampler, axis_1=axis_1, values_1=values_1, axis_2=axis_2, values_2=values_2,
            steps=steps, shift=shift, guidance_scale=guidance_scale, seed=seed,
        )  # fmt: skip
        try:
            request, axes = sweep_request(handler, values)
            sweep = handler.pipe.sweep(
                request, axes, max_cells=MAX_APP_CELLS, progress=lambda i, n: progress((i, n), desc="sweep")
            )
        except ValueError as error:
            raise gr.Error(one_line(error), print_exception=False) from error
        rows = [{k: json_value(v) for k, v in row.items() if k != "prompt"} for row in sweep.rows()]
        return sweep.grid(), table(sweep), {"seed": sweep.request.seed, "cells": rows}

    run.click(
        render,
        inputs=[prompt, sampler, axis_1, values_1, axis_2, values_2, steps, shift, guidance_scale, seed],
        outputs=[grid, cells, details],
        api_name="sweep",
        concurrency_id=concurrency_id,
        preprocess=False,
        show_progress_on=[grid],
    )


def json_value(value: Any) -> Any:
    """NaN and infinity are not JSON: None instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
