"""The checkpoint doctor on models with a known answer: analytic predictors, the demo model (as it is and converted to
other parameterizations), damaged files (truncated, NaN, shapes and names against the config, sharded), the user's
own images, the teacher check against a student with a known error curve, the figure against the numbers it plots,
the command line, and students trained here with the wrong objective or timestep scale and a two-expert folder
(wan_t2i.doctor.students, slow tier)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageColor
from safetensors.torch import load_file, save_file

from tests.conftest import TEXT_DIM, tiny_transformer
from wan_t2i.doctor import probe_parameterization
from wan_t2i.doctor.diagnose import diagnose, expert_fn
from wan_t2i.doctor.figure import COLORS, Y_RANGES, Axes, axes_of, figure_series, render_figure, shown_fits
from wan_t2i.doctor.files import check_files
from wan_t2i.doctor.probe import (
    FLOW_SAMPLERS,
    MIN_MARGIN,
    PARAMETERIZATIONS,
    UNIT_SCALE_FIX,
    UNIT_SCALE_PROBLEM,
)
from wan_t2i.doctor.report import DoctorReport
from wan_t2i.doctor.vae import encode_images, render_test_images
from wan_t2i.guidance import run_transformer

SHAPE = (2, 16, 1, 8, 8)  # (B, C, F, h, w)


def gaussian_latents(seed: int = 1) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def sigma_of(t: torch.Tensor) -> float:
    return t[0].item() / 1000


# For z0 ~ N(0, I) and x = (1 - s) z0 + s eps: E[y | x] = cov(y, x) / var(x) x, var(x) = (1 - s)^2 + s^2.
def optimal(target: str):
    cov = {"flow_velocity": lambda s: 2 * s - 1, "epsilon": lambda s: s, "x0": lambda s: 1 - s}[target]

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = sigma_of(t)
        return cov(s) / ((1 - s) ** 2 + s**2) * x

    return model_fn


def oracle(target: str, clean: torch.Tensor, sign: int = 1):
    """The exact target, recovered from x and the known z0."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = sigma_of(t)
        eps = (x - (1 - s) * clean) / s
        return sign * {"flow_velocity": eps - clean, "epsilon": eps, "x0": clean}[target]

    return model_fn


@pytest.mark.parametrize("target", ["flow_velocity", "epsilon", "x0"])
def test_optimal_gaussian_predictors_are_named(target: str) -> None:
    report = probe_parameterization(optimal(target), gaussian_latents())
    assert (report.parameterization, report.sign) == (target, 1), report.reason
    # They do not depend on t beyond sigma, so both scales are not equally good: t = sigma gives the wrong sigma.
    assert report.timestep_scale == 1000
    assert abs(report.best.mean_skill) < 0.05  # the optimum for Gaussian data is a scaled copy of x_t: skill 0


@pytest.mark.parametrize("target", ["flow_velocity", "epsilon", "x0"])
@pytest.mark.parametrize("sign", [1, -1])
def test_exact_oracles_are_named_with_their_sign(target: str, sign: int) -> None:
    clean = gaussian_latents(2)
    report = probe_parameterization(oracle(target, clean, sign), clean)
    assert (report.parameterization, report.sign) == (target, sign), report.reason
    assert report.best.mean_skill > 0.99 and max(report.best.relative_error) < 1e-4


def test_raw_cosine_would_misname_the_optimal_velocity() -> None:
    """Why the probe does not decide by cosine (the module docstring's numbers)."""
    report = probe_parameterization(optimal("flow_velocity"), gaussian_latents(), sigmas=[0.2])
    assert report.fit("x0", -1).cosine[0] > 0.95 > 0.8 > report.fit("flow_velocity").cosine[0]
    assert report.parameterization == "flow_velocity"


def test_random_network_is_unknown() -> None:
    network = tiny_transformer(0)
    context = torch.randn(1, 8, TEXT_DIM, generator=torch.Generator().manual_seed(0))
    report = probe_parameterization(lambda x, t: run_transformer(network, x, t, context), gaussian_latents())
    assert report.parameterization == "unknown" and report.sign is None and report.timestep_scale is None
    assert "no candidate fits" in report.reason and report.verdict[0].startswith("the output fits none")


def test_a_model_that_ignores_t_gets_no_timestep_scale() -> None:
    """The x0 oracle returns z0 whatever t is: the prediction is named, the scale honestly is not."""
    clean = gaussian_latents(2)
    report = probe_parameterization(oracle("x0", clean), clean)
    assert (report.parameterization, report.sign, report.timestep_scale) == ("x0", 1, None)
    assert report.response(1000).tracking == report.response(1).tracking == 0  # its output does not move with t
    assert report.timestep_reason.startswith("neither the skill nor the tracking separates the two scales")
    assert report.verdict[1].startswith("the timestep scale cannot be told")


def test_tracking_alone_decides_only_by_a_clear_margin() -> None:
    """Skill within MIN_MARGIN: the scale is named only when it fits best at the true sigma 3 rows of 5 more often."""
    from wan_t2i.doctor.probe import CandidateFit, TimestepResponse, decide_timestep_scale

    def fit(scale: int, skill: float) -> CandidateFit:
        return CandidateFit("flow_velocity", 1, scale, [1.0], [0.0], [skill], [1.0], [0.0])

    def response(scale: int, tracked_rows: int) -> TimestepResponse:
        rows = [[1.0 if i == j or i >= tracked_rows else 0.0 for j in range(5)] for i in range(5)]
        return TimestepResponse(scale, [0.1, 0.3, 0.5, 0.7, 0.9], rows)

    close = fit(1000, 0.42), fit(1, 0.40)
    assert decide_timestep_scale(*close, [response(1000, 3), response(1, 0)])[0] == 1000
    assert decide_timestep_scale(*close, [response(1000, 2), response(1, 0)])[0] is None
    far = fit(1000, 0.1), fit(1, 0.5)
    assert decide_timestep_scale(*far, [response(1000, 0), response(1, 1)])[0] == 1
    scale, reason = decide_timestep_scale(*far, [response(1000, 2), response(1, 1)])
    assert scale is None and reason.startswith("the skill favours 0-1 but the tracking 0-1000")


def test_probe_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="sigmas must be"):
        probe_parameterization(optimal("x0"), gaussian_latents(), sigmas=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"\(B, C, 1, h, w\)"):
        probe_parameterization(optimal("x0"), gaussian_latents()[:, :, 0])
    with pytest.raises(ValueError, match="returned shape"):
        probe_parameterization(lambda x, t: x[:, :4], gaussian_latents())


# --- the demo model, and the demo model converted to what wrong students predict ---------------------------------
@pytest.fixture(scope="module")
def demo_probe_inputs(demo_pipe):
    test = render_test_images(2, 64, seed=0)
    clean = encode_images(demo_pipe, test.images)
    context = torch.cat([demo_pipe.encode_prompt(c) for c in test.captions])
    return expert_fn(demo_pipe.experts["student"], context), clean


def test_demo_model_predicts_flow_velocity_on_wan_scale(demo_probe_inputs) -> None:
    model_fn, clean = demo_probe_inputs
    report = probe_parameterization(model_fn, clean)
    assert (report.parameterization, report.sign, report.timestep_scale) == ("flow_velocity", 1, 1000), report.reason
    assert report.matching_samplers == ["flow_unipc", "flow_dpmpp", "flow_euler", "flow_lcm"]
    assert report.best.mean_skill > 0.3 and report.best.miscalibration < 0.4
    assert any("legacy_ddim" in line for line in report.verdict)


@pytest.mark.slow
def test_demo_converted_to_epsilon_and_x0_and_negated(demo_probe_inputs) -> None:
    model_fn, clean = demo_probe_inputs

    def sigma(t: torch.Tensor) -> torch.Tensor:
        return (t / 1000).view(-1, 1, 1, 1, 1)

    epsilon = probe_parameterization(lambda x, t: x + (1 - sigma(t)) * model_fn(x, t), clean)  # eps = x + (1-s) v
    assert (epsilon.parameterization, epsilon.sign, epsilon.timestep_scale) == ("epsilon", 1, 1000), epsilon.reason
    assert epsilon.matching_samplers == [] and any("v = (eps - x) / (1 - sigma)" in line for line in epsilon.verdict)
    x0 = probe_parameterization(lambda x, t: x - sigma(t) * model_fn(x, t), clean)  # x0 = x - s v
    assert (x0.parameterization, x0.sign) == ("x0", 1), x0.reason
    negated = probe_parameterization(lambda x, t: -model_fn(x, t), clean)
    assert (negated.parameterization, negated.sign) == ("flow_velocity", -1), negated.reason
    assert any("negate the output" in line for line in negated.verdict)


def test_demo_on_the_unit_timestep_scale_is_named(demo_probe_inputs) -> None:
    model_fn, clean = demo_probe_inputs
    report = probe_parameterization(lambda x, t: model_fn(x, t * 1000), clean)  # a model that expects t = sigma
    assert (report.parameterization, report.timestep_scale) == ("flow_velocity", 1), report.reason
    assert report.matching_samplers == [] and any("t / 1000" in line for line in report.verdict)


def test_the_cli_diagnoses_the_demo_model(tmp_path: Path, capsys) -> None:
    """`python -m wan_t2i.doctor` on the demo model: the report printed, report.json, and report.png drawn from the
    numbers in report.json."""
    from wan_t2i.doctor.__main__ import main

    out = tmp_path / "out"
    assert main(["--num_images", "2", "--size", "64", "--steps", "8", "--out", str(out)]) == 0
    markdown = capsys.readouterr().out
    assert "## What the model predicts: OK" in markdown and "## Timestep convention: OK" in markdown
    report = json.loads((out / "report.json").read_text())
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["files"] == "ok" and statuses["parameterization"] == "ok" and statuses["timestep"] == "ok"
    assert statuses["teacher"] == "skipped"  # the demo model is its own teacher
    transformer = next(c for c in report["files"]["components"] if c["name"] == "transformer")
    assert transformer["parameters"] > 1_000_000  # the demo student: a few million
    assert 15 < report["vae"]["mean_psnr_db"] < 60 and len(report["vae"]["psnr_db"]) == 2
    probe = report["parameterization"]
    assert (probe["parameterization"], probe["sign"], probe["timestep_scale"]) == ("flow_velocity", 1, 1000)
    assert report["samplers"]["flow_unipc"]["verdict"].startswith("latents match")
    assert report["samplers"]["legacy_ddim"]["final_std"] > 3 * report["samplers"]["flow_unipc"]["final_std"]
    # The figure's last curve in the cosine panel is the prediction on the other timestep scale (fits[1]).
    with Image.open(out / "report.png") as figure:
        assert figure.format == "PNG"
        axes = Axes("cosine", (0.0, 1.0), Y_RANGES["cosine"])
        color = ImageColor.getrgb(COLORS[len(PARAMETERIZATIONS)])
        other = probe["fits"][1]
        assert other["timestep_scale"] == 1 and other["parameterization"] == "flow_velocity"
        assert pixels_at(figure, axes, probe["sigmas"], other["cosine"]) == [color] * len(probe["sigmas"])


def pixels_at(image, axes, xs, ys) -> list[tuple[int, ...]]:
    """The colour of the figure at each data point."""
    return [
        image.convert("RGB").getpixel(tuple(round(v) for v in axes.point(x, y))) for x, y in zip(xs, ys, strict=True)
    ]


def test_the_figure_draws_the_fits_and_the_teacher_error_per_sigma(demo_probe_inputs) -> None:
    """What the figure plots is the probe's numbers: the velocity model's own target has the lowest relative error
    of the three, an epsilon model's the noise; and each curve is drawn where its numbers say."""
    from wan_t2i.doctor.teacher import compare_with_teacher

    model_fn, clean = demo_probe_inputs

    def epsilon_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # eps = x + (1 - sigma) v
        return x + (1 - t.view(-1, 1, 1, 1, 1) / 1000) * model_fn(x, t)

    for fn, target in ((model_fn, "flow_velocity"), (epsilon_fn, "epsilon")):
        probe = probe_parameterization(fn, clean, tracking_sigmas=())
        teacher = compare_with_teacher(split_student(fn, wrong_below=True), fn, clean, steps=6, shift=5.0)
        report = DoctorReport(model=target, parameterization=probe, teacher=teacher)
        series = figure_series(report)
        fits = shown_fits(probe)
        assert [label for label, _, _ in series["cosine"]] == [f.name for f in fits]
        assert fits[0] is probe.best and fits[0].parameterization == target
        assert {f.parameterization for f in fits[:3]} == set(PARAMETERIZATIONS)
        assert series["cosine"] == [(f.name, probe.sigmas, f.cosine) for f in fits]
        assert series["relative_error"] == [(f.name, probe.sigmas, f.relative_error) for f in fits]
        errors = {f.parameterization: f.relative_error for f in fits[:3]}
        lowest = [min(errors, key=lambda name: errors[name][i]) for i in range(len(probe.sigmas))]
        assert lowest.count(target) >= len(lowest) - 1, lowest
        assert series["teacher"][0] == ("sampling grid: 6 steps, shift 5", teacher.sigmas, teacher.relative_error)
        figure = render_figure(report)
        for panel in ("cosine", "relative_error", "teacher"):
            label, xs, ys = series[panel][-1]  # drawn last: nothing covers its dots
            color = ImageColor.getrgb(COLORS[len(series[panel]) - 1])
            assert pixels_at(figure, axes_of(panel, report), xs, ys) == [color] * len(xs), (panel, label)


# --- the user's own images -------------------------------------------------------------------------------------
def test_the_users_own_images_are_loaded_encoded_and_probed(demo_pipe, tmp_path: Path) -> None:
    """--images DIR: the first images of the folder by name, centre-cropped to the size, go through the VAE and
    the probe; other files are ignored."""
    from PIL import ImageOps

    from wan_t2i.doctor.vae import vae_round_trip

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(render_test_images(3, 96, seed=5).images):  # 96 px: the doctor resizes them to 64
        image.crop((0, 0, 96, 80)).save(folder / f"{i}.png")  # not square: centre-cropped
    (folder / "notes.txt").write_text("not an image")
    report = diagnose(pipe=demo_pipe, images=folder, num_images=2, size=64, steps=2)
    assert report.settings["images"] == f"2 {folder}" and report.parameterization.shape == [2, 16, 1, 8, 8]
    mine = [ImageOps.fit(Image.open(folder / f"{i}.png"), (64, 64), Image.Resampling.LANCZOS) for i in range(2)]
    assert report.vae.psnr_db == pytest.approx(vae_round_trip(demo_pipe, mine).psnr_db, abs=1e-6)


def test_a_bad_images_folder_is_refused_in_one_line(demo_pipe, tmp_path: Path, capsys) -> None:
    from wan_t2i.doctor.__main__ import main

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"--images .*empty holds no \.png, \.jpg"):
        diagnose(pipe=demo_pipe, images=empty, size=64)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "photo.png").write_text("not a PNG")
    with pytest.raises(ValueError, match=r"cannot read the image .*photo\.png"):
        diagnose(pipe=demo_pipe, images=broken, size=64)
    assert main(["--images", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "error: --images" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--images", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err


# --- student against teacher -------------------------------------------------------------------------------------
def test_the_teacher_check_runs_at_the_sampling_grid_of_the_chosen_shift() -> None:
    """The sigmas compared are those at which flow_unipc calls the model for these steps and this shift."""
    from wan_t2i.doctor.teacher import compare_with_teacher
    from wan_t2i.samplers import sample

    teacher = optimal("flow_velocity")
    student = lambda x, t: 0.9 * teacher(x, t)  # noqa: E731
    for shift in (3.0, 8.0):
        called: list[int] = []

        def recording(x: torch.Tensor, t: torch.Tensor, called: list[int] = called) -> torch.Tensor:
            called.append(int(t[0]))
            return teacher(x, t)

        sample(recording, gaussian_latents(3)[:1], sampler="flow_unipc", steps=6, shift=shift)
        comparison = compare_with_teacher(student, teacher, gaussian_latents(), steps=6, shift=shift)
        assert comparison.timesteps == called and comparison.shift == shift
        assert [int(s * 1000) for s in comparison.sigmas] == called  # t = sigma * 1000, truncated as Wan does
        assert comparison.relative_error == pytest.approx([0.1] * 6)  # 0.9 x the teacher: 10% off everywhere
    assert compare_with_teacher(student, teacher, gaussian_latents(), steps=6, shift=3.0).timesteps != called


def split_student(teacher, *, wrong_below: bool):
    """The teacher where t >= 500, zero (relative error exactly 1) where t < 500 (or the other way round)."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        right = (t[0] >= 500) == wrong_below
        return teacher(x, t) if right else torch.zeros_like(x)

    return model_fn


def test_the_shift_advice_has_a_known_answer() -> None:
    """A student that equals its teacher (an exact velocity oracle) above sigma 0.5 and is all wrong below: the error
    per step is 1 or 0, each shift's grid sees the share of its steps below 0.5, and the largest shift puts the
    fewest steps there."""
    from wan_t2i.doctor.teacher import OTHER_SHIFTS, compare_with_teacher
    from wan_t2i.schedules import flow_schedule

    clean = gaussian_latents(4)
    teacher = oracle("flow_velocity", clean)
    comparison = compare_with_teacher(split_student(teacher, wrong_below=True), teacher, clean, steps=8, shift=5.0)
    assert comparison.relative_error == [float(t < 500) for t in comparison.timesteps]
    by_shift = comparison.mean_error_by_shift
    assert list(by_shift) == [f"{s:g}" for s in sorted(OTHER_SHIFTS)]
    for shift in OTHER_SHIFTS:  # interpolated between the measured sigmas 0.45 (error 1) and 0.55 (error 0)
        grid = flow_schedule(8, shift)[1][:-1].numpy()
        assert (grid <= 0.45).mean() <= by_shift[f"{shift:g}"] <= (grid < 0.55).mean()
    means = [by_shift[f"{s:g}"] for s in sorted(OTHER_SHIFTS)]
    assert means == sorted(means, reverse=True) and len(set(means)) == len(means) and means[-1] == 0
    assert comparison.best_shift == 12.0
    advice = "shift 12 would put the steps where the student is closer to the teacher (mean 0.00 against "
    assert advice + f"{by_shift['5']:.2f}" in comparison.verdict
    at_best = compare_with_teacher(split_student(teacher, wrong_below=True), teacher, clean, steps=8, shift=12.0)
    assert at_best.best_shift == 12.0 and "would put the steps" not in at_best.verdict
    high = compare_with_teacher(split_student(teacher, wrong_below=False), teacher, clean, steps=8, shift=5.0)
    assert high.best_shift == 1.0 and "shift 1 would put the steps" in high.verdict


# --- files --------------------------------------------------------------------------------------------------------
def copy_model(source: Path, destination: Path) -> Path:
    return Path(shutil.copytree(source, destination))


def test_files_of_a_sound_model(tiny_wan_dir: Path) -> None:
    report = check_files(None, tiny_wan_dir)
    assert report.ok, report.problems
    transformer = report.component("transformer")
    assert transformer.shapes_checked and transformer.parameters == sum(
        p.numel() for p in tiny_transformer(0).parameters()
    )
    assert transformer.dtypes == {"F32": transformer.parameters}
    assert any("in_channels 16 = the VAE's z_dim 16" in line for line in report.compatibility)


def test_truncated_shard_is_named(tiny_wan_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_wan_dir, tmp_path / "model")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    report = check_files(None, folder)
    assert any(f"{weights} is truncated: {size // 2:,} of {size:,} bytes" in p for p in report.problems), report
    doctor = diagnose(teacher_path=folder, num_images=1, size=32)
    assert doctor.check("files").status == "problem" and "truncated" in doctor.check("files").lines[0]
    assert not doctor.ok


def test_nan_weight_is_named(tiny_wan_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_wan_dir, tmp_path / "model")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = next(n for n in tensors if n.endswith("proj_out.weight"))
    tensors[name][0, :3] = torch.tensor([math.nan, math.inf, math.nan])
    save_file(tensors, weights, metadata={"format": "pt"})
    report = check_files(None, folder)
    assert report.problems == [f"{weights} holds NaN/Inf values in {name} (3)"]


def test_student_for_another_vae_is_named(tiny_wan_dir: Path, tmp_path: Path) -> None:
    student = tmp_path / "student"
    tiny_transformer(0, in_channels=4).save_pretrained(student)
    report = check_files(student, tiny_wan_dir)
    assert (
        "the student's in_channels 4 != the VAE's z_dim 16: the student was made for another VAE (latent "
        "channels)" in report.problems
    )
    wide = tmp_path / "wide"
    tiny_transformer(0, text_dim=64).save_pretrained(wide)
    assert any("text_dim 64 != the text encoder's d_model 32" in p for p in check_files(wide, tiny_wan_dir).problems)


def rewrite_weights(folder: Path, change) -> tuple[Path, dict]:
    """Apply `change(tensors)` to the transformer weights of a copied model folder; returns the file and tensors."""
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    change(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})
    return weights, tensors


def test_a_shape_that_differs_from_the_config_is_named(tiny_wan_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_wan_dir, tmp_path / "model")
    name = "proj_out.weight"
    rows, columns = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")[name].shape
    rewrite_weights(folder, lambda tensors: tensors.update({name: torch.zeros(rows, columns + 1)}))
    report = check_files(None, folder)
    transformer = report.component("transformer")
    assert transformer.mismatched == [f"{name}: file {(rows, columns + 1)}, config {(rows, columns)}"]
    assert not transformer.missing and not transformer.unexpected
    assert report.problems == [
        f"transformer ({folder / 'transformer'}): shapes differ from the config: {transformer.mismatched[0]}"
    ]
    doctor = diagnose(teacher_path=folder, num_images=1, size=32)
    assert doctor.check("files").status == "problem" and "shapes differ" in doctor.check("files").lines[0]
    assert doctor.check("load").status == "problem"  # the loader refuses it too; the files check said why


def test_missing_and_unexpected_tensors_are_named(tiny_wan_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_wan_dir, tmp_path / "model")
    removed = "blocks.1.ffn.net.2.bias"

    def change(tensors: dict) -> None:
        del tensors[removed]
        tensors["blocks.1.lora_A.weight"] = torch.zeros(4, 16)

    rewrite_weights(folder, change)
    report = check_files(None, folder)
    transformer = report.component("transformer")
    assert transformer.missing == [removed] and transformer.unexpected == ["blocks.1.lora_A.weight"]
    where = f"transformer ({folder / 'transformer'})"
    assert report.problems == [
        f"{where}: tensors the config needs are missing: {removed}",
        f"{where}: tensors the config does not know: blocks.1.lora_A.weight",
    ]


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_shard_of_a_sharded_student_is_named(tiny_wan_dir: Path, tmp_path: Path, damage: str) -> None:
    student = tmp_path / "student"
    tiny_transformer(0).save_pretrained(student, max_shard_size="30KB")
    index = student / "diffusion_pytorch_model.safetensors.index.json"
    shards = sorted(student.glob("diffusion_pytorch_model-*-of-*.safetensors"))
    assert len(shards) == 2 and index.is_file() and check_files(student, tiny_wan_dir).ok  # sound before the damage
    if damage == "deleted":
        shards[1].unlink()
        expected = f"{index} lists shards that are missing: {shards[1].name}"
    else:
        size = shards[1].stat().st_size
        with open(shards[1], "r+b") as f:
            f.truncate(size - 100)
        expected = f"{shards[1]} is truncated: {size - 100:,} of {size:,} bytes"
    report = check_files(student, tiny_wan_dir)
    assert any(p.startswith(expected) for p in report.problems), report.problems
    doctor = diagnose(student, tiny_wan_dir, num_images=1, size=32)
    assert doctor.check("files").lines[0].startswith(expected) and not doctor.ok


# --- the command line ---------------------------------------------------------------------------------------------
def test_help_is_fast_and_needs_no_torch() -> None:
    import subprocess
    import sys

    start = time.perf_counter()
    code = "import sys, wan_t2i.doctor.__main__ as m; m.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False" and time.perf_counter() - start < 10


def test_cli_refuses_bad_flags_in_one_line(capsys) -> None:
    from wan_t2i.doctor.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model_path", "student"])
    assert exit_info.value.code == 2 and "--model_path needs --teacher_path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--steps", "0"])


def test_cli_on_a_student_for_another_vae(tiny_wan_dir: Path, tmp_path: Path, capsys) -> None:
    from wan_t2i.doctor.__main__ import main

    student = tmp_path / "student"
    tiny_transformer(0, in_channels=4).save_pretrained(student)
    code = main(["--model_path", str(student), "--teacher_path", str(tiny_wan_dir), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1 and "## Files: PROBLEM" in out and "made for another VAE" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ok"] is False and report["checks"][0]["status"] == "problem"
    assert "made for another VAE" in report["checks"][0]["lines"][0]
    with Image.open(tmp_path / "out" / "report.png") as figure:  # drawn even for a model that does not load
        assert figure.format == "PNG" and figure.size == render_figure(DoctorReport(model="")).size


# --- deliberately wrong students, trained here (wan_t2i.doctor.students) ------------------------------------------
@pytest.fixture(scope="session")
def wrong_students(demo_pipe, tmp_path_factory) -> dict:
    """Tiny students trained on the demo VAE's latents of 64 px scenes (Wan's objective, epsilon, t on 0-1, mostly
    low noise), each also saved to a folder, and a two-expert folder of the first and the last."""
    from wan_t2i.doctor.students import EXPERTS, STUDENTS, train_wrong_student, training_latents, write_two_expert_model
    from wan_t2i.loading import DEMO_MODEL_DIR

    latents, scenes = training_latents(demo_pipe)
    students = {}
    for name, recipe in STUDENTS.items():
        transformer = train_wrong_student(demo_pipe, latents, scenes, **recipe)
        folder = tmp_path_factory.mktemp(f"student-{name}")
        transformer.save_pretrained(folder)
        students[name] = (transformer, folder)
    experts = {expert: students[name][0] for expert, name in EXPERTS.items()}
    two_experts = write_two_expert_model(tmp_path_factory.mktemp("two-experts") / "model", DEMO_MODEL_DIR, experts)
    test = render_test_images(8, 64, seed=0)  # the students' training size
    context = torch.cat([demo_pipe.encode_prompt(caption) for caption in test.captions])
    return {"students": students, "two_experts": two_experts, "probe": (encode_images(demo_pipe, test.images), context)}


def probe_student(wrong_students: dict, name: str):
    transformer = wrong_students["students"][name][0]
    clean, context = wrong_students["probe"]
    return probe_parameterization(lambda x, t: run_transformer(transformer, x, t, context), clean)


@pytest.mark.slow
def test_trained_flow_student_is_flow_velocity_on_wans_scale(wrong_students) -> None:
    report = probe_student(wrong_students, "flow")
    assert (report.parameterization, report.sign, report.timestep_scale) == ("flow_velocity", 1, 1000), report.reason
    assert report.matching_samplers == list(FLOW_SAMPLERS)
    assert report.response(1000).tracking > report.response(1).tracking, report.timestep_reason


@pytest.mark.slow
def test_trained_unit_scale_student_is_named_and_the_fix_given(wrong_students) -> None:
    """A student trained with t = sigma on 0-1: the probe says so, and the report says what Wan's samplers pass."""
    from wan_t2i.loading import DEMO_MODEL_DIR

    folder = wrong_students["students"]["unit"][1]
    report = diagnose(folder, DEMO_MODEL_DIR, num_images=8, size=64, steps=8)
    probe = report.parameterization
    assert (probe.parameterization, probe.sign, probe.timestep_scale) == ("flow_velocity", 1, 1), probe.timestep_reason
    assert probe.best.mean_skill - probe.fits[1].mean_skill >= MIN_MARGIN  # the same prediction given t on 0-1000
    assert probe.response(1).tracking >= probe.response(1000).tracking
    assert probe.matching_samplers == [] and any(UNIT_SCALE_PROBLEM in line for line in probe.verdict)
    timestep = report.check("timestep")
    assert timestep.status == "problem" and not report.ok
    assert timestep.lines[0].startswith("the model follows t on 0-1 (t = sigma), not Wan's 0-1000 (mean skill")
    assert "passes t = 1000 sigma on 0-1000" in timestep.lines[1]
    assert timestep.lines[2] == f"what to do: {UNIT_SCALE_FIX}" and "t / 1000" in UNIT_SCALE_FIX


@pytest.mark.slow
def test_diagnose_an_epsilon_student_against_its_teacher(wrong_students, tmp_path: Path) -> None:
    from wan_t2i.loading import DEMO_MODEL_DIR

    folder = wrong_students["students"]["epsilon"][1]
    report = diagnose(folder, DEMO_MODEL_DIR, with_teacher=True, num_images=8, size=64, steps=8)
    probe = report.parameterization
    assert (probe.parameterization, probe.sign, probe.timestep_scale) == ("epsilon", 1, 1000), probe.reason
    assert report.check("files").status == "ok" and report.check("timestep").status == "ok"
    assert report.check("parameterization").status == "problem" and not report.ok
    assert any("v = (eps - x) / (1 - sigma)" in line for line in report.check("parameterization").lines)
    assert report.teacher is not None and min(report.teacher.relative_error) > 0.3  # not the teacher's velocity


@pytest.mark.slow
def test_two_expert_folder_experts_are_told_apart_by_behaviour(wrong_students, tmp_path: Path) -> None:
    """A real two-expert folder, as named and with its two transformer folders swapped."""
    folder = wrong_students["two_experts"]
    report = diagnose(teacher_path=folder, num_images=8, size=64, steps=4)
    assert report.files.ok and {"transformer", "transformer_2"} <= {c.name for c in report.files.components}
    assert report.files.component("transformer_2").shapes_checked
    assert any(line.startswith("the teacher's transformer_2's in_channels 16") for line in report.files.compatibility)
    assert report.experts.as_named is True and report.experts.high_noise == "transformer", report.experts.verdict
    assert report.check("experts").status == "ok"
    swapped = copy_model(folder, tmp_path / "swapped")
    (swapped / "transformer").rename(swapped / "low")
    (swapped / "transformer_2").rename(swapped / "transformer")
    (swapped / "low").rename(swapped / "transformer_2")
    report = diagnose(teacher_path=swapped, num_images=8, size=64, steps=4, scan=False)
    assert report.experts.as_named is False and report.experts.high_noise == "transformer_2", report.experts.verdict
    assert report.check("experts").status == "problem" and "the experts are swapped" in report.check("experts").lines[0]
