"""The CLI end to end on a tiny saved model: the original run_inference.py flags, --compare, errors, start-up."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from wan_t2i import app, choices, performance, samplers
from wan_t2i.cli import main, vocabulary_notice
from wan_t2i.images import read_parameters
from wan_t2i.loading import DEMO_MODEL_DIR, parse_dtype
from wan_t2i.pipeline import WanT2IPipeline

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "gradio", "PIL", "numpy")  # each takes seconds to import


def test_original_flags_write_a_png_with_its_parameters(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "output.png"
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "A serene lake at sunset", "--output_path", str(out)]
    code = main([*argv, "--num_inference_steps", "3", "--shift", "3.0", "--seed", "17"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"flow_unipc: {out}" in printed and "seed 17" in printed and "timings: encode" in printed
    assert "ignored" not in printed  # every word of the prompt is in the tiny model's vocabulary
    parameters = read_parameters(out)
    assert parameters | {"prompt": "A serene lake at sunset", "steps": 3, "shift": 3.0, "seed": 17} == parameters
    assert Image.open(out).size == (48, 32)


def test_compare_writes_both_samplers_and_a_side_by_side(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "ab.png"
    code = main(["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(out), "--compare"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("ab_legacy_ddim.png", "ab_flow_unipc.png", "ab_side_by_side.png"):
        assert (tmp_path / name).exists() and name in printed
    seeds = {read_parameters(tmp_path / f"ab_{s}.png")["seed"] for s in ("legacy_ddim", "flow_unipc")}
    assert len(seeds) == 1
    assert Image.open(tmp_path / "ab_side_by_side.png").width > 2 * 48
    assert "the decoded image will be garbage" in printed  # the legacy loop's verdict
    # One batched run: its stages are timed once, not a made-up time per sampler.
    assert printed.count("timings (2 images in one batched run): encode") == 1 and " s)" not in printed


def test_student_plus_teacher_command_shape(tiny_wan_dir, tmp_path, capsys):
    from conftest import tiny_transformer

    tiny_transformer(seed=3).save_pretrained(tmp_path / "student")
    out = tmp_path / "s.png"
    argv = ["--model_path", str(tmp_path / "student"), "--teacher_path", str(tiny_wan_dir)]
    assert main([*argv, "--prompt", "a lake", "--output_path", str(out), "--compare_teacher", "--seed", "1"]) == 0
    assert (tmp_path / "s_student_flow_unipc.png").exists() and (tmp_path / "s_teacher_flow_unipc.png").exists()


def test_bad_input_exits_2_with_a_one_line_message(tiny_wan_dir, tmp_path, capsys):
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "x.png")]
    for extra, message in [
        (["--num_inference_steps", "0"], "error: steps must be an integer from 1 to 1000, got 0"),
        (["--shift", "-1"], "error: shift must be a finite number > 0, got -1.0"),
        (["--height", "33"], "error: height must be a multiple of 16"),
        (["--gpu_memory_gb", "24"], "error: gpu_memory_gb is for the low_memory preset"),
        (["--performance", "low_memory", "--gpu_memory_gb", "0"], "error: gpu_memory_gb must be a number of GB > 0"),
    ]:
        assert main([*argv, *extra]) == 2
        printed = capsys.readouterr()
        assert message in printed.err and len(printed.err.strip().splitlines()) == 1, printed.err
    assert main(["--model_path", str(tiny_wan_dir), "--prompt", "x"]) == 2
    assert "error: --model_path needs --teacher_path" in capsys.readouterr().err
    assert main(["--teacher_path", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks what a CPU-only machine says")
def test_devices_and_dtypes_this_machine_lacks_say_what_is_available(tiny_wan_dir, tmp_path, capsys):
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "x.png")]
    no_cuda = "is a CPU-only build" if torch.version.cuda is None else "no CUDA device is visible"
    for extra, message in [
        (["--device", "cuda"], f"error: device 'cuda' is not available: this torch ({torch.__version__}) {no_cuda}"),
        (["--device", "cuda:1"], "error: device 'cuda:1' is not available"),
        (["--device", "gpu"], "error: unknown device 'gpu'; available here: cpu"),
        (["--device", "mps"], "error: device 'mps' is not available: no MPS device is visible"),
    ]:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.endswith("; available here: cpu\n") and err.count("\n") == 1, err
    for flag in ("--dtype", "--vae_dtype"):
        assert main([*argv, flag, "fp16"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {flag[2:]} fp16 is for GPUs; on the CPU use fp32 (its default) or bf16\n"
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_errors_are_status_2_without_a_traceback_in_a_real_process(tiny_wan_dir):
    argv = [sys.executable, "-m", "wan_t2i", "--teacher_path", str(tiny_wan_dir), "--prompt", "a lake"]
    for extra in (["--device", "cuda:7"], ["--shift", "-1"]):
        done = subprocess.run([*argv, *extra], capture_output=True, text=True, cwd=ROOT)
        # Ours is the last line, and the only error. Lines before it may be libraries' import-time warnings: torchao
        # (the test extra has it) warns that its CUDA kernels do not load into a CPU-only torch.
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 2 and done.stderr.splitlines()[-1] == errors[0] and len(errors) == 1
        assert "Traceback" not in done.stderr


def test_performance_preset_flag(tiny_wan_dir, tmp_path, capsys):
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "a lake", "--output_path", str(tmp_path / "p.png")]
    assert main([*argv, "--performance", "low_memory", "--seed", "2", "--num_inference_steps", "2"]) == 0
    assert main([*argv[:-1], str(tmp_path / "d.png"), "--seed", "2", "--num_inference_steps", "2"]) == 0
    capsys.readouterr()
    # On the CPU every preset leaves the modules as loaded, so the images are the same.
    assert Image.open(tmp_path / "p.png").tobytes() == Image.open(tmp_path / "d.png").tobytes()


def probe_startup(module: str, argv: list[str]) -> dict:
    """Run `module`'s main(argv) in a fresh interpreter: its exit status and which heavy modules it imported."""
    code = (
        "import json, sys\n"
        f"from {module} import main\n"
        "try:\n"
        f"    status = main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        f"print(json.dumps({{'status': status, 'imported': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["wan_t2i.cli", "wan_t2i.app"])
def test_help_and_flag_errors_load_no_heavy_module(module):
    """--help and bad flags answer before torch, diffusers, transformers, Gradio, Pillow or numpy load."""
    assert probe_startup(module, ["--help"]) == {"status": 0, "imported": []}
    assert probe_startup(module, ["--performance", "warp"]) == {"status": 2, "imported": []}


def test_flag_choices_are_the_libraries_names():
    """The CLI's and app's choices (wan_t2i.choices, importable without torch) are exactly what the library takes."""
    assert choices.SAMPLERS == samplers.SAMPLERS
    assert choices.PRESETS == tuple(performance.PRESETS)
    assert {parse_dtype(name) for name in choices.DTYPES} == {torch.bfloat16, torch.float16, torch.float32}


def help_text(*command: str) -> str:
    """`python COMMAND --help` in a fresh process from the repository root, its whitespace made single spaces."""
    done = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # argparse wraps to the terminal's width


def test_cli_help_lists_every_sampler_with_its_note():
    shown = help_text("-m", "wan_t2i")
    assert all(f"{name}: {note}" in shown for name, note in choices.SAMPLER_NOTES.items()), shown


def test_app_help_lists_every_environment_variable_the_app_reads(monkeypatch):
    """The variables are the ones `parse_args` looks up (recorded as it runs), not a list kept beside it."""

    class Recording(dict):
        def get(self, key, default=None):
            looked_up.add(key)
            return super().get(key, default)

    looked_up: set[str] = set()
    monkeypatch.setattr(os, "environ", Recording(os.environ))
    app.parse_args([])
    variables = {name for name in looked_up if name.startswith("WAN_T2I_")}
    assert len(variables) >= 11, variables
    shown = help_text("app.py")
    assert all(name in shown for name in variables), variables - set(shown.replace(",", " ").split())


def test_app_refuses_a_dtype_it_does_not_know_from_a_flag_or_the_environment(monkeypatch, capsys):
    monkeypatch.delenv("WAN_T2I_DTYPE", raising=False)
    with pytest.raises(SystemExit) as exit:
        app.parse_args(["--dtype", "fp64"])
    assert exit.value.code == 2 and "argument --dtype: invalid choice: 'fp64'" in capsys.readouterr().err
    monkeypatch.setenv("WAN_T2I_DTYPE", "fp64")
    with pytest.raises(SystemExit) as exit:
        app.parse_args([])
    assert exit.value.code == 2
    assert capsys.readouterr().err.endswith("error: WAN_T2I_DTYPE='fp64': choose one of bf16, fp16, fp32\n")
    assert app.parse_args(["--dtype", "bf16"]).dtype == "bf16"  # the flag overrides the variable
    # A real process too (the variable set above): were it accepted, the app would start, and time out here.
    done = subprocess.run([sys.executable, "app.py"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (
        done.returncode == 2
        and done.stderr.endswith("app.py: error: WAN_T2I_DTYPE='fp64': choose one of bf16, fp16, fp32\n")
        and "Traceback" not in done.stderr
    )


def test_default_output_goes_under_outputs_and_ignored_words_are_named(tiny_wan_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--teacher_path", str(tiny_wan_dir), "--prompt", "A purple lake, purple Elephant at sunset"]
    assert main([*argv, "--num_inference_steps", "2", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "outputs" / "output.png").is_file() and not (tmp_path / "output.png").exists()
    assert "ignored (not in the vocabulary of tiny-test): purple, Elephant\n" in printed
    # diffusers' and transformers' own loading bars are off; ours (tqdm, on stderr) stays.
    import diffusers
    import transformers

    assert not diffusers.utils.logging.is_progress_bar_enabled()
    assert not transformers.utils.logging.is_progress_bar_enabled()


def test_vocabulary_notice_says_once_what_a_fixed_vocabulary_model_draws(tiny_pipe):
    note = "Draws lakes and mountains at any time of day. " * 4
    pipe = WanT2IPipeline(replace(tiny_pipe.components, defaults=replace(tiny_pipe.defaults, vocabulary_note=note)))
    assert vocabulary_notice(pipe, "a serene lake at sunset") is None  # nothing ignored: nothing to say
    notice = vocabulary_notice(pipe, "an elephant by a lake, an elephant")
    lines = notice.splitlines()
    assert lines[0] == "ignored (not in the vocabulary of tiny-test): elephant, by"
    assert " ".join(line.strip() for line in lines[1:]) == note.strip() and notice.count("ignored") == 1
    assert all(len(line) <= 100 for line in lines)


def test_demo_model_vocabulary_names_the_words_it_drops():
    from transformers import AutoTokenizer

    from wan_t2i.vocabulary import ignored_words

    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR / "tokenizer")
    assert ignored_words(tokenizer, "A purple elephant riding a bicycle by the lake at sunset") == [
        "purple",
        "elephant",
        "riding",
        "bicycle",
    ]
    assert ignored_words(tokenizer, "Snowy mountains at dawn, above a still lake.") == []


@pytest.mark.parametrize("case", ["under a file", "a folder"])
def test_an_unwritable_output_path_is_found_before_the_model_loads(tmp_path, capsys, case):
    """The teacher path does not exist: an error about the output path proves it was checked first."""
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "out.png").mkdir()
    output = {"under a file": tmp_path / "notes.txt" / "out.png", "a folder": tmp_path / "out.png"}[case]
    argv = ["--teacher_path", str(tmp_path / "no-model"), "--prompt", "a lake", "--output_path", str(output)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = {"under a file": f"{tmp_path / 'notes.txt'} is a file, not a folder", "a folder": "is a folder"}[case]
    assert err.startswith(f"error: --output_path {output} ") and expected in err and err.count("\n") == 1


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_found_before_the_model_loads(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    argv = ["--teacher_path", str(tmp_path / "no-model"), "--prompt", "a lake", "--output_path", str(folder / "x.png")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: --output_path {folder / 'x.png'} cannot be written: Permission")


def test_a_writable_output_path_is_left_as_it_was(tmp_path, capsys):
    """The check creates nothing: the missing model is the error, and no file or folder appears."""
    output = tmp_path / "new" / "deeper" / "x.png"
    argv = ["--teacher_path", str(tmp_path / "no-model"), "--prompt", "a lake", "--output_path", str(output)]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_devices_split_a_comparison_and_not_beside_device(tiny_wan_dir, tmp_path, capsys):
    """--devices cpu,cpu renders a comparison split over two (CPU) devices; --devices beside --device is refused."""
    output = ["--prompt", "a lake", "--output_path", str(tmp_path / "x.png"), "--num_inference_steps", "2"]
    model = ["--teacher_path", str(tiny_wan_dir)]
    assert main([*output, *model, "--devices", "cpu, cpu", "--compare", "--seed", "3"]) == 0
    assert (tmp_path / "x_legacy_ddim.png").is_file() and (tmp_path / "x_flow_unipc.png").is_file()
    assert main([*output, *model, "--devices", "cuda:0,cuda:1", "--device", "cpu"]) == 2
    assert "give --device or --devices, not both" in capsys.readouterr().err
