"""`wan-t2i-doctor` / `python -m wan_t2i.doctor`: why a student gives garbage, measured before it is sampled.

The flags are parsed before torch loads (as `wan_t2i.cli` does), so that `--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wan_t2i.choices import DTYPES

DEFAULT_OUTPUT = Path("outputs") / "doctor"  # outputs/ is git-ignored


def program_name() -> str:
    """`wan-t2i-doctor` from the console script, `python -m wan_t2i.doctor` otherwise."""
    name = Path(sys.argv[0]).name
    return "python -m wan_t2i.doctor" if name in ("__main__.py", "-m", "-c", "") else name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="The checkpoint doctor: checks a student's files, the VAE at T = 1, what the model predicts "
        "(flow velocity, noise or clean latents), its timestep scale, what each sampler does with it, and how far it "
        "is from its teacher. With no model flags, diagnoses the embedded demo model.",
    )
    model = parser.add_argument_group("model (as the CLI loads it)")
    model.add_argument("--model_path", help="student transformer: a folder or a .safetensors file")
    model.add_argument("--teacher_path", help="Wan model giving the VAE and text encoder (default: the demo model)")
    model.add_argument("--with_teacher", action="store_true", help="also load the teacher's transformer and compare")
    model.add_argument("--device", help="cuda, cpu (default: cuda when available)")
    model.add_argument("--dtype", choices=DTYPES, help="transformer dtype (default: bf16 GPU, fp32 CPU)")
    probe = parser.add_argument_group("measurement")
    probe.add_argument("--images", type=Path, help="folder of your own test images (default: rendered landscapes)")
    probe.add_argument("--num_images", type=int, default=4, help="test images to encode (default: 4)")
    probe.add_argument("--size", type=int, help="test image side in pixels (default: the model's height)")
    probe.add_argument("--steps", type=int, help="sampling steps of the sampler and teacher checks (default: model's)")
    probe.add_argument("--shift", type=float, help="timestep shift of those checks (default: the model's)")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--no_scan", action="store_true", help="read only the weight files' headers, not every value")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help=f"report folder (default: {DEFAULT_OUTPUT})")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible values in one line, before anything loads."""
    for name in ("num_images", "size", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    if args.shift is not None and not args.shift > 0:
        parser.error(f"--shift must be > 0, got {args.shift}")
    if args.model_path and not args.teacher_path:
        parser.error("--model_path needs --teacher_path: the student uses its teacher's VAE and text encoder")
    if args.images is not None and not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)

    # Imported only now that the flags are good: torch and diffusers take seconds to load.
    from wan_t2i.cli import in_flags, quiet_library_progress
    from wan_t2i.doctor.diagnose import diagnose
    from wan_t2i.doctor.figure import render_figure

    quiet_library_progress()
    try:
        report = diagnose(
            args.model_path,
            args.teacher_path,
            images=args.images,
            num_images=args.num_images,
            size=args.size,
            with_teacher=args.with_teacher,
            steps=args.steps,
            shift=args.shift,
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            scan=not args.no_scan,
        )
    except ValueError as error:  # bad images or an unusable model: say what to change, no traceback
        print(f"error: {in_flags(str(error))}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    json_path = report.save(args.out / "report.json")
    figure_path = args.out / "report.png"
    render_figure(report).save(figure_path)
    print(f"report: {json_path}\nfigure: {figure_path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
