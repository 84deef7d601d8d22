"""Sampler sweeps: the cartesian product of settings over one prompt, rendered together, each cell diagnosed.

    sweep = pipe.sweep(pipe.request("A serene lake at sunset", seed=7), {"shift": [3, 5, 7], "sampler": SAMPLERS})
    sweep.grid().save("sweep.png")

Every cell with the same seed starts from the same noise and the same text encoding, and equals the single run with
its settings up to batching (tests/test_sweep.py: within 1/255 per pixel). Cells that take the same number of steps
run in lock-step through the pipeline's one denoising loop, batched up to a row budget; the others run as further
groups. The grid labels its rows and columns with the axes' values and captions each cell with its verdict
(`wan_t2i.sweep_grid` draws it); the axes are parsed and checked by `wan_t2i.sweep_axes`, which needs no torch.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from wan_t2i.diagnostics import HEALTHY_STD_RATIO, Diagnostics
from wan_t2i.images import save_png, with_parameters
from wan_t2i.request import MAX_SEED, GenerationRequest
from wan_t2i.sweep_axes import AXES as AXES  # re-exported: wan_t2i.sweep is where callers find a sweep's pieces
from wan_t2i.sweep_axes import MAX_CELLS, as_text, cell_fields, check_axes, slug
from wan_t2i.sweep_axes import parse_axis as parse_axis
from wan_t2i.sweep_grid import GridLayout, draw_grid

if TYPE_CHECKING:
    from wan_t2i.pipeline import Progress, WanT2IPipeline

CPU_ROWS = 8  # transformer rows per forward on a CPU, where larger batches stop paying
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory, what a sweep's batch may plan its activations for


@dataclass
class SweepCell:
    """One cell: the axis values that make it, its single-branch request, and what it rendered."""

    values: dict[str, Any]  # axis -> value, in the sweep's axis order
    request: GenerationRequest
    image: Image.Image | None = None
    diagnostics: Diagnostics | None = None
    seconds: float = math.nan  # its share of its group's time
    parameters: dict = field(default_factory=dict)  # as stored in its PNG

    @property
    def healthy(self) -> bool:
        low, high = HEALTHY_STD_RATIO
        d = self.diagnostics
        return d is not None and math.isfinite(d.std_ratio) and low <= d.std_ratio <= high and abs(d.final_mean) <= 0.5

    @property
    def verdict_word(self) -> str:
        return "ok" if self.healthy else "garbage"

    def row(self) -> dict[str, Any]:
        """The cell as a flat table row: every parameter (as its PNG stores them), the final latent statistics, the
        verdict, the time."""
        d = self.diagnostics
        return {
            **{f"axis_{k}": as_text(v) for k, v in self.values.items()},
            **{k: as_text(v) for k, v in self.parameters.items()},
            "final_mean": d.final_mean,
            "final_std": d.final_std,
            "std_ratio": d.std_ratio,
            "verdict_word": self.verdict_word,
            "verdict": d.verdict,
            "seconds": self.seconds,
            "handover_step": d.expert_handover,  # two-expert models: the first step on the low-noise expert
        }


@dataclass
class Sweep:
    """The cells of a sweep in axis order (the last axis varies fastest) and how they were computed."""

    request: GenerationRequest  # the settings every cell starts from
    axes: dict[str, list]
    cells: list[SweepCell]
    forwards: int = 0  # transformer forward calls made
    cell_forwards: int = 0  # what rendering each cell alone would have made
    timings: dict[str, float] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """What the grid PNG stores: the base request and the axes."""
        base = {k: as_text(v) for k, v in self.request.__dict__.items()}
        return {"sweep": {k: [as_text(v) for v in vs] for k, vs in self.axes.items()}, "request": base}

    def labels(self) -> tuple[list[str], list[str], list[str]]:
        """The grid's texts: a label per column (the last axis), per row (the others), a caption per cell."""
        *down, across = self.axes
        columns = [f"{across} = {as_text(v)}" for v in self.axes[across]]
        rows = [
            "\n".join(f"{n} = {as_text(v)}" for n, v in zip(down, values, strict=True))
            for values in itertools.product(*(self.axes[n] for n in down))
        ]
        captions = [f"{cell.verdict_word} · std {cell.diagnostics.std_ratio:.2g}x" for cell in self.cells]
        return columns, rows, captions

    def layout(self, cell_size: int | None = None) -> GridLayout:
        """Where `grid` draws, for cells shown `cell_size` pixels square (default: the cells' own size)."""
        image = (cell_size, cell_size) if cell_size else self.cells[0].image.size
        return GridLayout.fit(image, *self.labels())

    def grid(self, *, cell_size: int | None = None) -> Image.Image:
        """Labelled rows (every axis but the last) and columns (the last axis), each cell framed green (ok) or red
        (garbage) by its verdict and captioned with it and its final latent std ratio; carries `parameters()`."""
        images = [cell.image for cell in self.cells]
        sheet = draw_grid(self.layout(cell_size), images, [cell.healthy for cell in self.cells], *self.labels())
        return with_parameters(sheet, self.parameters())

    def rows(self) -> list[dict[str, Any]]:
        return [cell.row() for cell in self.cells]

    def write(self, grid_path: str | Path) -> dict[str, Path]:
        """The grid PNG, one PNG per cell beside it (each reproducible alone), sweep.json and sweep.csv."""
        grid_path = Path(grid_path)
        folder = grid_path.parent
        written = {"grid": save_png(self.grid(), grid_path, self.parameters())}
        for i, cell in enumerate(self.cells):
            name = "_".join(f"{k}-{slug(v)}" for k, v in cell.values.items())
            written[f"cell {i}"] = save_png(
                cell.image, folder / f"{grid_path.stem}_{i:02d}_{name}.png", cell.parameters
            )
        rows = self.rows()
        summary = {"parameters": self.parameters(), "forwards": self.forwards, "cell_forwards": self.cell_forwards}
        document = _finite(summary | {"cells": rows})
        (folder / "sweep.json").write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
        with open(folder / "sweep.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written |= {"json": folder / "sweep.json", "csv": folder / "sweep.csv"}
        return written


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands after a step of its loop: over all its groups, and in the group running."""

    done: int  # steps run over every group
    total: int  # every group's steps (a group's loop runs as many as its longest grid)
    cells_done: int  # cells of the groups finished
    cells: int
    group_cells: int  # cells running in the group
    step: int  # the group's step, from 1
    steps: int  # the group's steps

    def __str__(self) -> str:
        """`cells 5-6/6 · step 12/20`."""
        first, last = self.cells_done + 1, self.cells_done + self.group_cells
        running = f"cell {first}" if first == last else f"cells {first}-{last}"
        return f"{running}/{self.cells} · step {self.step}/{self.steps}"


def make_cells(request: GenerationRequest, axes: dict[str, Sequence], *, max_cells: int = MAX_CELLS) -> list[SweepCell]:
    """Every combination of the axes' values (the last axis fastest), each as a validated single-branch request."""
    check_axes(axes, max_cells, timesteps=request.timesteps)
    base = request.branch(0)
    cells = []
    for combination in itertools.product(*axes.values()):
        values = dict(zip(axes, combination, strict=True))
        cells.append(SweepCell(values, replace(base, **cell_fields(values))))
    return cells


def _finite(value: Any) -> Any:
    """The same structure with NaN and infinity as None: they are not JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def iter_groups(cells: Iterable[SweepCell], rows_per_group: int) -> list[list[SweepCell]]:
    """Cells grouped by their step count (those run in lock-step), each group cut to at most `rows_per_group` rows
    of transformer batch (a guided cell counts twice: its conditional and unconditional rows)."""
    by_steps: dict[tuple[int, int, int], list[SweepCell]] = {}  # (steps, height, width) -> cells
    for cell in cells:
        by_steps.setdefault((cell.request.steps, cell.request.height, cell.request.width), []).append(cell)
    groups = []
    for members in by_steps.values():
        group: list[SweepCell] = []
        rows = 0
        for cell in members:
            weight = 2 if cell.request.guided else 1
            if group and rows + weight > rows_per_group:
                groups.append(group)
                group, rows = [], 0
            group.append(cell)
            rows += weight
        groups.append(group)
    return groups


def default_max_rows(pipe: WanT2IPipeline, height: int, width: int) -> int:
    """Transformer rows (a guided cell takes two) per forward that a sweep batches at this size.

    On a CPU, CPU_ROWS. On a GPU, an estimate from the free memory: a block's peak activations per row are about
    tokens x (ffn_dim + 4 dim) values in the model's dtype (the feed-forward's hidden layer beside q, k, v and the
    residual), planned for GPU_MEMORY_SHARE of what is free; from 1 to MAX_CELLS rows.
    """
    if pipe.device.type != "cuda":
        return CPU_ROWS
    config = pipe.components.transformer.config
    tokens = (height // pipe.vae_scale // pipe.patch) * (width // pipe.vae_scale // pipe.patch)
    dim = config.num_attention_heads * config.attention_head_dim
    per_row = tokens * (config.ffn_dim + 4 * dim) * pipe.components.transformer.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(pipe.device)
    return max(1, min(MAX_CELLS, int(GPU_MEMORY_SHARE * free // per_row)))


def run_sweep(
    pipe: WanT2IPipeline,
    request: GenerationRequest,
    axes: dict[str, Sequence],
    *,
    max_cells: int = MAX_CELLS,
    max_rows: int | None = None,
    progress: Progress | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> Sweep:
    """Render every cell of `axes` over `request` (its first branch) through the pipeline's one denoising loop.

    One text encoding serves every cell, one noise tensor every cell of a seed (a request without a seed draws one
    for all). Cells with the same number of steps run in lock-step, `max_rows` transformer rows per forward at most
    (default: `default_max_rows`). After each step of a group's loop, `progress(done, total)` gets the steps over all
    groups and `on_progress` a `SweepProgress`, which also says which cells are running.
    """
    if request.seed is None:
        request = request.with_seed(secrets.randbelow(MAX_SEED + 1))
    sweep = Sweep(request, {k: list(v) for k, v in axes.items()}, make_cells(request, axes, max_cells=max_cells))
    sweep.forwards, sweep.timings = render_cells(
        pipe, sweep.cells, max_rows=max_rows, progress=progress, on_progress=on_progress
    )
    sweep.cell_forwards = sum(cell_forwards(cell.request) for cell in sweep.cells)
    return sweep


def render_cells(
    pipe: WanT2IPipeline,
    cells: Sequence[SweepCell],
    *,
    max_rows: int | None = None,
    progress: Progress | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> tuple[int, dict[str, float]]:
    """Render `cells` (single-branch requests of one prompt and negative prompt) in place: image, diagnostics,
    parameters, seconds; `progress` and `on_progress` as for `run_sweep`. Returns the transformer forwards made and the
    timings (encode, total)."""
    if not cells:
        return 0, {}
    first = cells[0].request
    if any((c.request.prompt, c.request.negative_prompt) != (first.prompt, first.negative_prompt) for c in cells):
        raise ValueError("the cells of one render share one prompt and one negative prompt")
    for cell in cells:
        pipe.spec.check(cell.request)
    max_rows = max_rows or default_max_rows(pipe, first.height, first.width)
    groups = iter_groups(cells, max_rows)
    start = time.perf_counter()
    cond = pipe.encode_prompt(first.prompt)
    uncond = pipe.encode_prompt(first.negative_prompt) if any(c.request.guided for c in cells) else None
    streams: dict[tuple, tuple[torch.Tensor, torch.Generator]] = {}  # (seed, size) -> (noise, generator after it)
    for cell in cells:
        if _stream(cell.request) not in streams:
            generator = torch.Generator("cpu").manual_seed(cell.request.seed)
            streams[_stream(cell.request)] = (pipe.prepare_noise(cell.request, generator), generator)
    encoded = time.perf_counter()

    counter = ForwardCounter(pipe)
    total = sum(max(loop_steps(c.request) for c in group) for group in groups)  # each group's loop runs its longest
    done = cells_done = 0  # over the groups finished
    group: list[SweepCell] = []  # the group running

    def grouped_progress(i: int, steps: int) -> None:
        if progress is not None:
            progress(done + i, total)
        if on_progress is not None:
            on_progress(SweepProgress(done + i, total, cells_done, len(cells), len(group), i, steps))

    base_guidance = (first.guidance_scale, first.guidance_scale_2)
    with counter, torch.inference_mode():
        for group in groups:
            group_start = time.perf_counter()
            branches = [
                cell_branch(c.request, *streams[(c.request.seed, c.request.height, c.request.width)]) for c in group
            ]
            latents, diagnostics = pipe.denoise_branches(branches, cond, uncond, base_guidance, grouped_progress)
            images = pipe.decode(torch.cat(latents))
            share = (time.perf_counter() - group_start) / len(group)
            for cell, x, image, diag in zip(group, latents, images, diagnostics, strict=True):
                diag.finish(x)
                diag.expert_handover = _handover(pipe, cell.request, diag)
                cell.parameters = cell.request.to_parameters(pipe.defaults.name)
                cell.image, cell.diagnostics, cell.seconds = with_parameters(image, cell.parameters), diag, share
            done += max(loop_steps(c.request) for c in group)
            cells_done += len(group)
    return counter.calls, {"encode": encoded - start, "total": time.perf_counter() - start}


def _stream(request: GenerationRequest) -> tuple[int | None, int, int]:
    """What a cell's starting noise depends on: its seed and its size."""
    return request.seed, request.height, request.width


def cell_branch(request: GenerationRequest, noise: torch.Tensor, generator: torch.Generator) -> Any:
    """The pipeline Branch of a single-branch request, from its seed's noise and generator."""
    from wan_t2i.pipeline import Branch

    guidance = (request.guidance_scale, request.guidance_scale_2)
    timesteps = request.timesteps or None
    return Branch(
        request.samplers[0], request.models[0], request.steps, request.shift, timesteps, guidance, noise, generator
    )


def cell_forwards(request: GenerationRequest) -> int:
    """Transformer forwards of the cell rendered alone: one per step whose prediction its sampler uses."""
    solver = _solver(request)
    return sum(solver.uses_prediction(i) for i in range(len(solver.timesteps)))


def loop_steps(request: GenerationRequest) -> int:
    """The steps the denoising loop runs for a single-branch request: its grid's, from explicit timesteps or steps."""
    return len(_solver(request).timesteps)


def _solver(request: GenerationRequest) -> Any:
    from wan_t2i.samplers import make_solver

    return make_solver(request.samplers[0], request.steps, request.shift, request.timesteps or None)


def _handover(pipe: WanT2IPipeline, request: GenerationRequest, diag: Diagnostics) -> int | None:
    from wan_t2i.pipeline import expert_handover

    return expert_handover(pipe.experts[request.models[0]], diag.t)


class ForwardCounter:
    """Counts the forward calls of every transformer of a pipeline while active (`with counter:`), on every device
    its branches run on (`pipe.replicas`, the first device included)."""

    def __init__(self, pipe: WanT2IPipeline):
        experts = [e for replica in pipe.replicas for e in replica.experts.values()]
        self.modules = list(dict.fromkeys(m for e in experts for m in (e.high, e.low) if m is not None))
        self._lock = threading.Lock()  # replicas run their branches in threads of their own
        self.calls = 0
        self._hooks: list = []

    def _count(self, *_: Any) -> None:
        with self._lock:
            self.calls += 1

    def __enter__(self) -> ForwardCounter:
        self._hooks = [m.register_forward_pre_hook(self._count) for m in self.modules]
        return self

    def __exit__(self, *_: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
