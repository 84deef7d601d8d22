"""Every check of the doctor on one model, loaded as the CLI loads it, turned into a DoctorReport.

The order follows the questions a user asks: are the files sound; does the video VAE handle one frame; what does the
model predict, on which timestep scale; what each sampler then does; which expert is which; how far the student is
from its teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.doctor.experts import identify_experts
from wan_t2i.doctor.files import FilesReport, check_files
from wan_t2i.doctor.probe import UNIT_SCALE_FIX, ModelFn, ParameterizationReport, probe_parameterization
from wan_t2i.doctor.report import Check, DoctorReport
from wan_t2i.doctor.sampling import SamplerOutcome, try_samplers
from wan_t2i.doctor.teacher import compare_with_teacher
from wan_t2i.doctor.vae import (
    GOOD_PSNR_DB,
    POOR_PSNR_DB,
    encode_images,
    load_test_images,
    render_test_images,
    vae_round_trip,
)
from wan_t2i.guidance import Experts, run_transformer
from wan_t2i.loading import DEMO_MODEL_DIR

DEFAULT_IMAGES = 4  # test images encoded; more make the numbers steadier and the run longer
FAR_OFF_STD = 10.0  # a sampler whose final latents are this many times too wide (or narrow) is named a problem


def expert_fn(experts: Experts, context: torch.Tensor, *, expert: str | None = None) -> ModelFn:
    """`model_fn(x, t)` of one model, unguided, each row with its own text `context` (B, L, D).

    The probe calls it with one t for the whole batch, so a two-expert model routes the batch by t[0], as Wan does;
    `expert` "high" or "low" runs that expert alone.
    """

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if expert is None:
            module = experts.route(float(t[0]), (1.0, 1.0))[0]
        else:
            module = experts.high if expert == "high" else experts.low
        return run_transformer(module, x, t, context.expand(len(x), -1, -1) if len(context) == 1 else context)

    return model_fn


def files_check(report: FilesReport) -> Check:
    parts = [c for c in report.components]
    summary = "; ".join(
        f"{c.name} {c.parameters / 1e6:.2f}M parameters ({', '.join(c.dtypes) or 'no dtype'}) in {len(c.files)} file(s)"
        for c in parts
    )
    if report.problems:
        return Check("files", "Files", "problem", [*report.problems, summary, *report.compatibility])
    lines = ["every weight file is complete and readable, shapes match the configs, no NaN/Inf", summary]
    return Check("files", "Files", "ok", lines + report.compatibility)


def parameterization_checks(probe: ParameterizationReport) -> list[Check]:
    """The 'what it predicts' and 'timestep convention' checks of one probe."""
    best, verdict = probe.best, probe.verdict
    per_sigma = ", ".join(
        f"{s:g}: cos {c:.2f}, rel.err {e:.2f}"
        for s, c, e in zip(probe.sigmas, best.cosine, best.relative_error, strict=True)
    )
    detail = f"best fit {best.name} per sigma: {per_sigma}"
    if probe.parameterization == "unknown":
        status = "problem"
    elif probe.matching_samplers and probe.timestep_scale is None:
        status = "warning"
    elif probe.matching_samplers:
        status = "ok"
    else:
        status = "problem"
    what = Check("parameterization", "What the model predicts", status, [*verdict, detail])
    title, numbers = "Timestep convention", probe.timestep_reason
    if probe.timestep_scale == NUM_TRAIN_TIMESTEPS:
        line = f"the model follows t on Wan's 0-1000 scale, as every sampler here passes it ({numbers})"
        timestep = Check("timestep", title, "ok", [line])
    elif probe.timestep_scale == 1:
        lines = [
            f"the model follows t on 0-1 (t = sigma), not Wan's 0-1000 ({numbers})",
            "every sampler here, like Wan's and diffusers' pipelines, passes t = 1000 sigma on 0-1000: the model "
            "reads each step as a timestep it never saw",
            f"what to do: {UNIT_SCALE_FIX}",
        ]
        timestep = Check("timestep", title, "problem", lines)
    elif probe.parameterization == "unknown":
        timestep = Check("timestep", title, "skipped", ["no prediction fits, so no scale"])
    else:
        timestep = Check("timestep", title, "warning", [f"the timestep scale cannot be told: {numbers}"])
    return [what, timestep]


def samplers_check(outcomes: dict[str, SamplerOutcome], steps: int, shift: float) -> Check:
    lines = [f"{o.sampler}: final latent std {o.final_std:.3g}, {o.verdict}" for o in outcomes.values()]
    healthy = [o.sampler for o in outcomes.values() if o.verdict.startswith("latents match")]
    far_off = [
        o.sampler
        for o in outcomes.values()
        if not torch.isfinite(torch.tensor(o.final_std)) or not 1 / FAR_OFF_STD < o.final_std < FAR_OFF_STD
    ]
    summary = f"{steps} steps, shift {shift:g}, unguided, from one seeded noise: "
    summary += f"decodable latents from {', '.join(healthy)}" if healthy else "no sampler gives decodable latents"
    flow = [name for name in outcomes if name.startswith("flow_")]
    status = "ok" if healthy and not set(flow) & set(far_off) else "problem" if not healthy else "warning"
    return Check("samplers", "What each sampler does with it", status, [summary, *lines])


@torch.no_grad()
def diagnose(
    model_path: str | Path | None = None,
    teacher_path: str | Path | None = None,
    *,
    images: str | Path | None = None,
    num_images: int = DEFAULT_IMAGES,
    size: int | None = None,
    with_teacher: bool = False,
    steps: int | None = None,
    shift: float | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    scan: bool = True,
    pipe=None,
) -> DoctorReport:
    """Run every check on a student (or a teacher's own transformer) and return the report.

    Args:
        model_path, teacher_path: as `WanT2IPipeline.from_pretrained` takes them (neither: the embedded demo model).
        images: a folder of the user's own test images; default: `num_images` landscapes rendered by the project.
        size: test image side in pixels (default: the model's default height, rounded to its size multiple).
        with_teacher: also load the teacher's transformer and compare the student against it.
        steps, shift: the sampling grid of the sampler and teacher checks (default: the model's).
        seed: of the test scenes and the noise.
        scan: read every weight to look for NaN/Inf (off: headers only).
        pipe: an already loaded WanT2IPipeline to diagnose instead of loading one (its files are not checked).

    Returns:
        A DoctorReport; `report.problems` lists what is wrong, in plain words.
    """
    from wan_t2i.loading import ModelLoadError
    from wan_t2i.pipeline import WanT2IPipeline

    named = str(model_path or teacher_path or "the embedded demo model")
    report = DoctorReport(model=named)

    # 1. Files, from the files alone: a checkpoint the loader would refuse is still diagnosed.
    if pipe is None:
        teacher_folder = Path(teacher_path) if teacher_path is not None else DEMO_MODEL_DIR
        if teacher_folder.is_dir() and (model_path is None or Path(model_path).exists()):
            report.files = check_files(Path(model_path) if model_path else None, teacher_folder, scan=scan)
            report.checks.append(files_check(report.files))
        else:
            report.checks.append(Check("files", "Files", "skipped", ["not local folders (Hub ids): not checked"]))
        try:
            pipe = WanT2IPipeline.from_pretrained(
                model_path, teacher_path, device=device, dtype=dtype, with_teacher=with_teacher
            )
        except (ModelLoadError, ValueError, OSError, RuntimeError) as error:
            report.checks.append(Check("load", "Loading", "problem", [f"the model does not load: {error}"]))
            return report
    else:
        report.checks.append(Check("files", "Files", "skipped", ["a loaded pipeline was given: files not checked"]))
    defaults = pipe.defaults
    steps, shift = steps or defaults.steps, shift or defaults.shift
    multiple = pipe.size_multiple
    size = size or min(defaults.height, defaults.width)
    size = max(multiple, size // multiple * multiple)

    # 2. The VAE at T = 1, on the test images.
    if images is not None:
        test = load_test_images(Path(images), size, count=num_images)
    else:
        test = render_test_images(num_images, size, seed=seed)
    report.settings = {"images": f"{len(test.images)} {test.source}", "size": f"{size}x{size}", "steps": steps}
    report.settings |= {"shift": shift, "seed": seed, "device": str(pipe.device)}
    clean = encode_images(pipe, test.images)  # (B, C, 1, h, w)
    report.vae = vae_round_trip(pipe, test.images, clean)
    mean_psnr = report.vae.mean_psnr_db
    status = "ok" if mean_psnr >= GOOD_PSNR_DB else "warning" if mean_psnr >= POOR_PSNR_DB else "problem"
    psnrs = ", ".join(f"{p:.1f}" for p in report.vae.psnr_db)
    vae_lines = [report.vae.verdict, f"PSNR per image (dB): {psnrs}; latent std {report.vae.latent_std:.2f}"]
    report.checks.append(Check("vae", "The VAE at T = 1", status, vae_lines))

    # 3-4. What the model predicts, and on which timestep scale, each image with its own caption.
    context = torch.cat([pipe.encode_prompt(caption) for caption in test.captions])
    student = pipe.experts["student"]
    model_fn = expert_fn(student, context)
    report.parameterization = probe_parameterization(model_fn, clean, seed=seed)
    report.checks += parameterization_checks(report.parameterization)

    # 5. What each sampler makes of it: a short unguided run per sampler from one seeded noise.
    noise = torch.randn(clean[:1].shape, generator=torch.Generator().manual_seed(seed)).to(clean.device)
    report.samplers = try_samplers(expert_fn(student, context[:1]), noise, steps=steps, shift=shift, seed=seed)
    report.checks.append(samplers_check(report.samplers, steps, shift))

    # 6. Two experts: which is which, by behaviour.
    if student.low is not None:
        report.experts = identify_experts(
            expert_fn(student, context, expert="high"), expert_fn(student, context, expert="low"), clean, seed=seed
        )
        status = "ok" if report.experts.as_named else "problem" if report.experts.as_named is False else "warning"
        report.checks.append(Check("experts", "Which expert is which", status, [report.experts.verdict]))

    # 7. Student against teacher.
    if "teacher" in pipe.experts:
        teacher_fn = expert_fn(pipe.experts["teacher"], context)
        report.teacher = compare_with_teacher(model_fn, teacher_fn, clean, steps=steps, shift=shift, seed=seed)
        mean = sum(report.teacher.relative_error) / len(report.teacher.relative_error)
        status = "ok" if mean <= 0.5 else "warning"
        report.checks.append(Check("teacher", "Student against teacher", status, [report.teacher.verdict]))
    else:
        why = "the model is the teacher's own transformer" if model_path is None else "pass --with_teacher to compare"
        report.checks.append(Check("teacher", "Student against teacher", "skipped", [why]))
    return report
