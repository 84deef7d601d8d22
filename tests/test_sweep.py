"""Sweeps: each cell equals the single run with its settings; cells that share steps share forwards; the tables."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageFont

from wan_t2i.cli import main as cli_main
from wan_t2i.images import read_parameters
from wan_t2i.request import GenerationRequest
from wan_t2i.sweep import MAX_CELLS, ForwardCounter, cell_forwards, iter_groups, make_cells, parse_axis
from wan_t2i.sweep_grid import BAD, EDGE, GOOD, text_tile

PROMPT = "a lake at dusk"
NEGATIVE = 'blurry, "washed out"\nlow quality'  # a comma, quotes and a line break: what CSV must quote


@pytest.fixture(scope="module")
def teacher_pipe(tiny_wan_dir, tmp_path_factory):
    """A student of other weights (seed 7) beside the tiny model, loaded as its teacher."""
    from conftest import tiny_transformer

    from wan_t2i.pipeline import WanT2IPipeline

    folder = tmp_path_factory.mktemp("student")
    tiny_transformer(seed=7).save_pretrained(folder)
    return WanT2IPipeline.from_pretrained(folder, tiny_wan_dir, device="cpu", with_teacher=True)


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
        {"timesteps": [(1000, 750, 500, 250), (999, 500)], "sampler": ["flow_unipc", "legacy_ddim"]},
    ],
    ids=["shift-x-sampler", "guidance-x-seed-x-sampler", "timesteps-x-sampler"],
)
def test_every_cell_equals_the_single_run_with_its_settings(tiny_pipe, axes):
    request = tiny_pipe.request(PROMPT, seed=5, steps=4, guidance_scale=3.0)
    sweep = tiny_pipe.sweep(request, axes, max_rows=5)  # 5 rows: groups are cut, so batching across groups is tested
    assert len(sweep.cells) == np.prod([len(v) for v in axes.values()])
    assert sweep.cell_forwards == each_cell_is_its_single_run(tiny_pipe, sweep)


def each_cell_is_its_single_run(pipe, sweep) -> int:
    """Render every cell alone and compare; returns the forwards the single runs made."""
    alone_forwards = 0
    for cell in sweep.cells:
        result, forwards = single_run(pipe, cell.request)
        alone_forwards += forwards
        assert np.abs(pixels(cell.image) - pixels(result.image)).max() <= 1, cell.values
        assert cell.diagnostics.std_ratio == pytest.approx(result.diagnostics.std_ratio, rel=1e-3)
        assert cell.parameters == result.parameters
    return alone_forwards  # the count the sweep reports must be what single runs really make


def test_a_model_axis_renders_each_cell_on_its_own_transformer(teacher_pipe):
    request = teacher_pipe.request(PROMPT, seed=5, steps=3)
    sweep = teacher_pipe.sweep(request, {"model": ["student", "teacher"], "sampler": ["flow_unipc", "legacy_ddim"]})
    assert [cell.request.models for cell in sweep.cells] == [("student",)] * 2 + [("teacher",)] * 2
    assert sweep.cell_forwards == each_cell_is_its_single_run(teacher_pipe, sweep)
    # The two transformers give other latents (the tiny VAE decodes both to nearly the same colours), so the
    # comparison of std ratios above would catch a cell rendered on the wrong one.
    student, teacher = sweep.cells[0].diagnostics, sweep.cells[2].diagnostics
    assert student.std_ratio != pytest.approx(teacher.std_ratio, rel=1e-2)
    assert [row["transformer"] for row in sweep.rows()] == ["student", "student", "teacher", "teacher"]
    # One group of four cells: per step one forward of each transformer (the two never share one), not four.
    assert sweep.forwards == 2 * 3 < sweep.cell_forwards


def test_progress_counts_each_groups_own_loop_over_cells_and_steps(tiny_pipe):
    grids = [(1000, 750, 500, 250), (999, 500)]  # explicit timesteps: each loop runs its grid's steps
    request = tiny_pipe.request(PROMPT, seed=5, steps=9, guidance_scale=1.0)
    seen, statuses = [], []
    tiny_pipe.sweep(
        request,
        {"timesteps": grids, "sampler": ["flow_unipc", "legacy_ddim"]},
        progress=lambda done, total: seen.append((done, total)),
        on_progress=statuses.append,
    )
    total = sum(len(grid) for grid in grids)  # two groups: the 4-step grid's two cells, then the 2-step grid's
    assert seen == [(done, total) for done in range(1, total + 1)]
    assert [(s.done, s.total) for s in statuses] == seen
    assert [(s.step, s.steps, s.cells_done, s.group_cells, s.cells) for s in statuses] == [
        *[(step, 4, 0, 2, 4) for step in range(1, 5)],
        *[(step, 2, 2, 2, 4) for step in range(1, 3)],
    ]
    assert (str(statuses[0]), str(statuses[-1])) == ("cells 1-2/4 · step 1/4", "cells 3-4/4 · step 2/2")


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
    request = tiny_pipe.request(PROMPT, seed=9, steps=3, negative_prompt=NEGATIVE)
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
        assert row["negative_prompt"] == stored["negative_prompt"] == NEGATIVE
        assert set(cell.parameters) <= set(row) and (row["prompt"], row["seed"]) == (PROMPT, "9")
        assert GenerationRequest.from_parameters(stored) == cell.request  # the JSON row holds every parameter
    assert {c["verdict_word"] for c in document["cells"]} == {"ok", "garbage"}  # the legacy loop's cells are garbage
    assert document["forwards"] == sweep.forwards and document["cell_forwards"] == sweep.cell_forwards

    assert read_parameters(written["grid"])["sweep"] == {"shift": [2, 6], "sampler": ["flow_unipc", "legacy_ddim"]}
    cell_png = Image.open(written["cell 3"])
    again = tiny_pipe.generate(GenerationRequest.from_png(written["cell 3"]))
    assert np.abs(pixels(next(iter(again.images.values()))) - pixels(cell_png)).max() <= 1


def test_the_grid_labels_rows_and_columns_captions_cells_and_edges_them_by_verdict(tiny_pipe, tmp_path):
    request = tiny_pipe.request(PROMPT, seed=2, steps=3)
    axes = {"seed": [2, 3], "shift": [3.0, 6.0], "sampler": ["flow_unipc", "legacy_ddim"]}
    sweep = tiny_pipe.sweep(request, axes)
    grid, layout = sweep.grid(cell_size=64), sweep.layout(cell_size=64)
    assert grid.size == layout.size
    font = ImageFont.load_default(size=layout.font_size)

    def region(box):
        return np.asarray(grid.crop(box), dtype=np.int16)

    def drawn(text, box):
        return np.asarray(text_tile(text, (box[2] - box[0], box[3] - box[1]), font), dtype=np.int16)

    columns = ["sampler = flow_unipc", "sampler = legacy_ddim"]
    rows = ["seed = 2\nshift = 3", "seed = 2\nshift = 6", "seed = 3\nshift = 3", "seed = 3\nshift = 6"]
    captions = [f"{c.verdict_word} · std {c.diagnostics.std_ratio:.2g}x" for c in sweep.cells]
    boxes = [(text, layout.column_label(c), columns) for c, text in enumerate(columns)]
    boxes += [(text, layout.row_label(r), rows) for r, text in enumerate(rows)]
    boxes += [(text, layout.caption_box(*divmod(i, 2)), captions) for i, text in enumerate(captions)]
    for text, box, texts in boxes:
        shown = region(box)
        assert (shown < 100).any(), text  # something is written there ...
        assert np.array_equal(shown, drawn(text, box)), text  # ... and it is this text
        for other in set(texts) - {text}:
            assert not np.array_equal(shown, drawn(other, box)), (text, other)
        border = np.concatenate([shown[0], shown[-1], shown[:, 0], shown[:, -1]])
        assert (border == 255).all(), text  # the text fits its box: nothing cut off at its edge

    assert {cell.verdict_word for cell in sweep.cells} == {"ok", "garbage"}  # the legacy loop's cells are garbage
    assert BAD[0] > 2 * max(BAD[1:]) and GOOD[1] > 2 * max(GOOD[0], GOOD[2])  # red and green
    for i, cell in enumerate(sweep.cells):
        framed = region(layout.cell(*divmod(i, 2)))
        band = np.ones(framed.shape[:2], dtype=bool)
        band[EDGE:-EDGE, EDGE:-EDGE] = False
        assert (framed[band] == (GOOD if cell.verdict_word == "ok" else BAD)).all(), cell.values
        assert np.array_equal(framed[EDGE:-EDGE, EDGE:-EDGE], pixels(cell.image.resize((64, 64))))

    stored = read_parameters(sweep.write(tmp_path / "grid.png")["grid"])
    assert stored["sweep"] == {"seed": [2, 3], "shift": [3, 6], "sampler": ["flow_unipc", "legacy_ddim"]}
    assert (stored["request"]["prompt"], stored["request"]["steps"], stored["request"]["seed"]) == (PROMPT, 3, 2)


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


@pytest.mark.parametrize(
    ("axes", "timesteps", "message"),
    [
        ({"steps": [2, 4], "timesteps": [(999, 500)]}, (), "explicit timesteps replace steps and shift, so sweeping "
         "steps beside timesteps changes nothing"),
        ({"shift": [3.0, 5.0], "timesteps": [(999, 500)]}, (), "so sweeping shift beside timesteps"),
        ({"steps": [2, 4]}, (999, 500), r"the request has explicit timesteps \(999,500\), which replace steps"),
    ],
)  # fmt: skip
def test_steps_or_shift_beside_explicit_timesteps_are_refused(tiny_pipe, axes, timesteps, message):
    request = tiny_pipe.request(PROMPT, seed=1, timesteps=timesteps)
    with pytest.raises(ValueError, match=message):
        tiny_pipe.sweep(request, axes)


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
    printed, bar = capsys.readouterr()
    assert "4 cells" in printed and "GARBAGE" in printed and "cell by cell" in printed
    assert "sweep: cells 1-4/4 · step 3/3" in bar and "| 3/3 [" in bar  # one group of four cells, three steps
    names = {p.name for p in out.parent.iterdir()}
    assert names == {"grid.png", "sweep.csv", "sweep.json", "grid_00_shift-3_sampler-flow-unipc.png",
                     "grid_01_shift-3_sampler-legacy-ddim.png", "grid_02_shift-7_sampler-flow-unipc.png",
                     "grid_03_shift-7_sampler-legacy-ddim.png"}  # fmt: skip
    assert cli_main([*argv[:-2], "--sweep", "shift=3", "--output_path", str(out)]) == 2  # shift given twice
    assert "is given twice" in capsys.readouterr().err
    assert cli_main([*argv, "--compare"]) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sweep", "seed=" + ",".join(map(str, range(65)))], "the sweep has 65 cells; the limit is 64 (--max_cells)"),
        (["--sweep", "shift=1,2", "--sweep", "seed=1,2", "--max_cells", "3"], "4 cells; the limit is 3 (--max_cells)"),
        (["--sweep", "shift=1,2", "--max_cells", "0"], "--max_cells must be at least 1, got 0"),
        (["--sweep", "steps=2,4", "--sweep", "timesteps=999,500"], "so sweeping steps beside timesteps"),
    ],
)  # fmt: skip
def test_the_cli_refuses_a_bad_sweep_in_one_line_before_the_model_loads(tmp_path, capsys, flags, message):
    missing = tmp_path / "no-model"  # never looked for: the sweep is refused first
    argv = ["--teacher_path", str(missing), "--prompt", PROMPT, "--output_path", str(tmp_path / "g.png"), *flags]
    assert cli_main(argv) == 2
    printed, error = capsys.readouterr()
    assert printed == "" and error.startswith("error: ") and error.count("\n") == 1  # one line, no progress bar
    assert message in error, error
    assert not (tmp_path / "g.png").exists()


def test_a_bad_sweep_is_refused_before_torch_loads():
    from test_cli import probe_startup

    too_many = ["--prompt", PROMPT, "--sweep", "seed=1,2,3", "--max_cells", "2"]
    assert probe_startup("wan_t2i.cli", too_many) == {"status": 2, "imported": []}


def test_a_raised_max_cells_lets_the_sweep_through_to_the_model(tmp_path, capsys):
    missing = tmp_path / "no-model"
    seeds = "seed=" + ",".join(map(str, range(65)))
    argv = ["--teacher_path", str(missing), "--prompt", PROMPT, "--sweep", seeds, "--max_cells", "65"]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert "no-model" in error and "limit" not in error  # past the limit check, stopped at the missing model
