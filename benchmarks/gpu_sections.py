"""The GPU benchmark's model sections (`1.3b`, `14b`): stock diffusers against this project's pipeline, eager and
optimised, for each resolution, and stock diffusers again with the same knobs on the same modules; and `cudagraphs`,
the optimised 1.3B with CUDA graphs on top."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from dataclasses import replace

import torch

from benchmarks.gpu_measure import (
    check_attention,
    forward_batches,
    forward_inputs,
    log,
    measure,
    measure_floor,
    peak_gb,
    reset_peak,
    restore_default_flags,
    solver_loop,
    timed,
)
from benchmarks.gpu_models import (
    PAIR,
    REFERENCE_PROMPT,
    Counts,
    build_components,
    build_text_encoder,
    run_ours,
    run_stock,
    stock_pipeline,
    tag,
)
from benchmarks.gpu_record import Bench
from wan_t2i.loading import WanComponents
from wan_t2i.metrics import psnr
from wan_t2i.performance import PerformanceSettings, apply
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.single_frame import flatten_vae, is_flat, unflatten_vae
from wan_t2i.text_graphs import eager_text_encoder, graph_text_encoder


def optimised_settings(bench: Bench, model: str) -> PerformanceSettings:
    """`fastest` on CUDA, without cuDNN attention if it is not faster and as exact here; on CPU compile, bf16 2D VAE."""
    scale = bench.scale
    if scale.device != "cuda":  # smoke: exercise the compile, bf16-VAE and 2D-VAE paths on the CPU
        return PerformanceSettings(compile=True, vae_dtype=torch.bfloat16, vae_2d=True)
    settings = PerformanceSettings.fastest(scale.device)
    if settings.attention == "cudnn":
        config = scale.transformers[model]
        size = max(bench.resolutions(model), key=lambda s: s[0] * s[1])
        tokens = (size[0] // 16) * (size[1] // 16)
        check = bench.item(
            model, f"{model}/attention_check",
            lambda: check_attention(config["num_attention_heads"], config["attention_head_dim"], tokens, "cuda"),
        )  # fmt: skip
        if not (check and check.get("use_cudnn")):
            settings = replace(settings, attention=None)
    return settings


def settled_settings(bench: Bench, model: str) -> PerformanceSettings:
    """`fastest` on CUDA as the model's section settled it (attention kernel or compilation dropped after a failed
    first forward); `fastest` itself when that section did not run."""
    fastest = PerformanceSettings.fastest("cuda")
    fields = bench.results["meta"].get(f"settings_{model}_fields")
    return replace(fastest, **fields) if fields else fastest


def settle_settings(
    bench: Bench, model: str, components: WanComponents, settings: PerformanceSettings, size: tuple[int, int]
) -> PerformanceSettings:
    """Apply `settings`; if the first compiled forward fails, fall back (PyTorch's attention, then eager) and say so."""
    fallbacks = [settings, replace(settings, attention=None), replace(settings, attention=None, compile=False)]
    items, meta = bench.results["items"], bench.results["meta"]
    for candidate in dict.fromkeys(fallbacks):
        restore_default_flags()
        torch._dynamo.reset()
        apply(components, candidate)
        try:
            with torch.inference_mode():
                inputs = forward_inputs(components.transformer, 2, size, bench.scale.device)
                seconds, _ = timed(lambda: components.transformer(**inputs))  # noqa: B023 - called at once
        except Exception as err:  # noqa: BLE001 - recorded; the next candidate is tried
            failed = bench.failure(f"{model}/settings", err)
            items[f"{model}/settings_failed_{len(bench.results['errors'])}"] = failed | {"settings": repr(candidate)}
            log(f"{model}: {candidate} failed at the first forward ({type(err).__name__}); falling back")
            continue
        items[f"{tag(model, size)}/first_forward"] = {"seconds": seconds, "settings": repr(candidate)}
        meta[f"settings_{model}"] = repr(candidate)
        meta[f"settings_{model}_fields"] = {"compile": candidate.compile, "attention": candidate.attention}
        log(f"{model}: first forward at {size} (compile included) {seconds:.1f} s with {candidate}")
        bench.save()
        return candidate
    raise RuntimeError(f"{model}: no settings ran")


def bench_model(bench: Bench, model: str, text_encoder, tokenizer) -> WanComponents | None:
    """The section of one model: build it, the eager runs at each size, then the optimised runs at each size."""
    holder: dict = {}

    def build():
        seconds, holder["components"] = timed(lambda: build_components(model, bench.scale, text_encoder, tokenizer))
        params = sum(p.numel() for p in holder["components"].transformer.parameters())
        return {"seconds": seconds, "transformer_params": params, "peak_gb": peak_gb()}

    restore_default_flags()
    bench.item(model, f"{model}/build", build)
    if "components" not in holder:
        return None
    components = holder.pop("components")
    sizes = bench.resolutions(model)
    references = {size: bench.references.setdefault((model, size), {}) for size in sizes}
    stock, eager = stock_pipeline(components), WanT2IPipeline(components)
    for size in sizes:
        bench_eager(bench, model, size, stock, eager, references[size])
    # Settings applied in place, then every shape compiles at its first forward (the floor's).
    settle_settings(bench, model, components, optimised_settings(bench, model), sizes[0])
    pipe = WanT2IPipeline(components)
    for size in sizes:
        bench_optimised(bench, model, size, pipe, references[size])
    if "fp8" in bench.sections:
        from benchmarks.gpu_fp8 import bench_fp8  # imports nothing of torchao until it runs

        bench_fp8(bench, model, components, references)
    return components


def bench_eager(bench: Bench, model: str, size: tuple[int, int], stock, eager: WanT2IPipeline, reference: dict):
    """Stock diffusers, and this project's pipeline exactly as loaded: its images and a forward are the references
    that the optimised runs are checked against."""
    key, n, steps = tag(model, size), bench.scale.counts_of(model, size), bench.scale.steps

    def stock_runs():
        return measure(lambda: run_stock(stock, bench.prompts(), size, steps), n.stock_warmup, n.stock_runs)

    def eager_reference():
        reset_peak()
        seconds, generation = timed(lambda: run_ours(eager, REFERENCE_PROMPT, size, steps))
        reference["one"] = generation["flow_unipc"].image
        result = {"median_s": seconds, "times_s": [seconds], "peak_gb": peak_gb()}
        stock_image = run_stock(stock, REFERENCE_PROMPT, size, steps)
        result["psnr_vs_stock_db"] = psnr(generation["flow_unipc"].image, stock_image)  # differ: grids differ
        if n.pair_eager:
            reference["pair"] = run_ours(eager, REFERENCE_PROMPT, size, steps, PAIR).images
        transformer = eager.components.transformer
        with torch.inference_mode():
            reference["forward"] = transformer(**forward_inputs(transformer, 2, size, bench.scale.device))[0].float()
        return result

    stock_result = bench.item(model, f"{key}/stock", stock_runs)
    estimate = (stock_result or {}).get("median_s") or 0.0
    bench.item(model, f"{key}/ours_eager", eager_reference, need_s=3 * estimate)


def bench_optimised(bench: Bench, model: str, size: tuple[int, int], pipe: WanT2IPipeline, reference: dict) -> None:
    """The optimised pipeline at one size: the bare loop at batch 2 and 4, one image, one warm, and the A/B pair."""
    key, n, steps = tag(model, size), bench.scale.counts_of(model, size), bench.scale.steps
    items = bench.results["items"]
    estimate = ((items.get(f"{key}/stock") or {}).get("median_s") or 0.0) * 0.8  # one optimised image, at most
    peak_tflops = (items.get("peak") or {}).get("tflops")
    transformer = pipe.components.transformer

    def floor(batch: int) -> dict:
        result, out = measure_floor(transformer, batch, size, steps, n.floor_runs, peak_tflops, n.floor_warmup)
        if batch == 2 and reference.get("forward") is not None:
            eager = reference["forward"]
            result["rel_error_vs_eager"] = ((out.float() - eager).norm() / eager.norm()).item()
        return result

    def ours_warm():
        prompt = bench.prompts()
        return measure(lambda: run_ours(pipe, prompt, size, steps), 1, n.warm_runs)

    def ours():
        return ours_checked(bench, pipe, size, n, reference)

    def pair():
        return pair_checked(bench, pipe, size, n, reference)

    def stock_knobs():
        # diffusers' WanPipeline on the same modules, which `apply` has just compiled (diffusers' own
        # compile_repeated_blocks), put on bf16 VAE and cuDNN attention: what diffusers' optimisation docs give.
        # Its guided forwards run at batch 1, a shape of their own: the warm-up compiles it.
        stock = stock_pipeline(pipe.components)
        with diffusers_knobs_only(pipe.components):
            return measure(lambda: run_stock(stock, bench.prompts(), size, steps), max(1, n.stock_warmup), n.stock_runs)

    bench.item(model, f"{key}/solver_loop", lambda: solver_loop(size, steps, bench.scale.device))
    bench.item(model, f"{key}/floor_b2", lambda: floor(2), need_s=estimate)
    bench.item(model, f"{key}/ours", ours, need_s=(n.runs + 1) * estimate)
    bench.item(model, f"{key}/stock_knobs", stock_knobs, need_s=(n.stock_runs + 2) * estimate)
    if n.warm_runs:
        bench.item(model, f"{key}/ours_warm", ours_warm, need_s=(n.warm_runs + 1) * estimate)
    bench.item(model, f"{key}/floor_b4", lambda: floor(4), need_s=2 * estimate)
    bench.item(model, f"{key}/pair", pair, need_s=2 * (n.pair_runs + 1) * estimate)
    if pipe.components.device.type == "cuda":
        bench.item(model, f"{key}/text_graphs", lambda: text_encoder_graphs(bench, pipe))


@contextlib.contextmanager
def diffusers_knobs_only(components: WanComponents) -> Iterator[None]:
    """The modules with diffusers' own knobs only, for the duration: this project's text-encoder graphs and one-frame
    2D VAE (which stock diffusers has neither of) taken off, then put back as they were. The records of 476451f and
    11ee2e8 (2026-12-07-h100-text-graphs and -vae-2d) ran `stock, same knobs` with them on."""
    flat = is_flat(components.vae)
    unflatten_vae(components.vae)
    try:
        with eager_text_encoder(components.text_encoder):
            yield
    finally:
        if flat:
            flatten_vae(components.vae)


def ours_checked(bench: Bench, pipe: WanT2IPipeline, size: tuple[int, int], n: Counts, reference: dict) -> dict:
    """One image per run, a new prompt each; a first run of the reference prompt is checked against the eager one."""
    steps = bench.scale.steps
    reset_peak()
    check_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps))
    result = measure(lambda: run_ours(pipe, bench.prompts(), size, steps), 0, n.runs, check_run_s=check_s)
    if "one" in reference:
        result["psnr_db"] = psnr(generation["flow_unipc"].image, reference["one"])
    return result


def pair_checked(bench: Bench, pipe: WanT2IPipeline, size: tuple[int, int], n: Counts, reference: dict) -> dict:
    """The A/B pair in one batched run, checked likewise; also the batch of each of its transformer forwards."""
    steps = bench.scale.steps
    reset_peak()
    check_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, steps, PAIR))
    result = measure(lambda: run_ours(pipe, bench.prompts(), size, steps, PAIR), 0, n.pair_runs)
    result["check_run_s"] = check_s
    result["forward_batches"] = forward_batches(PAIR, steps)  # what its floor is made of
    if "one" in reference:
        result["psnr_db"] = psnr(generation["flow_unipc"].image, reference["one"])
    if "pair" in reference:
        legacy = generation["legacy_ddim"].image
        result["psnr_legacy_vs_eager_pair_db"] = psnr(legacy, reference["pair"]["legacy_ddim"])
    return result


TEXT_PROMPTS = 8


def text_encoder_graphs(bench: Bench, pipe: WanT2IPipeline) -> dict:
    """A new prompt's encoding with the text encoder replayed from CUDA graphs (`text_graphs`) and eagerly: the
    seconds of each (medians over TEXT_PROMPTS prompts, the graphs' first two calls apart: eager, then recording) and
    whether every embedding is the same bit for bit."""
    encoder = pipe.components.text_encoder
    graph_text_encoder(encoder)  # fastest's graphs (kept), or new ones
    graphed = encoder.forward
    prompts = [bench.prompts() for _ in range(TEXT_PROMPTS)]

    def encode_each() -> list[tuple[float, torch.Tensor]]:
        pipe._text_cache.clear()
        return [timed(lambda: pipe.encode_prompt(p)) for p in prompts]  # noqa: B023 - called at once

    with torch.inference_mode():
        graphs = encode_each()
        with eager_text_encoder(encoder):
            eager = encode_each()
            eager_again = encode_each()  # the eager times once warm, as the graphs' replays are
    recorded = sum(r is not None for r in graphed.graphs.values())
    equal = all(torch.equal(g, e) for (_, g), (_, e) in zip(graphs, eager, strict=True))
    graph_s = statistics.median(s for s, _ in graphs[2:])
    eager_s = statistics.median(s for s, _ in eager_again)
    return {
        "graphs_s": graph_s, "eager_s": eager_s, "graphs_vs_eager": graph_s / eager_s,
        "first_graph_call_s": graphs[0][0], "recording_call_s": graphs[1][0], "graphs_recorded": recorded,
        "bit_equal": equal,
        "token_lengths": sorted({key[0][1] for key in graphed.graphs}),
    }  # fmt: skip


def bench_cudagraphs(bench: Bench, tokenizer) -> None:
    """`fastest` with CUDA graphs (torch.compile mode "reduce-overhead") against the same without, in one process:
    does replaying whole blocks beat launching their kernels, for one image, the pair, a sweep and live previews?
    The evidence for compile_mode "auto" (`wan_t2i.performance.graphs_pay`)."""
    scale = bench.scale
    model, size = scale.cudagraphs

    def run():
        components = build_components(model, scale, build_text_encoder(scale, len(tokenizer)), tokenizer)
        settings = PerformanceSettings(compile=True, compile_mode="reduce-overhead")  # the CPU smoke run
        if scale.device == "cuda":
            settings = replace(settled_settings(bench, model), compile=True, compile_mode="reduce-overhead")
        restore_default_flags()
        torch._dynamo.reset()
        apply(components, settings)
        pipe = WanT2IPipeline(components)
        first_s, generation = timed(lambda: run_ours(pipe, REFERENCE_PROMPT, size, scale.steps))
        result = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps), 1, 3, first_image_s=first_s)
        eager = bench.references.get((model, size), {}).get("one")
        if eager is not None:
            result["psnr_db"] = psnr(generation["flow_unipc"].image, eager)
        pair = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps, PAIR), 1, 2)
        items = bench.results["items"]
        one = (items.get(f"{tag(model, size)}/ours") or {}).get("median_s")
        one_pair = (items.get(f"{tag(model, size)}/pair") or {}).get("median_s")
        # The bare loops under graphs: what the pipeline's runs are measured against (one image's batch 2, the
        # pair's 4, the 2x2 sweep's 8: four guided cells in lock-step).
        peak = (items.get("peak") or {}).get("tflops")
        floors = {
            f"floor_b{b}": measure_floor(components.transformer, b, size, scale.steps, 3, peak)[0] for b in (2, 4, 8)
        }
        graphs = sweep_and_previews(pipe, size, scale.steps)
        torch._dynamo.reset()
        apply(components, replace(settings, compile_mode="default"))  # the same without graphs, for the ratios
        plain_one = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps), 1, 3)
        plain_pair = measure(lambda: run_ours(pipe, bench.prompts(), size, scale.steps, PAIR), 1, 2)
        plain = sweep_and_previews(pipe, size, scale.steps)
        return result | floors | {
            "settings": repr(settings), "pair": pair, "plain_one": plain_one, "plain_pair": plain_pair,
            # against `fastest` without graphs measured here (the model section's `ours` may have graphs: "auto")
            "vs_compiled": result["median_s"] / plain_one["median_s"],
            "vs_section_ours": result["median_s"] / one if one else None,
            "pair_vs_one": pair["median_s"] / result["median_s"],
            "pair_vs_compiled": pair["median_s"] / plain_pair["median_s"],
            "pair_vs_section_pair": pair["median_s"] / one_pair if one_pair else None,
            "vs_floor_b2": result["median_s"] / floors["floor_b2"]["median_s"],
            "pair_vs_floor_b4": pair["median_s"] / floors["floor_b4"]["median_s"],
            "sweep_vs_floor_b8": graphs["sweep_s"] / floors["floor_b8"]["median_s"],
            "workloads": compare_workloads(graphs, plain),
        }  # fmt: skip

    bench.item("cudagraphs", f"cudagraphs/{tag(model, size)}", run)


SWEEP_AXES = {"sampler": ["flow_unipc", "flow_euler"], "shift": [3.0, 5.0]}  # four cells, one batched run
PREVIEW_EVERY = 5
SEED_OF_WORKLOADS = 7


def sweep_and_previews(pipe: WanT2IPipeline, size: tuple[int, int], steps: int) -> dict:
    """What else a server runs besides one image, under the pipeline's current settings: a 2x2 sweep (its batch of
    four cells) and the pair with live previews every PREVIEW_EVERY steps; each timed after one warm-up run, with the
    images to compare across settings."""
    height, width = size
    request = pipe.request(REFERENCE_PROMPT, steps=steps, height=height, width=width, seed=SEED_OF_WORKLOADS)
    first_sweep_s, _ = timed(lambda: pipe.sweep(request, SWEEP_AXES))
    sweep_s, sweep = timed(lambda: pipe.sweep(request, SWEEP_AXES))
    frames: list[int] = []

    def pair(**previews):
        return pipe.generate(REFERENCE_PROMPT, samplers=PAIR, steps=steps, height=height, width=width,
                             seed=SEED_OF_WORKLOADS, **previews)  # fmt: skip

    def previewed():
        return pair(preview_every=PREVIEW_EVERY, on_preview=lambda done, total, previews: frames.append(done))

    first_preview_s, _ = timed(previewed)
    preview_s, generation = timed(previewed)
    plain_s, plain = timed(pair)
    threaded = [in_new_thread(pair) for _ in range(2)]
    return {
        "threads_s": threaded, "gpu_thread_s": [in_gpu_thread(pair) for _ in range(2)],
        "sweep_first_s": first_sweep_s, "sweep_s": sweep_s, "sweep_images": [cell.image for cell in sweep.cells],
        "previews_first_s": first_preview_s, "previews_s": preview_s, "previews_seen": len(frames) // 2,
        "pair_s": plain_s, "preview_images": [generation.results[label].image for label in PAIR],
        "pair_images": [plain.results[label].image for label in PAIR],
    }  # fmt: skip


def in_new_thread(run) -> float:
    """Seconds of `run` in a thread of its own, as the app runs each job (wan_t2i.jobs): CUDA graphs are recorded per
    thread, so a graphed model may record again in every new one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a new pool, so a new thread; its failure is raised here, and recorded
        return pool.submit(lambda: timed(run)[0]).result()


def in_gpu_thread(run) -> float:
    """Seconds of `run` in the process's GPU thread, where the app runs every job (wan_t2i.jobs.gpu_thread)."""
    from wan_t2i.jobs import gpu_thread

    return gpu_thread().submit(lambda: timed(run)[0]).result()  # its failure is raised here, and recorded


def compare_workloads(graphs: dict, plain: dict) -> dict:
    """Times under graphs and without, their ratios, and how far the graphs' images are from the plain ones (PSNR, dB;
    inf where identical); previews must not change the final images (previewed pair against the plain pair)."""

    def lowest(a: list, b: list) -> float:
        return min(psnr(x, y) for x, y in zip(a, b, strict=True))

    times = ("sweep_first_s", "sweep_s", "previews_first_s", "previews_s", "pair_s", "threads_s", "gpu_thread_s")
    return {
        "graphs": {k: graphs[k] for k in times + ("previews_seen",)},
        "plain": {k: plain[k] for k in times + ("previews_seen",)},
        "sweep_vs_plain": graphs["sweep_s"] / plain["sweep_s"],
        "previews_vs_plain": graphs["previews_s"] / plain["previews_s"],
        "sweep_psnr_db_min": lowest(graphs["sweep_images"], plain["sweep_images"]),
        "previews_psnr_db_min": lowest(graphs["preview_images"], plain["preview_images"]),
        "previews_change_images_db": lowest(graphs["preview_images"], graphs["pair_images"]),
    }  # fmt: skip
