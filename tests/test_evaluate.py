"""The batch runner: prompts x a sweep into a folder, resumable, split over ranks, merged into one summary."""

from __future__ import annotations

import csv
import json

import pytest

from wan_t2i.evaluate import done_cells, main, merge, rank_and_world, read_prompts, run

PROMPTS = ["a lake at dusk", "mountains under snow", "a calm sea"]
AXES = {"seed": [0, 1], "sampler": ["flow_unipc", "legacy_ddim"]}


def test_a_rerun_skips_every_cell_already_written(tiny_pipe, tmp_path):
    first = run(tiny_pipe, PROMPTS[:2], AXES, tmp_path, settings={"steps": 2}, progress=False)
    assert first == {"cells": 8, "this_rank": 8, "skipped": 0, "rendered": 8}
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    (tmp_path / "cells" / sorted(stamps)[0]).unlink()  # as if interrupted before that cell's image was written
    again = run(tiny_pipe, PROMPTS[:2], AXES, tmp_path, settings={"steps": 2}, progress=False)
    assert again == {"cells": 8, "this_rank": 8, "skipped": 7, "rendered": 1}
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    assert after.keys() == stamps.keys()
    assert [n for n in stamps if after[n] != stamps[n]] == [sorted(stamps)[0]]  # only the missing one was redone
    summary = merge(tmp_path, list(AXES))
    assert summary["rows"] == 8  # the redone cell counts once


def test_ranks_split_the_cells_and_the_merge_equals_one_rank(tiny_pipe, tmp_path):
    single, split = tmp_path / "single", tmp_path / "split"
    run(tiny_pipe, PROMPTS, AXES, single, settings={"steps": 2}, progress=False)
    counts = [run(tiny_pipe, PROMPTS, AXES, split, settings={"steps": 2}, rank=r, world_size=2, progress=False)
              for r in (0, 1)]  # fmt: skip
    assert [c["this_rank"] for c in counts] == [6, 6]
    lines = [(split / "results" / f"rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    ids = [{json.loads(line)["id"] for line in rank} for rank in lines]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == done_cells(single)
    one, two = merge(single, list(AXES)), merge(split, list(AXES))
    assert [s["setting"] for s in one["settings"]] == [{"sampler": "flow_unipc"}, {"sampler": "legacy_ddim"}]
    for a, b in zip(one["settings"], two["settings"], strict=True):
        assert a["cells"] == b["cells"] == 6 and a["verdicts"] == b["verdicts"]
        assert a["final_std"]["mean"] == pytest.approx(b["final_std"]["mean"], rel=1e-6)
    with open(split / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12


def test_rank_and_world_size_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world(None, None) == (3, 4)
    assert rank_and_world(0, 1) == (0, 1)
    with pytest.raises(ValueError, match="rank must be in 0..world_size-1"):
        rank_and_world(4, 4)


def test_prompt_files_skip_comments_and_must_hold_a_prompt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\n\na lake\n  mountains  \n")
    assert read_prompts(path) == ["a lake", "mountains"]
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts(path)


def test_the_demo_model_is_scored_for_adherence_from_the_command_line(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A serene lake at sunset\n")
    out = tmp_path / "eval"
    argv = ["--prompts", str(prompts), "--sweep", "sampler=flow_unipc,legacy_ddim", "--num_inference_steps", "8",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_sampler = {s["setting"]["sampler"]: s for s in summary}
    assert by_sampler["flow_unipc"]["verdicts"] == {"ok": 1, "garbage": 0}
    assert by_sampler["legacy_ddim"]["verdicts"] == {"ok": 0, "garbage": 1}
    assert by_sampler["flow_unipc"]["adherence"]["mean"] > by_sampler["legacy_ddim"]["adherence"]["mean"]
    assert "adherence" in (out / "summary.md").read_text()
    assert main(argv) == 0 and "0 cells rendered, 2 already done" in capsys.readouterr().out


@pytest.mark.slow  # over 5 s on 2 cores
def test_the_demo_evaluation_is_one_use_of_the_runner(demo_pipe, tmp_path):
    from wan_t2i.demo.analyzer import analyze_image, attribute_matches
    from wan_t2i.demo.evaluate import score_sampler_runs
    from wan_t2i.demo.scenes import requested_attributes

    prompts = ["A serene lake at sunset", "snowy peaks under a night sky"]
    rows = score_sampler_runs(demo_pipe, prompts, [3], ["legacy_ddim", "flow_unipc"], tmp_path, steps=6)
    assert len(list((tmp_path / "cells").iterdir())) == 4
    for name in ("legacy_ddim", "flow_unipc"):
        for prompt, row in zip(prompts, rows[name], strict=True):
            result = demo_pipe.generate(prompt, samplers=[name], seed=3, steps=6)[name]
            assert row["matches"] == attribute_matches(requested_attributes(prompt), analyze_image(result.image))
            assert row["std_ratio"] == pytest.approx(result.diagnostics.std_ratio, rel=1e-3)
    again = score_sampler_runs(demo_pipe, prompts, [3], ["legacy_ddim", "flow_unipc"], tmp_path, steps=6)
    assert again == rows  # resumed from the folder: nothing rendered twice, the same rows
