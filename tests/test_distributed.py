"""torchrun over CPU processes (gloo): the data-parallel evaluation gives what one process gives, and a rank killed
mid-run costs only the cells it had not written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_t2i.evaluate import PARTIAL, done_cells, main, shard

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def test_the_shard_balances_cost_and_is_the_same_every_time():
    costs = [8, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    owners = shard(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in (0, 1)]
    assert sorted(loads) == [9, 9]  # by count it would be 5 and 5 cells, 13 against 5 in cost
    assert owners == shard(costs, 2) and shard(costs, 1) == [0] * len(costs)


def evaluation(tmp_path: Path, tiny_wan_dir: Path, prompts: list[str]) -> list[str]:
    """The arguments of an evaluation of `prompts` x 2 seeds x 2 samplers x 2 step counts, without --out."""
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return ["--prompts", str(path), "--seeds", "0,1", "--sweep", "sampler=flow_unipc,legacy_ddim",
            "--sweep", "steps=2,3", "--teacher_path", str(tiny_wan_dir), "--device", "cpu"]  # fmt: skip


def failed(done: subprocess.CompletedProcess | subprocess.Popen, stderr: str) -> str:
    """What a failed torchrun said: the workers' own tracebacks first, then the launcher's summary."""
    lines = [line for line in stderr.splitlines() if "cells:" not in line and "Loading weights" not in line]
    return f"exit {done.returncode}\n" + "\n".join(lines)[-6000:]


def assert_same_evaluation(one: Path, two: Path, cells: int) -> None:
    """The same summary and the same cell files in both folders, the same images up to rounding: a rank batches
    fewer cells into one forward than one process does, which may move a pixel by 1/255."""
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert [s["setting"] for s in a] == [s["setting"] for s in b] and len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert x["cells"] == y["cells"] == cells // 4 and x["verdicts"] == y["verdicts"]
        assert x["final_std"]["mean"] == pytest.approx(y["final_std"]["mean"], rel=1e-6)
    names = sorted(p.name for p in (one / "cells").iterdir())
    assert names == sorted(p.name for p in (two / "cells").iterdir()) and len(names) == cells
    for name in names:  # same seeds, same images
        x, y = (np.asarray(Image.open(d / "cells" / name), dtype=np.int16) for d in (one, two))
        assert np.abs(x - y).max() <= 1, name


@pytest.mark.slow  # two processes each load a model: about half a minute on 2 cores
def test_torchrun_with_two_cpu_processes_equals_one_process(tiny_wan_dir, tmp_path):
    common = evaluation(tmp_path, tiny_wan_dir, ["a lake at dusk", "mountains under snow", "a calm sea"])
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run([*LAUNCH, "-m", "wan_t2i.evaluate", *common, "--out", str(tmp_path / "two")],
                          env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, failed(done, done.stderr)
    ranks = sorted(p.name for p in (tmp_path / "two" / "results").iterdir())
    assert ranks == ["rank0.jsonl", "rank1.jsonl"]
    assert all((tmp_path / "two" / "results" / r).read_text().strip() for r in ranks)  # both ranks rendered cells
    assert_same_evaluation(tmp_path / "one", tmp_path / "two", cells=24)


def worker_pid(launcher: int, rank: int) -> int | None:
    """The process id of torchrun's worker of `rank` (a child of the launcher with RANK=rank), once it runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environment = (stat.parent / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, IndexError, ValueError):  # a process that ended while we looked
            continue
        if f"RANK={rank}".encode() in environment:
            return int(stat.parent.name)
    return None


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow  # one process, then two runs of two processes: about a minute on 2 cores
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_rank_killed_mid_run_resumes_from_what_is_on_disk(tiny_wan_dir, tmp_path):
    """SIGKILL rank 1 of a torchrun evaluation once it has written some of its cells (torchrun then stops rank 0
    and fails), rerun the same command: the merge equals one process's, and no cell written before was rendered
    again. A line and an image cut short by a kill mid-write (too brief a moment to hit by a signal) are left as a
    kill would leave them."""
    prompts = ["a lake at dusk", "mountains under snow", "a calm sea", "a green field", "a city at night", "a desert"]
    common = evaluation(tmp_path, tiny_wan_dir, prompts)
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    out = tmp_path / "two"
    command = [*LAUNCH, "-m", "wan_t2i.evaluate", *common, "--out", str(out)]
    log = (tmp_path / "first.log").open("w+")
    launcher = subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        rank1, deadline = None, time.monotonic() + 300
        while lines(out / "results" / "rank1.jsonl") == 0 and launcher.poll() is None and time.monotonic() < deadline:
            rank1 = rank1 or worker_pid(launcher.pid, 1)
            time.sleep(0.01)
        assert rank1 is not None and launcher.poll() is None, "rank 1 never started or it finished before the kill"
        os.kill(rank1, signal.SIGKILL)  # a real rank, dead at once, mid-run
        assert launcher.wait(timeout=120) != 0  # torchrun stops the other rank and reports the failure
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    log.seek(0)
    assert 0 < lines(out / "results" / "rank1.jsonl") < 24, log.read()[-3000:]  # rank 1's share: 24 of 48 cells
    written = done_cells(out)
    before = {name: (out / "cells" / f"{name}.png").stat() for name in written}
    with (out / "results" / "rank1.jsonl").open("ab") as f:  # a results line cut short by a kill mid-write
        f.write(b'{"id": "p0005_seed-1_sampler-flow_unipc_st')
    (out / "cells" / f".a-cell.png.{rank1}{PARTIAL}").write_bytes(b"\x89PNG\r\n")  # an image cut short
    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, failed(again, again.stderr)
    reports = re.findall(r"rank (\d)/2: (\d+) cells rendered, (\d+) already done", again.stdout)
    assert sorted(int(rank) for rank, _, _ in reports) == [0, 1], again.stdout
    assert sum(int(skipped) for _, _, skipped in reports) == len(written)
    assert_same_evaluation(tmp_path / "one", out, cells=48)
    for name, stat in before.items():  # written before the kill: not rendered again
        now = (out / "cells" / f"{name}.png").stat()
        assert (now.st_mtime_ns, now.st_ino) == (stat.st_mtime_ns, stat.st_ino), name


@pytest.mark.slow  # two torchrun launches and the pair on two CPU devices: 1-3 minutes on 2 cores
def test_the_multi_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path):
    """`benchmarks.multi_gpu --smoke`: its torchrun runs for 1 and 2 ranks and the pair split over two devices, with
    tiny models, all written to a record folder, so that the GPU benchmark cannot rot while no GPU runs it."""
    record = tmp_path / "record"
    command = [sys.executable, "-m", "benchmarks.multi_gpu", "--smoke", "--models", "1.3b", "--record", str(record)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, failed(done, done.stderr + done.stdout)
    results = json.loads((record / "results.json").read_text())
    assert results["errors"] == [] and results["skipped"] == [], results["errors"]
    one, two = (results["items"][f"throughput/1.3b@64x64/n{n}"] for n in (1, 2))
    assert one["cells"] == one["rows"] == two["cells"] == two["rows"] == 4 and two["gpus"] == 2
    assert len(two["ranks"]) == 2 and all(rank["rendered"] > 0 for rank in two["ranks"])  # both ranks worked
    assert two["cells_compared"] == 4 and two["max_pixel_diff"] <= 1 and two["speedup"] > 0
    pair = results["items"]["pair/1.3b@64x64"]
    assert pair["devices"] == ["cpu", "cpu"] and pair["max_pixel_diff"] <= 1
    assert min(pair["one_s"], pair["pair_one_device_s"], pair["median_s"]) > 0
    text = (record / "RESULTS.md").read_text()
    assert "| 1.3b@64x64 | 2 | 4 |" in text and "the pair over two GPUs <= 1.1x one image (1.3b@64x64)" in text
    facts = json.loads((record / "record.json").read_text())
    assert facts["command"] == f"python -m benchmarks.multi_gpu --smoke --models 1.3b --record {record}"
    assert (record / "torchrun-1.3b-n2.log").is_file() and "pair/1.3b@64x64 -> " in (record / "run.log").read_text()
