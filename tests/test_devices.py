"""What this machine can run on: a GPU index or a dtype it cannot honour is a one-line error, a preset it cannot use
says what runs instead; and the Chromium the browser tests find.

The GPU tests fake the few CUDA facts `wan_t2i.loading` reads (torch.accelerator's is_available, current_accelerator
and device_count; torch.cuda's get_device_capability and get_device_name): these machines have no GPU, and the checks
must answer before anything touches one, so the real code runs on the faked answers of the device query alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from browsers import NO_CHROMIUM, find_chromium

from wan_t2i import app, performance
from wan_t2i.cli import main
from wan_t2i.loading import ModelLoadError, check_dtype, resolve_device

ROOT = Path(__file__).resolve().parents[1]
T4, A100 = ("Tesla T4", (7, 5)), ("NVIDIA A100-SXM4-80GB", (8, 0))


def fake_cuda(monkeypatch: pytest.MonkeyPatch, *gpus: tuple[str, tuple[int, int]]) -> None:
    """Make torch report `gpus` (name, compute capability) as cuda:0, cuda:1, ...: only the device query is faked."""

    def index(device: torch.device | str | int | None) -> int:
        return torch.device("cuda", device).index if isinstance(device, int) else torch.device(device or "cuda").index

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpus[index(device) or 0][0])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpus[index(device) or 0][1])
    monkeypatch.setattr(torch.version, "hip", None)


def test_a_gpu_index_past_the_last_names_the_gpus_there_are(monkeypatch):
    fake_cuda(monkeypatch, A100, T4)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ModelLoadError) as error:
        resolve_device("cuda:2")
    assert str(error.value) == (
        "device 'cuda:2' does not exist: 2 CUDA device(s) visible; available here: cpu, cuda:0, cuda:1"
    )


def test_bf16_on_a_gpu_older_than_ampere_says_which_dtypes_it_takes(monkeypatch):
    """The capability of the GPU asked for, not of the current one: cuda:0 (an A100) takes bf16, cuda:1 (a T4) not."""
    fake_cuda(monkeypatch, A100, T4)
    check_dtype(torch.bfloat16, torch.device("cuda:0"))
    check_dtype(torch.float16, torch.device("cuda:1"))
    with pytest.raises(ModelLoadError) as error:
        check_dtype(torch.bfloat16, torch.device("cuda:1"), name="vae_dtype")
    needs = "vae_dtype bf16 needs a GPU of compute capability 8.0 or newer"
    assert str(error.value) == f"{needs}; Tesla T4 is 7.5: use fp16 or fp32"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "cuda:2"], "device 'cuda:2' does not exist: 2 CUDA device(s) visible; available here: cpu, "),
        (["--device", "cuda:1", "--dtype", "bf16"], "dtype bf16 needs a GPU of compute capability 8.0 or newer; "),
        (["--device", "cuda:1"], "dtype bf16 needs a GPU of compute capability 8.0 or newer; Tesla T4 is 7.5: "),
    ],
    ids=["index", "bf16", "bf16-by-default"],
)
def test_the_cli_refuses_them_in_one_line_with_status_2(monkeypatch, capsys, tiny_wan_dir, tmp_path, flags, message):
    """In-process, so that the faked device query reaches it; the refusal comes before any module is loaded."""
    fake_cuda(monkeypatch, A100, T4)
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "x.png")]
    assert main([*argv, *flags]) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith(f"error: {message}") and printed.err.count("\n") == 1, printed.err
    assert "Traceback" not in printed.err and printed.out == "" and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["fastest", "low_memory"])
def test_a_gpu_preset_on_the_cpu_says_once_that_the_default_runs(caplog, name):
    caplog.set_level(logging.WARNING, logger="wan_t2i.performance")
    assert performance.preset(name, "cpu") == performance.preset("default", "cpu")
    note = performance.fallback_note(name, "cpu")
    assert note.startswith(f"performance preset {name!r} is for CUDA GPUs: on cpu the default preset runs instead (")
    assert [r.getMessage() for r in caplog.records] == [note]  # once, and none for the default
    caplog.clear()
    on_gpu = performance.preset(name, "cuda")
    assert on_gpu != performance.PerformanceSettings() and caplog.records == []  # on a GPU it is itself: no note
    assert performance.fallback_note("default", "cpu") is None and performance.fallback_note("fp8", "cpu") is None


def test_the_cli_and_the_app_pass_the_fallback_on(caplog, capsys, tiny_wan_dir, tmp_path):
    argv = ["--teacher_path", str(tiny_wan_dir), "--device", "cpu"]
    caplog.set_level(logging.WARNING, logger="wan_t2i.performance")
    flags = [*argv, "--prompt", "a lake", "--num_inference_steps", "1", "--output_path", str(tmp_path / "x.png")]
    assert main([*flags, "--performance", "fastest"]) == 0
    app.load_pipeline(app.parse_args([*argv, "--performance", "low_memory"]))
    capsys.readouterr()
    notes = [performance.fallback_note(name, "cpu") for name in ("fastest", "low_memory")]
    assert [r.getMessage() for r in caplog.records if r.name == "wan_t2i.performance"] == notes


@pytest.mark.slow
def test_what_a_cli_user_sees_of_the_fallback(tmp_path):
    """A real process on the demo model: the notice on stderr, once, in one line, and the image still written."""
    command = [sys.executable, "-m", "wan_t2i", "--prompt", "a lake", "--performance", "fastest", "--device", "cpu"]
    command += ["--num_inference_steps", "1", "--output_path", str(tmp_path / "x.png")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines.count(performance.fallback_note("fastest", "cpu")) == 1, done.stderr
    assert "performance preset" not in done.stderr.replace(performance.fallback_note("fastest", "cpu"), "")
    assert (tmp_path / "x.png").is_file()


def executable(folder: Path, name: str) -> Path:
    """An executable file `folder/name`, as a browser binary would be (nothing runs it)."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_chromium_variable_wins_over_path(monkeypatch, tmp_path):
    chosen = executable(tmp_path / "mine", "my-chrome")
    executable(tmp_path / "bin", "chromium")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PLAYWRIGHT_CHROMIUM_EXECUTABLE", str(chosen))
    assert find_chromium() == str(chosen)
    monkeypatch.setenv("PLAYWRIGHT_CHROMIUM_EXECUTABLE", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=f"^PLAYWRIGHT_CHROMIUM_EXECUTABLE={tmp_path / 'gone'} does not exist$"):
        find_chromium()


def test_then_the_first_chromium_on_path_then_a_message_that_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("PLAYWRIGHT_CHROMIUM_EXECUTABLE", raising=False)
    chrome = executable(tmp_path / "bin", "google-chrome")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_chromium() == str(chrome)
    chromium = executable(tmp_path / "bin", "chromium-browser")
    assert find_chromium() == str(chromium)  # Chromium before Chrome
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bundled = executable(tmp_path / "playwright", "chrome")
    assert find_chromium(bundled) is None  # Playwright launches its own download
    with pytest.raises(FileNotFoundError) as error:
        find_chromium(tmp_path / "playwright" / "not-downloaded")
    assert str(error.value) == NO_CHROMIUM
    assert all(way in NO_CHROMIUM for way in ("PLAYWRIGHT_CHROMIUM_EXECUTABLE", "PATH", "playwright install chromium"))
