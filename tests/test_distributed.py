"""torchrun over CPU processes (gloo): the data-parallel evaluation gives what one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wan_t2i.evaluate import main, shard

pytestmark = pytest.mark.slow  # two processes each load a model: about half a minute on 2 cores


def test_the_shard_balances_cost_and_is_the_same_every_time():
    costs = [8, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    owners = shard(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in (0, 1)]
    assert sorted(loads) == [9, 9]  # by count it would be 5 and 5 cells, 13 against 5 in cost
    assert owners == shard(costs, 2) and shard(costs, 1) == [0] * len(costs)


def test_torchrun_with_two_cpu_processes_equals_one_process(tiny_wan_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lake at dusk\nmountains under snow\na calm sea\n")
    common = ["--prompts", str(prompts), "--seeds", "0,1", "--sweep", "sampler=flow_unipc,legacy_ddim",
              "--sweep", "steps=2,3", "--teacher_path", str(tiny_wan_dir), "--device", "cpu"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*launch, "-m", "wan_t2i.evaluate", *common, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = sorted(p.name for p in (tmp_path / "two" / "results").iterdir())
    assert ranks == ["rank0.jsonl", "rank1.jsonl"]
    assert all((tmp_path / "two" / "results" / r).read_text().strip() for r in ranks)  # both ranks rendered cells
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert [s["setting"] for s in one] == [s["setting"] for s in two] and len(one) == 4
    for a, b in zip(one, two, strict=True):
        assert a["cells"] == b["cells"] == 6 and a["verdicts"] == b["verdicts"]
        assert a["final_std"]["mean"] == pytest.approx(b["final_std"]["mean"], rel=1e-6)
    cells = sorted(p.name for p in (tmp_path / "one" / "cells").iterdir())
    assert cells == sorted(p.name for p in (tmp_path / "two" / "cells").iterdir()) and len(cells) == 24
    for name in cells:  # same seeds, same images
        a, b = (np.asarray(Image.open(tmp_path / d / "cells" / name)) for d in ("one", "two"))
        assert np.array_equal(a, b), name
