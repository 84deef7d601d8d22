"""The app's Sweep tab and its `/sweep` endpoint: up to two axes over one prompt, a labelled grid with a verdict on
each cell, and the cell table (`pipe.sweep`, docs/sweeps.md).

A sweep is checked whole before it renders: every cell against the model and the app's public limits, and the cells'
work together against the one request budget (`Limits.max_work`), so a sweep can ask for no more than a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from wan_t2i import images

if TYPE_CHECKING:
    from wan_t2i.handlers import Handler
    from wan_t2i.jobs import Job
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


def sweep_job(handler: Handler, values: dict[str, Any]) -> Job:
    """The job of a sweep event's values, checked whole before anything renders.

    `values`: prompt, sampler, steps, shift, guidance_scale, seed (None: one drawn for every cell), axis_1, values_1,
    axis_2, values_2. Raises ValueError naming what to change.
    """
    from wan_t2i.jobs import Job
    from wan_t2i.request import work
    from wan_t2i.sweep import make_cells

    axes = sweep_axes(values.get("axis_1"), values.get("values_1"), values.get("axis_2"), values.get("values_2"))
    settings = {k: values.get(k) for k in ("prompt", "sampler", "steps", "shift", "guidance_scale", "seed")}
    request = handler.request(settings)
    count = math.prod(len(v) for v in axes.values())
    if count > MAX_APP_CELLS:  # the library's message names its max_cells, which a visitor cannot set
        raise ValueError(
            f"the sweep has {count} cells; this app renders at most {MAX_APP_CELLS} at once: drop values or an axis"
        )
    cells = make_cells(request, axes, max_cells=MAX_APP_CELLS)
    for cell in cells:
        handler.limits.check(cell.request)
    total = sum(work(cell.request) for cell in cells)
    if total > handler.limits.max_work:
        raise ValueError(
            f"the sweep asks for {total:g} megapixel-steps over {len(cells)} cells; this app's limit per request is "
            f"{handler.limits.max_work:g} (max_work): fewer cells or fewer steps"
        )
    return Job("sweep", request=request, axes=axes, max_cells=MAX_APP_CELLS)


def table(sweep: Sweep) -> pd.DataFrame:
    """One row per cell: its axis values, the verdict in a word, the std ratio, the final mean, the verdict."""
    rows = []
    for i, row in enumerate(sweep.rows()):
        axes = {k.removeprefix("axis_"): v for k, v in row.items() if k.startswith("axis_")}
        rows.append({"cell": i, **axes, **{k: row[k] for k in TABLE_COLUMNS[1:]}})
    return pd.DataFrame(rows).round({"std_ratio": 2, "final_mean": 2})


@dataclass
class SweepTab:
    """The Sweep tab's inputs by name and its event's settings, for the lessons that fill it in and run it."""

    form: dict[str, Any]
    outputs: list[Any]
    run: dict[str, Any]  # `fn`, `inputs_kwargs`, `outputs`, ... of the sweep event, to chain after a lesson


def add_sweep_tab(
    handler: Handler, defaults: Any, concurrency_id: str, example_prompt: str, folder_for: Callable[[Any], Path]
) -> SweepTab:
    """The Sweep tab's layout and its event, which is also the API's `/sweep`; call inside a `gr.Tab`.

    `folder_for(sweep)` is where a sweep's grid PNG is written (named for what it shows, for its download).
    """
    import gradio as gr

    from wan_t2i.app_results import sampler_choices, slug
    from wan_t2i.request import MAX_PROMPT_CHARS, MAX_SEED

    gr.Markdown(
        "Every cell starts from the same noise and the same text encoding; the first axis runs down, the second "
        "across. Each cell is edged green where the VAE can decode its latents, red where it cannot."
    )
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(
            label="Prompt", value=example_prompt, max_length=MAX_PROMPT_CHARS, scale=4, elem_id="sweep-prompt"
        )
        sampler = gr.Dropdown(sampler_choices(), value=defaults.sampler, label="Sampler (unless an axis)", scale=1)
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
    status = gr.Markdown(elem_id="sweep-status", min_height=24)
    grid = gr.Image(
        label="Sweep grid", format="png", interactive=False, elem_id="sweep-grid", buttons=["download", "fullscreen"]
    )
    cells = gr.Dataframe(label="Cells", interactive=False, elem_id="sweep-table", wrap=True)
    details = gr.JSON(visible=False, label="details")
    prompt.example_payload = prompt.example_value = lambda: example_prompt  # the API page's example call

    def shape(sweep: Sweep, values: dict[str, Any]) -> tuple[str, pd.DataFrame, dict]:
        axes = "-".join(sweep.axes)
        name = f"{slug(sweep.request.prompt)}_sweep-{axes}_seed{sweep.request.seed}.png"
        path = images.save_png(sweep.grid(), folder_for(sweep) / name, sweep.parameters())
        rows = [{k: json_value(v) for k, v in row.items() if k != "prompt"} for row in sweep.rows()]
        return str(path), table(sweep), {"seed": sweep.request.seed, "cells": rows}

    form = dict(
        prompt=prompt, sampler=sampler, axis_1=axis_1, values_1=values_1, axis_2=axis_2, values_2=values_2,
        steps=steps, shift=shift, guidance_scale=guidance_scale, seed=seed,
    )  # fmt: skip
    settings = dict(
        fn=handler.endpoint(shape, form, 3, prepare=lambda values: sweep_job(handler, values)),
        inputs_kwargs=form, outputs=[grid, cells, details], concurrency_id=concurrency_id, preprocess=False,
        show_progress_on=[status],
    )  # fmt: skip
    run.click(
        **settings,
        api_name="sweep",
        api_description="Render a grid over up to two axes (sampler, shift, steps, guidance, seed) from one seed: "
        "axis_1 runs down, axis_2 (or none) across, values comma-separated. Returns the labelled grid (PNG), the "
        "cell table, and details: the seed and per cell its axis values, final latent statistics and verdict.",
    )
    return SweepTab(form=form, outputs=[grid, cells, details], run=settings | {"api_visibility": "private"})


def json_value(value: Any) -> Any:
    """NaN and infinity are not JSON: None instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
