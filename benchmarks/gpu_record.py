"""Where a GPU benchmark run goes: its record folder (results.json, RESULTS.md, run.log, record.json), the commit and
machine it measured, and `Bench`, which runs each measurement within the time budget and saves after every one."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import torch

from benchmarks.gpu_measure import log, peak_gb, reset_peak
from benchmarks.gpu_models import Prompts, Scale
from benchmarks.gpu_report import write_results_md
from wan_t2i.performance import GB

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "records"
RECORD_FIELDS = ("date", "device", "command", "commit", "dirty")  # what record.json states about a run
VENDOR_WORDS = {"nvidia", "geforce", "tesla", "amd", "radeon"}


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """HEAD's commit and whether the tree has uncommitted changes outside the records; (None, None) without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/records"],
            cwd=root, capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(name: str) -> str:
    """A device's name as a folder name: `NVIDIA H100 80GB HBM3` -> `h100`, `NVIDIA GeForce RTX 4090` -> `rtx-4090`."""
    if name.startswith("CPU"):
        return "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in VENDOR_WORDS]
    first = next((i for i, word in enumerate(words) if any(c.isdigit() for c in word)), len(words) - 1)
    return "-".join(words[: first + 1]) or "gpu"


def new_record_dir(records: Path = RECORDS) -> Path:
    """records/<today>-<device>, with -2, -3, ... when that folder exists already."""
    base = f"{datetime.date.today().isoformat()}-{device_slug(device_name())}"
    path, n = records / base, 2
    while path.exists():
        path, n = records / f"{base}-{n}", n + 1
    return path


def host_cpu() -> str:
    """The host's processor and its cores as this process sees them: a launch-bound run's speed depends on it."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def environment(smoke: bool, steps: int, command: str, commit: str | None, dirty: bool | None) -> dict:
    """The run's `meta`: what ran, where, on which code and software."""
    import diffusers
    import transformers

    meta = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "smoke": smoke,
        "steps": steps,
        "device": device_name(),
        "host_cpu": host_cpu(),
    }
    with contextlib.suppress(ImportError):
        import triton

        meta["triton"] = triton.__version__
    if torch.cuda.is_available():
        meta["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / GB
        meta["cudnn"] = torch.backends.cudnn.version()
    return meta


def clean(value):
    """JSON-safe: infinities as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


class Tee:
    """A text stream that writes to several (the terminal and the record's run.log)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Everything printed in the block also goes to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file, contextlib.redirect_stdout(Tee(sys.stdout, file)):
        yield


class Bench:
    """Results, the time budget, and the record folder they are written to after every measurement."""

    def __init__(
        self, scale: Scale, sections: list[str], wanted, record: Path, budget_s: float, meta: dict, skip=frozenset()
    ):
        self.scale, self.sections, self.wanted, self.record = scale, sections, wanted, record
        self.skip = set(skip)  # measurements left out by name (the key's last part), as --skip asks
        self.budget_s = budget_s  # seconds from start-up after which no measurement starts; inf: none
        self.start = time.perf_counter()
        self.results: dict = {"meta": meta | {"skip": sorted(self.skip)}, "items": {}, "errors": [], "skipped": []}
        self.prompts = Prompts()
        self.references: dict[tuple[str, tuple[int, int]], dict] = {}  # eager images and forward, per model and size
        record.mkdir(parents=True, exist_ok=True)
        (record / "record.json").write_text(json.dumps({k: meta.get(k) for k in RECORD_FIELDS}, indent=1) + "\n")

    @property
    def smoke(self) -> bool:
        return bool(self.results["meta"].get("smoke"))

    def resolutions(self, model: str) -> list[tuple[int, int]]:
        """The model's sizes that --resolutions asked for (HxW for every model, MODEL@HxW for this one)."""
        wanted = self.wanted
        return [s for s in self.scale.resolutions[model] if wanted is None or {(None, s), (model, s)} & wanted]

    def skipped(self, key: str) -> bool:
        """Whether --skip names this measurement: `14b@1024x1024/ours_warm` by `ours_warm`; the ttfi section's
        `ttfi/1.3b@480x832` (and each of its kind) by `ttfi`."""
        return key.rpartition("/")[2] in self.skip or key.partition("/")[0] in self.skip

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def reserve_after(self, section: str) -> float:
        """The seconds kept for the sections after `section` (their `reserve_s`)."""
        later = self.sections[self.sections.index(section) + 1 :] if section in self.sections else []
        return sum(self.scale.reserve_s.get(name, 0.0) for name in later)

    def allows(self, section: str, need_s: float = 0.0) -> bool:
        """Whether `need_s` more seconds fit before this section's deadline (the budget less later reserves)."""
        return self.elapsed() + need_s < self.budget_s - self.reserve_after(section)

    def item(self, section: str, key: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict | None:
        """Run one measurement, record it (or its error: OOM included), save; skip it if the budget is spent."""
        if self.skipped(key):
            log(f"skip {key}: --skip")
            self.results["skipped"].append(key)
            return None
        if not self.allows(section, need_s):
            log(
                f"skip {key}: {self.elapsed():.0f} s of {self.budget_s:.0f} s used, {need_s:.0f} s needed, "
                f"{self.reserve_after(section):.0f} s kept for the later sections"
            )
            self.results["skipped"].append(key)
            self.save()
            return None
        log(f"{key} ...")
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 - recorded and reported; one failure must not end the run
            value = self.failure(key, err)
        self.results["items"][key] = value
        keys = ("median_s", "mfu", "psnr_db", "peak_gb", "error", "tflops", "seconds", "total_s")
        log(f"{key} -> {json.dumps(clean({k: v for k, v in value.items() if k in keys}))}")
        self.save()
        return value

    def failure(self, key: str, err: Exception) -> dict:
        """The item's record of `err`; its traceback goes to the run's errors."""
        if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err):
            value = {"error": "out of memory", "detail": str(err)[:500], "peak_gb": peak_gb()}
        else:
            value = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
        self.results["errors"].append({"item": key, "traceback": traceback.format_exc()[-3000:]})
        log(f"{key} FAILED: {value['error']}")
        reset_peak()
        return value

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = self.elapsed()
        (self.record / "results.json").write_text(json.dumps(clean(self.results), indent=1))
        write_results_md(self.results, self.record / "RESULTS.md")
