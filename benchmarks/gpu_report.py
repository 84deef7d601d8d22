"""RESULTS.md of a GPU benchmark run: the main table, where the time goes, the other measurements, the targets.

Reads only the results dictionary that `benchmarks.gpu` writes as results.json, so a table can be rewritten from a
saved run (`python -m benchmarks.gpu --render DIR/results.json`).
"""

from __future__ import annotations

from pathlib import Path

PSNR_MIN = 35.0  # dB: an optimised image must be at least this close to the eager one

# (target name, item, field, comparison, limit); ratios are computed against the stock run of the same shape.
TARGETS = (
    ("1.3B one image <= 0.5x stock", "1.3b@480x832/ours", "vs_stock", "<=", 0.5),
    ("14B fp8 one image <= 0.65x stock with the same knobs", "14b@1024x1024/fp8", "vs_knobs", "<=", 0.65),
    ("1.3B pair / one <= its bare loops' ratio + 0.1", "1.3b@480x832/pair", "vs_one_over_floor", "<=", 0.1),
    ("14B pair / one <= its bare loops' ratio + 0.1", "14b@1024x1024/pair", "vs_one_over_floor", "<=", 0.1),
    ("14B one image <= 0.85x stock", "14b@1024x1024/ours", "vs_stock", "<=", 0.85),
    ("1.3B A/B pair <= 1.3x one image", "1.3b@480x832/pair", "vs_one", "<=", 1.3),
    ("14B A/B pair <= 2.05x one image", "14b@1024x1024/pair", "vs_one", "<=", 2.05),
    ("14B transformer loop >= 65% of bf16 peak", "14b@1024x1024/floor_b2", "mfu", ">=", 0.65),
    ("low-memory 14B at 480x832 under 20 GB", "lowmem/14b@480x832", "peak_gb", "<", 20.0),
    ("low-memory 14B at 480x832, as on a 24 GB card, under 20 GB", "lowmem24gb/14b@480x832", "peak_gb", "<", 20.0),
)


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{suffix}"


NOISY_SPREAD = 1.25  # a timed cell whose slowest run took this much longer than its fastest is marked


def cell(items: dict, key: str, field: str = "median_s", spec: str = ".3f") -> str:
    value = items.get(key)
    if value is None:
        return "-"
    if "error" in value:
        return "OOM" if value["error"] == "out of memory" else "error"
    times = value.get("times_s") or []
    noisy = field == "median_s" and len(times) > 1 and max(times) > NOISY_SPREAD * min(times)
    return fmt(value.get(field), spec) + ("*" if noisy else "")


def derived(items: dict) -> dict:
    """Ratios each target reads per shape: ours / stock, ours and fp8 / stock with the same knobs, fp8 / ours, pair /
    ours, and how far pair / ours lies above the same ratio of the bare loops (the pair's batches against batch 2)."""
    out = {}
    for key, value in items.items():
        shape, _, kind = key.rpartition("/")
        if not isinstance(value, dict) or value.get("median_s") is None:
            continue
        stock = (items.get(f"{shape}/stock") or {}).get("median_s")
        knobs = (items.get(f"{shape}/stock_knobs") or {}).get("median_s")
        one = (items.get(f"{shape}/ours") or {}).get("median_s")
        if kind in ("ours", "ours_warm", "ours_eager") and stock:
            out[(key, "vs_stock")] = value["median_s"] / stock
        if kind in ("ours", "fp8") and knobs:
            out[(key, "vs_knobs")] = value["median_s"] / knobs
        if kind == "fp8" and one:
            out[(key, "vs_ours")] = value["median_s"] / one
        if kind == "pair" and one:
            out[(key, "vs_one")] = value["median_s"] / one
            pair_floor, one_floor = (
                loop_floor(items, shape, value.get("forward_batches") or [4]),
                loop_floor(items, shape, [2]),
            )
            if pair_floor and one_floor:
                out[(key, "vs_one_over_floor")] = value["median_s"] / one - pair_floor / one_floor
    return out


EXTRA_SECTIONS = ("lowmem", "ttfi", "cudagraphs", "fp8cap")


def is_lowmem(key: str) -> bool:
    """`lowmem/...` (every layer streamed) or `lowmem24gb/...` (run as on a card of 24 GB)."""
    return key.startswith("lowmem") and "/" in key


def loop_floor(items: dict, shape: str, batches: list[int]) -> float | None:
    """The bare transformer loop of a run whose forwards have these batch sizes, one per step (a pair shares its
    first step and skips legacy_ddim's last): each `floor_bN` item times a whole loop at batch N, so the mean."""
    loops = [(items.get(f"{shape}/floor_b{batch}") or {}).get("median_s") for batch in batches]
    return None if None in loops else sum(loops) / len(loops)


def fp8_lines(
    items: dict, ratios: dict, shapes: list[str], scales: str = "row", multi_kernel: bool = False, fused: bool = False
) -> list[str]:
    """The fp8 preset against bf16 `fastest` and stock-with-the-same-knobs, with its error and its compile cost."""
    rows = [shape for shape in shapes if f"{shape}/fp8" in items or f"{shape}/fp8_floor_b2" in items]
    if not rows:
        return []
    lines = [
        "",
        f"FP8 (`--performance fp8`: torchao float8 dynamic activation + weight quantisation, per-{scales} scales, on "
        "the blocks' linear layers, then compiled as `fastest`"
        + (", with Inductor's multi_kernel" if multi_kernel else "")
        + (", attention projections fused" if fused else "")
        + "). First image: the first fp8 image of the process, its "
        "compilation included (the bf16 graphs of the same shapes were compiled before it; `graphs`: how many Dynamo "
        "compiled for it). Error and PSNR against the eager bf16 forward and image.",
        "",
        "| model @ size | stock, same knobs | ours bf16 | ours fp8 | fp8/same knobs | fp8/bf16 | pair fp8 "
        "| first image s (graphs) | floor b2 fp8 (MFU of bf16 / fp8 peak) | forward rel. error | PSNR dB one / pair "
        "| peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in rows:
        one, floor = items.get(f"{shape}/fp8") or {}, items.get(f"{shape}/fp8_floor_b2") or {}
        mfu, mfu_fp8 = floor.get("mfu"), floor.get("mfu_fp8")
        lines.append(
            f"| {shape} | {cell(items, f'{shape}/stock_knobs')} | {cell(items, f'{shape}/ours')} "
            f"| {cell(items, f'{shape}/fp8')} | {fmt(ratios.get((f'{shape}/fp8', 'vs_knobs')), '.2f')} "
            f"| {fmt(ratios.get((f'{shape}/fp8', 'vs_ours')), '.2f')} | {cell(items, f'{shape}/fp8_pair')} "
            f"| {fmt(one.get('first_image_s'), '.1f')} ({fmt(one.get('graphs_compiled'), 'd')}) "
            f"| {cell(items, f'{shape}/fp8_floor_b2')} ({fmt(mfu and 100 * mfu, '.0f', '%')} / "
            f"{fmt(mfu_fp8 and 100 * mfu_fp8, '.0f', '%')}) | {fmt(floor.get('rel_error_vs_eager'), '.2e')} "
            f"| {cell(items, f'{shape}/fp8', 'psnr_db', '.1f')} / {cell(items, f'{shape}/fp8_pair', 'psnr_db', '.1f')} "
            f"| {cell(items, f'{shape}/fp8', 'peak_gb', '.1f')} |"
        )
    return lines


def profile_lines(items: dict, shapes: list[str]) -> list[str]:
    """Where each run's time goes: the pipeline's phases against the bare transformer loop at the same batch."""
    lines = [
        "",
        "Where the time goes (medians of the pipeline's own phase timings, synchronised; `loop - floor` is what the "
        "denoising loop spends beyond the 20 bare transformer forwards: solver steps, guidance, routing):",
        "",
        "| model @ size / run | total | text encoding | denoising loop | floor | loop - floor | VAE decode |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = [(f"{shape}/{run}", shape, batch) for shape in shapes
            for run, batch in (("ours", 2), ("ours_warm", 2), ("pair", 4))]  # fmt: skip
    runs += [(key, key.split("/", 1)[1], 2) for key in items if is_lowmem(key)]
    for key, shape, batch in runs:
        value = items.get(key) or {}
        phases = value.get("phases_s")
        if not phases:
            continue
        floor = loop_floor(items, shape, value.get("forward_batches") or [batch])
        loop = phases.get("denoise")
        extra = fmt(loop - floor, ".3f") if floor is not None and loop is not None else "-"
        lines.append(
            f"| {key} | {fmt(value.get('median_s'), '.3f')} | {fmt(phases.get('encode'), '.3f')} | {fmt(loop, '.3f')} "
            f"| {fmt(floor, '.3f')} | {extra} | {fmt(phases.get('decode'), '.3f')} |"
        )
    return lines if len(lines) > 5 else []


def write_results_md(results: dict, path: Path) -> None:
    """Write the RESULTS.md of `results` (the dictionary of results.json) to `path`."""
    items = results["items"]
    ratios = derived(items)
    shapes = list(dict.fromkeys(k.rpartition("/")[0] for k in items if "@" in k and not k.startswith(EXTRA_SECTIONS)))
    lines = header_lines(results["meta"], items.get("peak") or {}, items.get("peak_fp8"))
    lines += [main_row(items, ratios, shape) for shape in shapes]
    meta = results["meta"]
    lines += fp8_lines(
        items,
        ratios,
        shapes,
        meta.get("fp8_scales", "row"),
        meta.get("fp8_multi_kernel", False),
        meta.get("fp8_fused", False),
    )
    lines += profile_lines(items, shapes)
    lines += ["", "| other | result |", "|---|---|"]
    lines += [row for key, value in items.items() if (row := other_row(items, key, value))]
    lines += target_lines(items, ratios)
    if results["skipped"]:
        lines += ["", f"Skipped (time budget, or --skip): {', '.join(results['skipped'])}."]
    if results["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{e['item']}: {items.get(e['item'], {}).get('error')}" for e in
                                              results["errors"])]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def header_lines(meta: dict, peak: dict, peak_fp8: dict | None = None) -> list[str]:
    """Device, software, code, command and how to read the table, then the main table's head."""
    versions = ", ".join(
        f"{k} {meta[k]}" for k in ("torch", "diffusers", "transformers", "triton", "python") if k in meta
    )
    code = []
    if "commit" in meta:  # records from before 2026-12 name their commit in record.json only
        state = "unknown" if meta["commit"] is None else meta["commit"][:12]
        code = [f"Code: commit {state}" + (", with uncommitted changes" if meta.get("dirty") else "") + "."]
    return [
        "# GPU benchmark results",
        "",
        f"Device: {meta.get('device')} ({fmt(meta.get('gpu_memory_gb'), '.0f')} GB); {versions}; cuDNN "
        f"{meta.get('cudnn', '-')}. Run {meta.get('date')}, {fmt(meta.get('elapsed_s'), '.0f')} s.",
        f"bf16 matmul peak measured in this run: {fmt(peak.get('tflops'), '.0f')} TFLOP/s "
        f"({peak.get('n', '-')}^3, median)"
        + (f"; fp8 (e4m3, per-row scales): {fmt(peak_fp8.get('tflops'), '.0f')} TFLOP/s." if peak_fp8 else "."),
        *([f"Host CPU: {meta['host_cpu']}."] if meta.get("host_cpu") else []),
        *code,
        "",
        f"Reproduce: `{meta.get('command')}` (from the repository root; diffusers on PYTHONPATH).",
        *([f"Note: {meta['note']}"] if meta.get("note") else []),
        "",
        f"Random weights built on the device; {meta.get('steps')} steps, guidance 5, shift 5; transformer and UMT5 "
        "encoder in bf16 (fp32 in the CPU smoke run), fp32 VAE as loaded. Times are medians in seconds "
        "(synchronised); `ours` renders a new prompt each run (text cache cold), `ours warm` repeats one prompt. "
        "PSNR: the optimised image against this project's eager image (same seed). Peak: "
        f"torch.cuda.max_memory_allocated in GB (10^9 bytes). `*`: the cell's slowest run took over {NOISY_SPREAD:g}x "
        "its fastest (the shared host was busy); `times_s` in the JSON has every run.",
        "",
        "`stock, same knobs`: the stock pipeline on the same modules once `fastest` is applied to them (diffusers' "
        "compile_repeated_blocks, cuDNN attention, bf16 VAE).",
        "",
        "| model @ size | stock | stock, same knobs | ours eager | ours | ours/stock | ours/same knobs | ours warm "
        "| pair | pair/ours | floor b2 (MFU) | floor b4 (MFU) | peak GB stock / ours / pair | PSNR dB one / pair |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def main_row(items: dict, ratios: dict, shape: str) -> str:
    """One model at one size: stock, eager and optimised times, the pair, the bare loops, memory and PSNR."""

    def floor(batch: int) -> str:
        value = items.get(f"{shape}/floor_b{batch}") or {}
        if "error" in value:
            return "error"
        mfu = value.get("mfu")
        return f"{fmt(value.get('median_s'), '.3f')} ({fmt(mfu and 100 * mfu, '.0f', '%')})"

    return (
        f"| {shape} | {cell(items, f'{shape}/stock')} | {cell(items, f'{shape}/stock_knobs')} "
        f"| {cell(items, f'{shape}/ours_eager')} "
        f"| {cell(items, f'{shape}/ours')} | {fmt(ratios.get((f'{shape}/ours', 'vs_stock')), '.2f')} "
        f"| {fmt(ratios.get((f'{shape}/ours', 'vs_knobs')), '.2f')} | {cell(items, f'{shape}/ours_warm')} "
        f"| {cell(items, f'{shape}/pair')} "
        f"| {fmt(ratios.get((f'{shape}/pair', 'vs_one')), '.2f')} | {floor(2)} | {floor(4)} "
        f"| {cell(items, f'{shape}/stock', 'peak_gb', '.1f')} / {cell(items, f'{shape}/ours', 'peak_gb', '.1f')} "
        f"/ {cell(items, f'{shape}/pair', 'peak_gb', '.1f')} "
        f"| {cell(items, f'{shape}/ours', 'psnr_db', '.1f')} / {cell(items, f'{shape}/pair', 'psnr_db', '.1f')} |"
    )


def workloads_text(w: dict | None) -> str:
    """The sweep and the previewed pair under graphs against the same without (bench_cudagraphs)."""
    if not w:
        return ""
    g, p = w["graphs"], w["plain"]
    return (
        f"; 2x2 sweep {fmt(g['sweep_s'], '.2f')} s vs {fmt(p['sweep_s'], '.2f')} s without graphs "
        f"({fmt(w['sweep_vs_plain'], '.2f')}x; first {fmt(g['sweep_first_s'], '.1f')} / "
        f"{fmt(p['sweep_first_s'], '.1f')} s), pair with previews every 5 steps {fmt(g['previews_s'], '.2f')} s vs "
        f"{fmt(p['previews_s'], '.2f')} s ({fmt(w['previews_vs_plain'], '.2f')}x; {g['previews_seen']} previews); "
        f"lowest PSNR graphs vs without: sweep cells {fmt(w['sweep_psnr_db_min'], '.1f')} dB, previewed pair "
        f"{fmt(w['previews_psnr_db_min'], '.1f')} dB; previews vs none under graphs "
        f"{fmt(w['previews_change_images_db'], '.1f')} dB; the pair in a new thread (as app jobs run), twice: "
        f"{' / '.join(fmt(t, '.2f') for t in g['threads_s'])} s vs "
        f"{' / '.join(fmt(t, '.2f') for t in p['threads_s'])} s"
        + (f"; in the app's one GPU thread, twice: {' / '.join(fmt(t, '.2f') for t in g['gpu_thread_s'])} s vs "
           f"{' / '.join(fmt(t, '.2f') for t in p['gpu_thread_s'])} s" if "gpu_thread_s" in g else "")
    )  # fmt: skip


def other_row(items: dict, key: str, value: dict) -> str | None:
    """The row of the "other" table for `key`, or None for the items the main table holds."""
    if "error" in value and key.startswith(EXTRA_SECTIONS):
        return f"| {key} | {value['error']} |"
    if is_lowmem(key):
        return lowmem_row(items, key, value)
    if key.endswith("/solver_loop"):
        return (
            f"| {key} (all steps, no model) | flow_unipc {fmt(1e3 * value.get('flow_unipc_s', 0), '.1f')} ms, "
            f"pair {fmt(1e3 * value.get('pair_s', 0), '.1f')} ms; diffusers' UniPC `step` "
            f"{fmt(1e3 * value.get('diffusers_unipc_step_s', 0), '.1f')} ms |"
        )
    if key.startswith("cudagraphs/"):
        pair = value.get("pair") or {}
        floors = [(value.get(f"floor_b{b}") or {}).get("median_s") for b in (2, 4, 8)]
        return (
            f"| {key} (`fastest` with CUDA graphs) | one image {cell(items, key)} s "
            f"({fmt(value.get('vs_compiled'), '.2f')}x without graphs: "
            f"{fmt((value.get('plain_one') or {}).get('median_s'), '.3f')} s; "
            f"{fmt(value.get('vs_floor_b2'), '.2f')}x the bare loop under graphs), pair "
            f"{fmt(pair.get('median_s'), '.3f')} s ({fmt(value.get('pair_vs_one'), '.2f')}x one image, "
            f"{fmt(value.get('pair_vs_compiled'), '.2f')}x the pair without graphs: "
            f"{fmt((value.get('plain_pair') or {}).get('median_s'), '.3f')} s; "
            f"{fmt(value.get('pair_vs_floor_b4'), '.2f')}x the bare batch-4 loop); 2x2 sweep "
            f"{fmt(value.get('sweep_vs_floor_b8'), '.2f')}x the bare batch-8 loop; bare loop under graphs "
            f"b2 / b4 / b8 {' / '.join(fmt(f, '.3f') for f in floors)} s; first image "
            f"{cell(items, key, 'first_image_s', '.1f')} s; PSNR vs eager {cell(items, key, 'psnr_db', '.1f')} dB"
            f"{workloads_text(value.get('workloads'))} |"
        )
    if key.startswith("fp8cap"):
        return fp8cap_row(key, value)
    if key.endswith("/fp8_quantize"):
        return (
            f"| {key} | {cell(items, key, 'seconds', '.1f')} s; GPU memory allocated "
            f"{cell(items, key, 'allocated_gb_before', '.1f')} -> {cell(items, key, 'allocated_gb_after', '.1f')} GB |"
        )
    if key.startswith("ttfi_aot_"):
        start = {
            "first": "first start, empty cache folder",
            "second": "second start, new process",
            "profiled": "another second start, the blocks not read ahead, its first image under cProfile (slower)",
        }
        start = start[key.removeprefix("ttfi_aot_").partition("/")[0]]
        ahead = "-" if value.get("preloaded") is None else value["preloaded"]
        phases = phases_text(value)
        return (
            f"| {key} (compile_cache: {start}) | first image after {cell(items, key, 'total_s', '.1f')} s (import "
            f"{cell(items, key, 'import_s', '.1f')}, build {built(items, key)}, first image "
            f"{cell(items, key, 'first_image_s', '.2f')}, next image {cell(items, key, 'second_image_s', '.2f')}; "
            f"{value.get('kind', 'packages')} built / loaded {value.get('packages_built')} / "
            f"{value.get('packages_loaded')} (read ahead {ahead}); first image's phases: "
            f"{phases or '-'}) |"
        )
    if key.startswith("ttfi_disk_"):
        start = {
            "first": "first start, empty cache folder",
            "second": "second start, new process",
            "unwarmed": "another second start, without from_pretrained's warm-ups (text encoder, blocks)",
            "switched": f"another second start, Python's thread switch interval {value.get('switch_interval_s')} s "
            "while from_pretrained runs",
            "profiled": "another second start, the blocks read ahead, its first image under cProfile (slower)",
        }[key.removeprefix("ttfi_disk_").partition("/")[0]]
        phases = phases_text(value)
        following = phases_text(value, "second_phases_s")
        next_phases = f": {following}" if following else ""
        gigabytes = fmt(value.get("evicted_bytes", 0) / 1e9, ".1f")
        return (
            f"| {key} (weights from disk, compile_cache: {start}) | **{cell(items, key, 'beyond_weights_s', '.2f')} "
            f"s beyond loading the weights** (from_pretrained {cell(items, key, 'from_pretrained_s', '.2f')} s, of "
            f"which the weights {cell(items, key, 'weights_s', '.2f')} s from {gigabytes} GB of files out of the page "
            f"cache; first image {cell(items, key, 'first_image_s', '.2f')} s: {phases or '-'}; next image "
            f"{cell(items, key, 'second_image_s', '.2f')} s{next_phases}; import "
            f"{cell(items, key, 'import_s', '.1f')} s; "
            f"{value.get('kind')} built / loaded {value.get('packages_built')} / {value.get('packages_loaded')}, read "
            f"ahead {value.get('preloaded')}; reading them {fmt(value.get('read_block_s'), '.2f')} s, the first "
            f"image's wait for them {fmt(value.get('preload_wait_s'), '.2f')} s; files added to the cache "
            f"{len(value.get('cache_files_added', []))}; the text encoder's warm-up "
            f"{fmt(value.get('warm_up_s'), '.2f')} s, the blocks' {fmt(value.get('block_warm_up_s'), '.2f')} s"
            f"{counters_text(value)}) |"
        )
    if key.startswith("ttfi/"):
        return (
            f"| {key} (fresh process, cold compile cache) | first image after {cell(items, key, 'total_s', '.1f')} "
            f"s (import {cell(items, key, 'import_s', '.1f')}, build {built(items, key)}, first "
            f"image incl. compile {cell(items, key, 'first_image_s', '.1f')}, next image "
            f"{cell(items, key, 'second_image_s', '.2f')}) |"
        )
    if key.endswith("/text_graphs"):
        return (
            f"| {key} (a new prompt's encoding) | CUDA graphs {fmt(value.get('graphs_s', 0) * 1e3, '.1f')} ms, eager "
            f"{fmt(value.get('eager_s', 0) * 1e3, '.1f')} ms ({fmt(value.get('graphs_vs_eager'), '.2f')}x); "
            f"embeddings equal bit for bit: {value.get('bit_equal')}; graphs for token lengths "
            f"{value.get('token_lengths')} |"
        )
    if key.endswith("/attention_check") and "flash" in value:
        flash, cudnn = value["flash"], value.get("cudnn", {})
        return (
            f"| {key} | flash {fmt(flash.get('median_s', 0) * 1e3, '.2f')} ms, cuDNN "
            f"{fmt(cudnn.get('median_s', 0) * 1e3, '.2f')} ms (rel. error {fmt(cudnn.get('rel_error'), '.1e')}); "
            f"cuDNN used: {value.get('use_cudnn')} |"
        )
    if key.endswith("/first_forward"):
        floors = " / ".join(cell(items, key.replace("first_forward", f"floor_b{b}"), "first_forward_s", ".1f")
                            for b in (2, 4))  # fmt: skip
        return (
            f"| {key} (compile included) | b2 {cell(items, key, 'seconds', '.1f')} s; other shapes' first "
            f"forwards b2 / b4: {floors} s; {value.get('settings')} |"
        )
    if key.endswith("/build"):
        return f"| {key} | {cell(items, key, 'seconds', '.1f')} s |"
    return None


def fp8cap_row(key: str, value: dict) -> str:
    """A capped-memory fp8 case: resident memory and each run's peak (or OOM) under the cap."""
    runs = []
    for name in ("one", "pair"):
        run = value.get(name) or {}
        state = "OOM" if run.get("error") else f"{fmt(run.get('seconds'), '.2f')} s"
        runs.append(f"{name} {state}, peak {fmt(run.get('peak_gb'), '.1f')} GB")
    int8 = ""
    if "umt5_saved_gb" in value:
        int8 = (
            f"; UMT5 int8 weight-only saved {fmt(value['umt5_saved_gb'], '.1f')} GB, embedding rel. error "
            f"{fmt(value.get('umt5_rel_error'), '.2e')}"
        )
    return (
        f"| {key} (process capped to {fmt(value.get('gpu_gb'), 'g')} GB) | resident "
        f"{fmt(value.get('resident_gb'), '.1f')} GB; {'; '.join(runs)}{int8} |"
    )


def lowmem_row(items: dict, key: str, value: dict) -> str:
    card = (
        f"as on a {fmt(value['gpu_gb'], 'g')} GB card: {value.get('resident_blocks')} of "
        f"{value.get('blocks')} blocks kept on the GPU, the rest streamed"
        if value.get("gpu_gb")
        else "every layer streamed"
    )
    return (
        f"| {key} (from CPU memory, {card}, {value.get('steps_run')} steps) | {cell(items, key)} s, "
        f"{fmt(value.get('slowdown_vs_ours'), '.1f')}x the optimised time; peak "
        f"{cell(items, key, 'peak_gb', '.1f')} GB generating, {cell(items, key, 'apply_peak_gb', '.1f')} GB "
        f"setting up ({cell(items, key, 'apply_s', '.0f')} s to pin the weights); PSNR vs eager "
        f"{cell(items, key, 'psnr_db', '.1f')} dB |"
    )


def target_lines(items: dict, ratios: dict) -> list[str]:
    """Each target met or not, and the worst PSNR of any optimised image."""
    lines = ["", "| target | measured | met |", "|---|---|---|"]
    for name, key, measured, op, limit in TARGETS:
        value = ratios.get((key, measured)) if measured.startswith("vs_") else (items.get(key) or {}).get(measured)
        met = (
            None
            if value is None
            else (value <= limit if op == "<=" else value < limit if op == "<" else value >= limit)
        )
        lines.append(f"| {name} | {fmt(value, '.3f')} | {'-' if met is None else 'yes' if met else 'NO'} |")
    psnrs = [(k, f, v[f]) for k, v in items.items() for f in ("psnr_db",) if isinstance(v, dict) and f in v]
    worst = min(psnrs, key=lambda x: float(x[2]), default=None)
    if worst is not None:
        met = float(worst[2]) >= PSNR_MIN
        lines.append(f"| every optimised image >= {PSNR_MIN:g} dB | {fmt(worst[2], '.1f')} ({worst[0]}) "
                     f"| {'yes' if met else 'NO'} |")  # fmt: skip
    return lines


def phases_text(value: dict, key: str = "first_phases_s") -> str:
    """A ttfi row's first image (or with `key`, another) by phase ("encode 0.52, denoise 1.21, decode 0.21"), or ""
    for older records."""
    phases = value.get(key) or {}
    return ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if k != "total")


def counters_text(value: dict) -> str:
    """A ttfi row's compile counters over its first image ("; compiled during the first image: inductor/... 3, ..."),
    or "" where none changed or the record is older."""
    counters = value.get("first_image_compile_counters") or {}
    if not counters:
        return ""
    return "; compiled during the first image: " + ", ".join(f"{k} {n}" for k, n in counters.items())


def built(items: dict, key: str) -> str:
    """A ttfi row's model building: the text encoder's seconds + the rest's (the total alone in older records)."""
    if "text_encoder_build_s" not in items[key]:
        return cell(items, key, "build_s", ".1f")
    return f"{cell(items, key, 'text_encoder_build_s', '.1f')} + {cell(items, key, 'build_s', '.1f')} s"
