"""`wan-t2i` / `python -m wan_t2i`: the original run_inference.py flags, with the right sampler and an A/B mode.

The flags are parsed before torch, diffusers or Pillow load (they take seconds), so that `--help` and argument errors
are instant; `benchmarks/cli_help.py` measures it.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from wan_t2i.choices import DTYPES, PRESETS, SAMPLER_NOTES, SAMPLERS, device_list
from wan_t2i.sweep_axes import MAX_CELLS, check_axes, parse_axis

COMPARE_SAMPLERS = ("legacy_ddim", "flow_unipc")
DEFAULT_OUTPUT = Path("outputs") / "output.png"  # outputs/ is git-ignored: renders stay out of the working tree
# Library parameters whose flags have other spellings or that a CLI user sets by flag (messages name the parameter).
LIBRARY_TO_FLAGS = {
    "model_path": "--model_path",
    "teacher_path": "--teacher_path",
    "with_teacher=True": "--with_teacher",
    "max_cells": "--max_cells",
}


def program_name(module: str) -> str:
    """How the user started us, for usage lines: `wan-t2i` from the console script, `python -m wan_t2i` otherwise."""
    name = Path(sys.argv[0]).name
    return f"python -m {module}" if name in ("__main__.py", "-m", "-c", "") else name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("wan_t2i"),
        description="Text-to-image with a Wan student. With no model flags, uses the embedded demo model.",
    )
    model = parser.add_argument_group("model (the original run_inference.py flags)")
    model.add_argument("--model_path", help="student transformer: a folder or Hub id (default: the teacher's own)")
    model.add_argument("--teacher_path", help="Wan model giving the VAE and text encoder: a folder or Hub id")
    model.add_argument("--with_teacher", action="store_true", help="also load the teacher's transformer(s)")
    model.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    model.add_argument("--dtype", choices=DTYPES, help="transformer dtype (default: bf16 GPU, fp32 CPU)")
    model.add_argument("--vae_dtype", choices=DTYPES, help="VAE dtype (default: fp32)")
    model.add_argument(
        "--performance",
        choices=PRESETS,
        default="default",
        help="default: safe, no start-up cost; fastest: compiled blocks, fused attention, bf16 VAE (GPU servers); "
        "low_memory: model loaded into CPU memory, as many transformer blocks kept on the GPU as it has room for and "
        "the rest streamed as they run (a 14B on a 24 GB card); fp8: fastest with the blocks' linears in float8 "
        "(torchao; GPUs with FP8, compute capability >= 8.9)",
    )
    model.add_argument(
        "--gpu_memory_gb",
        type=float,
        help="with --performance low_memory: GB of GPU memory to plan for (default: the whole card; 0 < GB)",
    )
    model.add_argument(
        "--compile_cache",
        help="a folder: run the transformers ahead-of-time compiled, each size built once (minutes) and loaded by "
        "every later run; on CUDA the transformers' repeated block (docs/performance.md)",
    )
    model.add_argument(
        "--devices",
        help="several devices, e.g. cuda:0,cuda:1: a comparison's samplers (or a sweep's cells) split over them "
        "(docs/multi-gpu.md); instead of --device",
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative_prompt", help="default: the model's (Wan's own negative prompt for Wan models)")
    gen.add_argument("--output_path", default=str(DEFAULT_OUTPUT), help=f"PNG to write (default: {DEFAULT_OUTPUT})")
    gen.add_argument("--num_inference_steps", type=int, help="default: the model's (20 for the demo model)")
    gen.add_argument("--shift", type=float, help="timestep shift (default: the model's, 5.0 for images)")
    gen.add_argument("--guidance_scale", type=float, help="classifier-free guidance; 1 disables it")
    gen.add_argument("--guidance_scale_2", type=float, help="guidance of the low-noise expert (Wan 2.2 A14B)")
    gen.add_argument("--seed", type=int, help="default: random; the seed used is printed and stored in the PNG")
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="default: the model's (flow_unipc for Wan's). "
        + "; ".join(f"{name}: {SAMPLER_NOTES[name]}" for name in SAMPLERS),
    )
    gen.add_argument(
        "--timesteps",
        help="explicit model timesteps, e.g. 1000,750,500,250 (strictly decreasing, 1 to 1000), for a student "
        "distilled on a fixed list: they replace --num_inference_steps and --shift; 'none' turns off a model's own",
    )
    gen.add_argument(
        "--compare",
        action="store_true",
        help="render legacy_ddim and flow_unipc from one seed; write both and a labelled side-by-side image",
    )
    gen.add_argument(
        "--compare_teacher",
        action="store_true",
        help="render the student and the teacher with --sampler from one seed (implies --with_teacher)",
    )
    explore = parser.add_argument_group("sweeps and previews (docs/sweeps.md)")
    explore.add_argument(
        "--sweep",
        action="append",
        metavar="AXIS=V1,V2",
        help="sweep an axis (repeat for a grid): sampler, shift, steps, guidance, seed, model (student,teacher) or "
        "timesteps (lists separated by ';'); writes a labelled grid at --output_path, one PNG per cell, sweep.json "
        "and sweep.csv",
    )
    explore.add_argument(
        "--max_cells", type=int, default=MAX_CELLS, help=f"refuse sweeps of more cells (default: {MAX_CELLS})"
    )
    explore.add_argument(
        "--preview_every",
        type=int,
        metavar="K",
        help="every K steps, a preview of each sampler's predicted clean image: writes <output>_previews.png, a "
        "filmstrip with one row per sampler",
    )
    explore.add_argument(
        "--preview_decode_every",
        type=int,
        metavar="M",
        help="with --preview_every: every M steps the preview is the full VAE decode instead of the cheap map",
    )
    return parser


def output_paths(output_path: Path, labels: Sequence[str]) -> dict[str, Path]:
    """One PNG per label beside `output_path`: out.png -> out_legacy_ddim.png, out_flow_unipc.png."""
    if len(labels) == 1:
        return {labels[0]: output_path}
    return {label: output_path.with_name(f"{output_path.stem}_{label.replace('/', '_')}.png") for label in labels}


def check_writable(path: Path) -> None:
    """Raise ValueError, naming the flag and the folder, where no PNG can be written at `path`."""
    if path.is_dir():
        raise ValueError(f"--output_path {path} is a folder: give a file name, such as {path / DEFAULT_OUTPUT.name}")
    folder = path.parent
    while not folder.exists():  # the folders that save_png would create: their nearest existing parent decides
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--output_path {path} cannot be written: {folder} is a file, not a folder")
    try:
        if path.exists():
            path.open("ab").close()  # opens without truncating: the render replaces it only once it is done
        else:
            tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        where = error.filename or folder
        raise ValueError(f"--output_path {path} cannot be written: {error.strerror} ({where})") from None


def in_flags(message: str) -> str:
    """A library message in the CLI's terms: the parameters it names become the flags that set them."""
    for parameter, flag in LIBRARY_TO_FLAGS.items():
        message = re.sub(rf"(?<![-\w]){re.escape(parameter)}\b", flag, message)
    return message


def quiet_library_progress() -> None:
    """Turn off diffusers' and transformers' loading bars ("Loading checkpoint shards"); ours shows the denoising."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def vocabulary_notice(pipe, prompt: str) -> str | None:
    """For a model with a fixed vocabulary, the prompt's words it cannot read, and once what the model can draw."""
    from wan_t2i.vocabulary import ignored_words

    ignored = ignored_words(pipe.components.tokenizer, prompt)
    if not ignored:
        return None
    lines = [f"ignored (not in the vocabulary of {pipe.defaults.name}): {', '.join(ignored)}"]
    if pipe.defaults.vocabulary_note:
        lines += textwrap.wrap(pipe.defaults.vocabulary_note, width=100, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def handover_note(diagnostics) -> str:
    """Where a two-expert model (Wan2.2 A14B) handed over from its high- to its low-noise expert; shift moves it."""
    i, t = diagnostics.expert_handover, diagnostics.t
    if i == 0:
        return f"experts: the low-noise expert ran all {len(t)} steps"
    if i == len(t):
        return f"experts: the high-noise expert ran all {len(t)} steps"
    return f"experts: high-noise for steps 1-{i}, low-noise from step {i + 1} of {len(t)} (t {t[i - 1]} -> {t[i]})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_path = Path(args.output_path)
    if output_path.suffix.lower() != ".png":
        output_path = output_path.with_suffix(".png")
    try:
        check_writable(output_path)  # before the model loads and renders, not after
        axes = sweep_axes(args.sweep, args.max_cells) if args.sweep else None  # so is the sweep
        devices = device_list(args.device, args.devices)
    except ValueError as error:
        print(f"error: {in_flags(str(error))}", file=sys.stderr)
        return 2
    if args.sweep and (args.compare or args.compare_teacher or args.preview_every):
        print(
            "error: --sweep renders a grid: sweep the sampler or model axis (--sweep sampler=legacy_ddim,flow_unipc)"
            " instead of --compare or --compare_teacher; --preview_every is for single renders",
            file=sys.stderr,
        )
        return 2
    samplers, models = [args.sampler], None
    if args.compare:
        samplers = list(COMPARE_SAMPLERS)
    if args.compare_teacher:
        samplers, models = [args.sampler, args.sampler], ["student", "teacher"]

    # Imported only now that the flags are good: torch, diffusers and Pillow take seconds to load.
    from tqdm.auto import tqdm

    from wan_t2i.images import save_png, side_by_side
    from wan_t2i.pipeline import WanT2IPipeline

    quiet_library_progress()
    try:
        pipe = WanT2IPipeline.from_pretrained(
            args.model_path,
            args.teacher_path,
            device=args.device,
            dtype=args.dtype,
            vae_dtype=args.vae_dtype,
            with_teacher=args.with_teacher or args.compare_teacher,
            performance=args.performance,
            gpu_memory_gb=args.gpu_memory_gb,
            compile_cache=args.compile_cache,
            **({"devices": devices} if devices is not None else {}),
        )
        samplers = [name or pipe.defaults.sampler for name in samplers]  # no --sampler: the model's default
        request = pipe.request(
            args.prompt,
            samplers=samplers,
            models=models,
            negative_prompt=args.negative_prompt,
            steps=args.num_inference_steps,
            shift=args.shift,
            timesteps=args.timesteps,
            guidance_scale=args.guidance_scale,
            guidance_scale_2=args.guidance_scale_2,
            seed=args.seed,
            height=args.height,
            width=args.width,
        )
        notice = vocabulary_notice(pipe, request.prompt)
        if notice:
            print(notice)
        if axes is not None:
            return run_sweep(pipe, request, axes, args.max_cells, output_path)
        with tqdm(total=request.steps, desc="denoising " + " + ".join(samplers), unit="step") as bar:
            generation = pipe.generate(
                request,
                progress=lambda i, n: bar.update(i - bar.n),
                preview_every=args.preview_every,
                preview_decode_every=args.preview_decode_every,
            )
    except ValueError as error:  # bad flags or an unusable model: say what to change, no traceback
        print(f"error: {in_flags(str(error))}", file=sys.stderr)
        return 2

    paths = output_paths(output_path, list(generation.results))
    print(f"model: {pipe.defaults.name} on {pipe.device}; seed {generation.seed}")
    for label, result in generation.results.items():
        save_png(result.image, paths[label], result.parameters)
        print(f"{label:>20}: {paths[label]}  {result.diagnostics.verdict}")
        if result.diagnostics.expert_handover is not None:
            print(f"{'':>20}  {handover_note(result.diagnostics)}")
    if len(generation.results) > 1:
        sheet_path = output_path.with_name(f"{output_path.stem}_side_by_side.png")
        common = {k: v for k, v in next(iter(generation.results.values())).parameters.items() if k != "sampler"}
        save_png(side_by_side(generation.images), sheet_path, common | {"samplers": samplers, "models": models})
        print(f"{'side by side':>20}: {sheet_path}")
    if generation.previews:
        from wan_t2i.previews import filmstrip

        strip_path = output_path.with_name(f"{output_path.stem}_previews.png")
        save_png(filmstrip(generation.previews), strip_path, {"preview_every": args.preview_every})
        print(f"{'previews':>20}: {strip_path}  (predicted clean image every {args.preview_every} steps)")
    # One batched run renders every branch together: its stages are timed once, for all of them.
    timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in generation.timings.items())
    branches = f" ({len(generation.results)} images in one batched run)" if len(generation.results) > 1 else ""
    print(f"timings{branches}: {timings}")
    return 0


def sweep_axes(texts: Sequence[str], max_cells: int) -> dict[str, list]:
    """The --sweep flags as axes, checked (values, combinations, the cell count) before the model loads."""
    axes: dict[str, list] = {}
    for text in texts:
        name, values = parse_axis(text)
        if name in axes:
            raise ValueError(f"--sweep {name} is given twice: put all its values in one, --sweep {name}=V1,V2,...")
        axes[name] = values
    check_axes(axes, max_cells)
    return axes


def run_sweep(pipe, request, axes: dict[str, list], max_cells: int, output_path: Path) -> int:
    """--sweep: every cell rendered through the one loop, then the grid, the cells' PNGs, sweep.json and sweep.csv."""
    from tqdm.auto import tqdm

    bar = None

    def on_progress(status) -> None:
        nonlocal bar
        if bar is None:  # made at the first step, once the sweep is planned and its total known
            bar = tqdm(total=status.total, desc="sweep", unit="step")
        bar.set_description_str(f"sweep: {status}", refresh=False)  # cells 5-6/6 · step 12/20
        bar.update(status.done - bar.n)

    try:
        sweep = pipe.sweep(request, axes, max_cells=max_cells, on_progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
    written = sweep.write(output_path)
    print(f"model: {pipe.defaults.name} on {pipe.device}; seed {sweep.request.seed}; {len(sweep.cells)} cells")
    for cell, path in zip(sweep.cells, [p for k, p in written.items() if k.startswith("cell ")], strict=True):
        values = ", ".join(f"{k}={v}" for k, v in cell.row().items() if k.startswith("axis_"))
        print(
            f"  {values.replace('axis_', '')}: {path.name}  {'ok' if cell.healthy else 'GARBAGE'}: "
            f"std {cell.diagnostics.std_ratio:.3g}x"
        )
    print(f"grid: {written['grid']}; table: {written['csv']}, {written['json']}")
    print(
        f"{sweep.forwards} transformer forwards for {len(sweep.cells)} cells ({sweep.cell_forwards} cell by cell), "
        f"{sweep.timings['total']:.2f} s"
    )
    return 0
