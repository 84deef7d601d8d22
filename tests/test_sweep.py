"""Sweeps: each cell equals the single run with its settings; cells that share steps share forwards; the tables."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from wan_t2i.cli import main as cli_main
from wan_t2i.images import read_parameters
from wan_t2i.request import GenerationRequest
from wan_t2i.sweep import MAX_CELLS, ForwardCounter, cell_forwards, iter_groups, make_cells, parse_axis

PROMPT = "a lake at dusk"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def single_run(pipe, request: GenerationRequest):
    counter = ForwardCounter(pipe)
    with counter:
        generation = pipe.generate(request)
    (result,) = generation.results.values()
    return result, counter.calls


@pytest.mark.parametrize(
    "axes",
    [
        {"shift": [3.0, 7.0], "sampler": ["flow_unipc", "legacy_ddim", "flow_dpmpp"]},
        {"guidance": [1.0, 4.0], "seed": [1, 2], "sampler": ["flow_euler", "flow_lcm"]},
        {"steps": [3, 5], "timesteps": [(1000, 750, 500, 250), (999, 500)], "sampler": ["flow_unipc"]},
    ],
    ids=["shift-x-sampler", "guidance-x-seed-x-sampler", "steps-and-timesteps"],
)
def test_every_cell_equals_the_single_run_with_its_settings(tiny_pipe, axes):
    request = tiny_pipe.request(PROMPT, seed=5, steps=4, guidance_scale=3.0)
    sweep = tiny_pipe.sweep(request, axes, max_rows=5)  # 5 rows: groups are cut, so batching across groups is tested
    assert len(sweep.cells) == np.prod([len(v) for v in axes.values()])
    alone_forwards = 0
    for cell in sweep.cells:
        result, forwards = single_run(tiny_pipe, cell.request)
        alone_forwards += forwards
        assert np.abs(pixels(cell.image) - pixels(result.image)).max() <= 1, cell.values
        assert cell.diagnostics.std_ratio == pytest.approx(result.diagnostics.std_ratio, rel=1e-3)
        assert cell.parameters == result.parameters
    assert sweep.cell_forwards == alone_forwards  # the count the sweep reports is what single runs really make


def test_cells_that_share_steps_share_forwards(tiny_pipe):
    request = tiny_pipe.request(PROMPT, seed=5, steps=6)
    sweep = tiny_pipe.sweep(request, {"shift": [3.0, 5.0, 7.0], "sampler": ["flow_unipc", "flow_euler"]}, max_rows=64)
    assert sweep.cell_forwards == 6 * 6
    assert sweep.forwards == 6  # six cells in lock-step: one forward per step
    cut = tiny_pipe.sweep(request, {"shift": [3.0, 5.0, 7.0], "sampler": ["flow_unipc", "flow_euler"]}, max_rows=4)
    guided_rows = 2  # the tiny model's guidance is on: each cell takes a conditional and an unconditional row
    assert cut.forwards == 6 * int(np.ceil(6 * guided_rows / 4)) and cut.forwards < cut.cell_forwards


def test_groups_follow_step_counts_and_the_row_budget(tiny_pipe):
    request = tiny_pipe.request(PROMPT, seed=1, steps=4, guidance_scale=1.0)
    cells = make_cells(request, {"steps": [2, 4], "shift": [3.0, 5.0, 7.0]})
    groups = iter_groups(cells, 2)
    assert [[c.request.steps for c in g] for g in groups] == [[2, 2], [2], [4, 4], [4]]


def test_the_tables_round_trip_and_each_cell_png_reproduces_alone(tiny_pipe, tmp_path):
    request = tiny_pipe.request(PROMPT, seed=9, steps=3)
    sweep = tiny_pipe.sweep(request, {"shift": [2.0, 6.0], "sampler": ["flow_unipc", "legacy_ddim"]})
    written = sweep.write(tmp_path / "grid.png")
    with open(written["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    document = json.loads(written["json"].read_text())
    assert len(table) == len(document["cells"]) == 4
    for row, cell, stored in zip(table, sweep.cells, document["cells"], strict=True):
        assert float(row["std_ratio"]) == pytest.approx(cell.diagnostics.std_ratio)
        assert float(row["final_std"]) == pytest.approx(cell.diagnostics.final_std)
        assert row["verdict_word"] == ("ok" if cell.healthy else "garbage") == stored["verdict_word"]
        assert (row["sampler"], float(row["shift"])) == (cell.values["sampler"], cell.values["shift"])
    assert {c["verdict_word"] for c in document["cells"]} == {"ok", "garbage"}  # the legacy loop's cells are garbage
    assert document["forwards"] == sweep.forwards and document["cell_forwards"] == sweep.cell_forwards

    assert read_parameters(written["grid"])["sweep"] == {"shift": [2, 6], "sampler": ["flow_unipc", "legacy_ddim"]}
    cell_png = Image.open(written["cell 3"])
    again = tiny_pipe.generate(GenerationRequest.from_png(written["cell 3"]))
    assert np.abs(pixels(next(iter(again.images.values()))) - pixels(cell_png)).max() <= 1


def test_the_grid_is_labelled_rows_by_columns(tiny_pipe):
    request = tiny_pipe.request(PROMPT, seed=2, steps=2)
    sweep = tiny_pipe.sweep(request, {"shift": [3.0, 5.0], "sampler": ["flow_unipc", "flow_euler", "legacy_ddim"]})
    grid = sweep.grid(cell_size=64)
    one = tiny_pipe.sweep(request, {"sampler": ["flow_unipc"]}).grid(cell_size=64)
    assert grid.width > 2.5 * one.width - 200 and grid.height > 1.8 * (one.height - 40)


def test_two_expert_cells_report_their_handover(tiny_a14b_dir):
    from wan_t2i.pipeline import WanT2IPipeline

    pipe = WanT2IPipeline.from_pretrained(teacher_path=tiny_a14b_dir, device="cpu")
    sweep = pipe.sweep(pipe.request(PROMPT, seed=3, steps=8), {"shift": [1.0, 12.0]})
    handovers = [cell.diagnostics.expert_handover for cell in sweep.cells]
    alone = [pipe.generate(cell.request).results[cell.request.labels()[0]].diagnostics.expert_handover
             for cell in sweep.cells]  # fmt: skip
    assert handovers == alone and handovers[0] < handovers[1]  # a larger shift keeps the high-noise expert longer
    assert [row["handover_step"] for row in sweep.rows()] == handovers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shift", "a sweep axis is NAME=V1,V2"),
        ("colour=red", "a sweep axis is NAME=V1,V2"),
        ("steps=ten", "sweep axis steps takes integers"),
        ("shift=", "sweep axis shift has no values"),
    ],
)
def test_bad_axes_say_what_an_axis_is(text, message):
    with pytest.raises(ValueError, match=message):
        parse_axis(text)


def test_bad_cells_are_refused_before_anything_renders(tiny_pipe):
    request = tiny_pipe.request(PROMPT, seed=1, steps=2)
    with pytest.raises(ValueError, match=f"the sweep has 65 cells; the limit is {MAX_CELLS}"):
        tiny_pipe.sweep(request, {"seed": list(range(65))})
    with pytest.raises(ValueError, match="unknown sampler 'ddpm'"):
        tiny_pipe.sweep(request, {"sampler": ["flow_unipc", "ddpm"]})
    with pytest.raises(ValueError, match="no teacher transformer is loaded"):
        tiny_pipe.sweep(request, {"model": ["student", "teacher"]})
    with pytest.raises(ValueError, match="repeats a value"):
        tiny_pipe.sweep(request, {"shift": [3.0, 3]})


def test_cell_forwards_skip_the_legacy_loops_last_step(tiny_pipe):
    request = tiny_pipe.request(PROMPT, seed=1, steps=5)
    assert cell_forwards(request) == 5
    assert cell_forwards(tiny_pipe.request(PROMPT, seed=1, steps=5, samplers=["legacy_ddim"])) == 4


def test_the_cli_writes_the_grid_cells_and_tables(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "sweep" / "grid.png"
    argv = ["--teacher_path", str(tiny_wan_dir), "--device", "cpu", "--prompt", PROMPT, "--seed", "4",
            "--num_inference_steps", "3", "--sweep", "shift=3,7", "--sweep", "sampler=flow_unipc,legacy_ddim",
            "--output_path", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 cells" in printed and "GARBAGE" in printed and "cell by cell" in printed
    names = {p.name for p in out.parent.iterdir()}
    assert names == {"grid.png", "sweep.csv", "sweep.json", "grid_00_shift-3_sampler-flow-unipc.png",
                     "grid_01_shift-3_sampler-legacy-ddim.png", "grid_02_shift-7_sampler-flow-unipc.png",
                     "grid_03_shift-7_sampler-legacy-ddim.png"}  # fmt: skip
    assert cli_main([*argv[:-2], "--sweep", "shift=3", "--output_path", str(out)]) == 2  # shift given twice
    assert "is given twice" in capsys.readouterr().err
    assert cli_main([*argv, "--compare"]) == 2
