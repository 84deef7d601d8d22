"""Batch evaluation: many prompts x a sweep, resumable, shardable over ranks, summarised per setting.

    python -m wan_t2i.evaluate --prompts prompts.txt --sweep shift=3,5,7 --sweep sampler=flow_unipc,legacy_ddim \
        --out outputs/eval [--seeds 0,1] [--teacher_path ... --model_path ...]

Each cell (a prompt, a seed and one value per axis) writes `cells/<id>.png` (carrying its parameters) and one JSON
line in `results/rank<r>.jsonl`; a cell already there is skipped, so an interrupted run picks up where it stopped
(a killed rank included: a PNG appears whole or not at all, and a results line cut short is dropped and its cell
rendered again).
Ranks split the cells (`RANK` and `WORLD_SIZE` from the environment, as torchrun sets them, or --rank/--world_size),
balanced by cost (steps x pixels x rows), each rank a deterministic shard: under torchrun
(`torchrun --nproc_per_node N -m wan_t2i.evaluate ...`) the ranks join one process group (NCCL on GPUs, gloo on
CPUs), each on its own GPU, and rank 0 merges once all are done; otherwise `--merge`, run once all ranks are done
(a single rank merges by itself), writes results.csv, summary.json and summary.md: per
setting, the mean and spread of the final latent statistics, the verdict counts, the time, and, on the embedded demo
model, prompt adherence scored by `wan_t2i.demo.analyzer`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from wan_t2i.choices import DTYPES, PRESETS

RESULTS, CELLS = "results", "cells"
PARTIAL = ".partial"  # the suffix of an image being written (`save_whole`)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the prompts file {path}: {error.strerror}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompt: write one per line")
    return prompts


def cell_id(prompt_index: int, cell: Any) -> str:
    """A stable name for a cell: its prompt's index and axis values, and a hash of its whole request (prompt and
    settings), so that a rerun with other settings into the same folder renders anew instead of skipping."""
    from dataclasses import asdict

    from wan_t2i.sweep_axes import slug

    text = "_".join(f"{k}-{slug(v)}" for k, v in cell.values.items())
    digest = hashlib.sha1(json.dumps(asdict(cell.request), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"p{prompt_index:04d}_{text}"[:160] + f"_{digest}"


def rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's shard: the arguments, else RANK / WORLD_SIZE from the environment, else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of world size {world_size}")
    return rank, world_size


def cell_cost(request: Any) -> float:
    """A cell's relative cost: steps x pixels x transformer rows (two where guided)."""
    return request.steps * request.height * request.width * (2 if request.guided else 1)


def shard(costs: Sequence[float], world_size: int) -> list[int]:
    """The rank of each cell: longest first, each to the rank with the least cost so far (ties: the lowest rank).

    Deterministic in the whole plan, so every rank (and a restarted run) computes the same split.
    """
    loads, owners = [0.0] * world_size, [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners


def done_cells(out: Path) -> set[str]:
    """The ids of cells whose image and results line are both written (by any rank)."""
    done = set()
    for path in sorted((out / RESULTS).glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by an interruption: its cell runs again
                continue
            if (out / CELLS / f"{row['id']}.png").is_file():
                done.add(row["id"])
    return done


def run(
    pipe: Any,
    prompts: Sequence[str],
    axes: dict[str, list],
    out: Path,
    *,
    settings: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    score: bool | None = None,
    max_rows: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Render this rank's share of prompts x `axes` into `out`, skipping cells already there.

    `settings` are request settings every cell starts from (steps, shift, seed, ...; the model's defaults else).
    `score` (default: on for the embedded demo model) adds the demo analyzer's prompt adherence to each row.
    Returns counts: cells in all, this rank's, skipped as done, rendered.
    """
    from tqdm.auto import tqdm

    from wan_t2i.sweep import _finite, make_cells, render_cells

    settings = {"seed": 0} | dict(settings or {})
    score = is_demo(pipe) if score is None else score
    (out / CELLS).mkdir(parents=True, exist_ok=True)
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    plan = []  # (global index, prompt index, cell)
    for p, prompt in enumerate(prompts):
        request = pipe.request(prompt, **settings)
        for cell in make_cells(request, axes, max_cells=math.prod(len(v) for v in axes.values())):
            plan.append((len(plan), p, cell))
    owners = shard([cell_cost(cell.request) for _, _, cell in plan], world_size)
    mine = [(p, cell) for index, p, cell in plan if owners[index] == rank]
    done = done_cells(out)
    todo = [(p, cell) for p, cell in mine if cell_id(p, cell) not in done]
    counts = {"cells": len(plan), "this_rank": len(mine), "skipped": len(mine) - len(todo), "rendered": 0}
    with (
        open_results(out / RESULTS / f"rank{rank}.jsonl") as results,
        tqdm(total=len(todo), desc=f"rank {rank}: cells", unit="cell", disable=not progress) as bar,
    ):
        for p in sorted({p for p, _ in todo}):  # one prompt at a time: its cells share one text encoding
            cells = [cell for q, cell in todo if q == p]
            render_cells(pipe, cells, max_rows=max_rows)
            for cell in cells:
                identifier = cell_id(p, cell)
                row = {"id": identifier, "prompt_index": p, "prompt": prompts[p]} | cell.row()
                if score:
                    row |= adherence(prompts[p], cell.image)
                save_whole(cell.image, out / CELLS / f"{identifier}.png", cell.parameters)
                append_line(results, json.dumps(_finite(row), allow_nan=False))  # the cell counts as done from here
                counts["rendered"] += 1
                bar.update(1)
    return counts


def save_whole(image: Any, path: Path, parameters: dict) -> None:
    """The PNG written beside `path` and renamed onto it: a process killed while writing leaves no cut-short image
    under a cell's name, only a `.partial` file that the merge removes."""
    from wan_t2i.images import save_png

    partial = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    save_png(image, partial, parameters)
    os.replace(partial, path)


def open_results(path: Path) -> BinaryIO:
    """This rank's results file, for appending; a last line cut short by a killed process is cut off first, so
    that the next line starts on a line of its own (appended to the fragment, it would be unreadable too)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
    return open(path, "ab")


def append_line(results: BinaryIO, line: str) -> None:
    """One line in one write, flushed and synced: once this returns, a kill or a crash cannot take it back."""
    results.write(line.encode() + b"\n")
    results.flush()
    os.fsync(results.fileno())


def is_demo(pipe: Any) -> bool:
    from wan_t2i.demo.card import NAME

    return pipe.defaults.name == NAME


def adherence(prompt: str, image: Any) -> dict[str, Any]:
    """The demo analyzer's reading of `image` against what `prompt` asks for: per attribute whether it is right
    (`matches`), and the share right (`adherence`)."""
    from wan_t2i.demo.analyzer import analyze_image, attribute_matches
    from wan_t2i.demo.scenes import requested_attributes

    requested = requested_attributes(prompt)
    if not requested:
        return {"adherence": None, "matches": {}}
    matches = attribute_matches(requested, analyze_image(image))
    return {"adherence": sum(matches.values()) / len(matches), "matches": matches}


def merge(out: Path, axes: Sequence[str]) -> dict[str, Any]:
    """Every rank's rows into results.csv, and a summary per setting (the values of `axes`, over every prompt and
    seed) into summary.json/.md."""
    axes = [a for a in axes if a != "seed"]
    rows = {}
    for path in sorted((out / RESULTS).glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[row["id"]] = row  # a cell rendered twice (a rerun) counts once
    if not rows:
        raise ValueError(f"no results in {out / RESULTS}: run the evaluation first")
    for partial in (out / CELLS).glob(f".*{PARTIAL}"):  # images a killed rank left half-written
        partial.unlink(missing_ok=True)
    table = sorted(rows.values(), key=lambda r: r["id"])
    columns = list(dict.fromkeys(k for row in table for k in row))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    settings: dict[tuple, list[dict]] = {}
    for row in table:
        settings.setdefault(tuple(row.get(f"axis_{a}") for a in axes), []).append(row)
    summary = []
    for values, members in settings.items():
        entry = {"setting": dict(zip(axes, values, strict=True)), "cells": len(members)}
        for key in ("final_std", "final_mean", "std_ratio", "seconds", "adherence"):
            numbers = [r[key] for r in members if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
            if numbers:
                spread = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
                entry[key] = {"mean": statistics.fmean(numbers), "std": spread}
        entry["verdicts"] = {w: sum(r["verdict_word"] == w for r in members) for w in ("ok", "garbage")}
        summary.append(entry)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary, axes))
    return {"rows": len(table), "settings": summary}


def summary_markdown(summary: list[dict], axes: Sequence[str]) -> str:
    scored = any("adherence" in entry for entry in summary)
    head = [*axes, "cells", "ok / garbage", "final std", "std ratio", "s / cell"] + (["adherence"] if scored else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary:

        def stat(key: str, fmt: str, e: dict = e) -> str:
            s = e.get(key)
            return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}" if s else "–"

        cells = [str(e["setting"][a]) for a in axes] + [
            str(e["cells"]),
            f"{e['verdicts']['ok']} / {e['verdicts']['garbage']}",
            stat("final_std", ".3g"),
            stat("std_ratio", ".3g"),
            stat("seconds", ".2f"),
        ]
        if scored:
            cells.append(stat("adherence", ".0%") if e.get("adherence") else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def join_process_group(device: str | None) -> str | None:
    """Under torchrun (MASTER_ADDR set): join the process group, NCCL on GPUs and gloo on CPUs, and return this
    rank's device (cuda:LOCAL_RANK unless `device` says otherwise). None where no launcher set up a group."""
    if "MASTER_ADDR" not in os.environ:
        return None
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if on_gpu and (device is None or device == "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if on_gpu else "gloo")
    return device or "cpu"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wan_t2i.evaluate",
        description="Render many prompts x a sweep into a folder (resumable, shardable), then summarise per setting.",
    )
    parser.add_argument("--prompts", required=True, help="a text file, one prompt per line (# comments)")
    parser.add_argument("--sweep", action="append", required=True, metavar="AXIS=V1,V2", help="as in wan_t2i")
    parser.add_argument("--out", required=True, help="the folder; cells already in it are skipped")
    parser.add_argument("--seeds", default="0", help="seeds per prompt, e.g. 0,1,2 (a seed axis)")
    parser.add_argument("--num_inference_steps", type=int)
    parser.add_argument("--shift", type=float)
    parser.add_argument("--guidance_scale", type=float)
    parser.add_argument("--model_path")
    parser.add_argument("--teacher_path", help="default: the embedded demo model")
    parser.add_argument("--with_teacher", action="store_true")
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=DTYPES)
    parser.add_argument("--performance", choices=PRESETS, default="default")
    parser.add_argument("--rank", type=int, help="this process's shard (default: RANK, else 0)")
    parser.add_argument("--world_size", type=int, help="shards in all (default: WORLD_SIZE, else 1)")
    parser.add_argument("--merge", action="store_true", help="only merge the ranks' results into the summary")
    parser.add_argument("--no_score", action="store_true", help="skip the demo analyzer's prompt adherence")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        from wan_t2i.sweep_axes import parse_axis

        axes = dict(parse_axis(text) for text in args.sweep)
        if "seed" in axes:
            raise ValueError("give seeds with --seeds, not as a sweep axis")
        axes = {"seed": [int(s) for s in args.seeds.split(",") if s.strip()]} | axes
        rank, world_size = rank_and_world(args.rank, args.world_size)
        launched = join_process_group(args.device) if world_size > 1 and not args.merge else None
        if launched is not None:
            args.device = launched
        if not args.merge:
            prompts = read_prompts(Path(args.prompts))
            from wan_t2i.pipeline import WanT2IPipeline

            pipe = WanT2IPipeline.from_pretrained(
                args.model_path,
                args.teacher_path,
                device=args.device,
                dtype=args.dtype,
                with_teacher=args.with_teacher,
                performance=args.performance,
            )
            settings = {
                k: v
                for k, v in dict(
                    steps=args.num_inference_steps, shift=args.shift, guidance_scale=args.guidance_scale
                ).items()
                if v is not None
            }
            counts = run(pipe, prompts, axes, out, settings=settings, rank=rank, world_size=world_size,
                         score=False if args.no_score else None)  # fmt: skip
            print(
                f"rank {rank}/{world_size}: {counts['rendered']} cells rendered, {counts['skipped']} already done, "
                f"of {counts['this_rank']} ({counts['cells']} in all)"
            )
        if launched is not None:
            import torch.distributed as dist

            dist.barrier()  # every rank's cells are on disk
            dist.destroy_process_group()
        if args.merge or world_size == 1 or (launched is not None and rank == 0):
            merged = merge(out, list(axes))
            print(f"{merged['rows']} cells in {out / 'results.csv'}; per setting: {out / 'summary.md'}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
