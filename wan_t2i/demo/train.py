"""Build and train the embedded demo model (a VAE, then a rectified-flow student) and save it as a WanPipeline folder.

    python -m wan_t2i.demo.train --out wan_t2i/demo_model --device cuda       # about 11 min on one H100
    python -m wan_t2i.demo.train --out /tmp/demo --tiny                       # CPU smoke test, under a minute

Stages: render captioned scenes (`wan_t2i.demo.scenes`), train the VAE on them, freeze it and encode every image to
per-channel-normalised latents, train the transformer with the rectified-flow loss of Wan (Esser et al. 2024, "Scaling
Rectified Flow Transformers"), pick the guidance scale by scoring generated images, write the bundle and its card.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from wan_t2i.constants import DEFAULT_SHIFT, NUM_TRAIN_TIMESTEPS, TEXT_LEN
from wan_t2i.demo import scenes as scenes_module
from wan_t2i.demo.analyzer import analyze_image, attribute_matches
from wan_t2i.demo.card import NAME, write_model_card, write_training_curves
from wan_t2i.demo.components import (
    FULL,
    TINY,
    DemoComponentsConfig,
    build_scheduler,
    build_text_encoder,
    build_transformer,
    build_vae,
    count_parameters,
)
from wan_t2i.demo.scenes import (
    VOCABULARY,
    Scene,
    caption_scene,
    render_scene,
    requested_attributes,
    sample_scene,
    vocabulary_note,
    vocabulary_slots,
)
from wan_t2i.demo.tokenizer import build_word_tokenizer, portable_tokenizer_class
from wan_t2i.schedules import shift_sigmas

MAX_SHARD_SIZE = "9MB"  # every bundle file stays under 10 MB
# The student's regression target from the clean latents x0 and the noise eps. Wan's (and the demo's) is the flow
# velocity; "epsilon" exists to train deliberately wrong students, on which `wan_t2i.doctor` is tested.
OBJECTIVES = {
    "flow_velocity": lambda x0, eps: eps - x0,
    "epsilon": lambda x0, eps: eps,
}


@dataclass(frozen=True)
class Recipe:
    num_scenes: int = 30_000  # rendered training images (about 45 s on 16 cores)
    vae_steps: int = 1500  # VAE optimiser steps (about 8.5 per second on an H100)
    vae_batch_size: int = 32
    vae_lr: float = 5e-4
    kl_weight: float = 1e-5  # on the per-element mean KL: keeps the latents O(1) without blurring
    student_steps: int = 4500  # transformer optimiser steps (about 16 per second on an H100)
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200  # linear warm-up, then cosine decay to 0 (both stages)
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # the saved student is the EMA, with diffusers' EMA warm-up
    caption_dropout: float = 0.1  # captions replaced by "" so the student also learns the unconditional field
    shift: float = DEFAULT_SHIFT  # sigmas are drawn from the shifted grid the student is sampled on
    objective: str = "flow_velocity"  # a key of OBJECTIVES; anything else makes a student Wan's samplers misread
    timestep_scale: float = NUM_TRAIN_TIMESTEPS  # the student is given t = sigma * this; Wan's scale is 1000
    sampling_steps: int = 20  # for the guidance sweep and the bundle's defaults
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    sweep_prompts: int = 96  # captions of fresh scenes scored per guidance scale

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not self.timestep_scale > 0:
            raise ValueError(f"timestep_scale must be > 0, got {self.timestep_scale!r}")


RECIPE = Recipe()
TINY_RECIPE = Recipe(
    num_scenes=96,
    vae_steps=40,
    vae_batch_size=8,
    vae_lr=2e-3,
    student_steps=50,
    batch_size=16,
    lr=2e-3,
    warmup_steps=5,
    sampling_steps=4,
    guidance_scales=(1.0, 3.0),
    sweep_prompts=4,
)


# ------------------------------------------------------------------------------------------------------------- data
def _render_chunk(job: tuple[list[Scene], list[int], int]) -> np.ndarray:
    scenes, seeds, size = job
    return np.stack([np.asarray(render_scene(s, size, seed=seed)) for s, seed in zip(scenes, seeds, strict=True)])


def sample_dataset(num_scenes: int, seed: int) -> tuple[list[Scene], list[int]]:
    """The training scenes (held-out combinations excluded) and their render seeds, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out=False) for _ in range(num_scenes)]
    return scenes, [int(s) for s in rng.integers(0, 2**31, num_scenes)]


def render_dataset(
    num_scenes: int, size: int, seed: int, workers: int = 1, cache_dir: Path | None = None
) -> tuple[np.ndarray, list[Scene]]:
    """Render the training set as uint8 (N, H, W, 3), in `workers` processes; cached under `cache_dir` if given."""
    scenes, seeds = sample_dataset(num_scenes, seed)
    source = hashlib.sha1(inspect.getsource(scenes_module).encode()).hexdigest()[:10]
    cache = cache_dir / f"scenes_{num_scenes}_{size}_{seed}_{source}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache), scenes
    chunk = 64
    jobs = [(scenes[i : i + chunk], seeds[i : i + chunk], size) for i in range(0, num_scenes, chunk)]
    images = np.empty((num_scenes, size, size, 3), dtype=np.uint8)
    bar = tqdm(total=num_scenes, desc="render", unit="scene")
    if workers <= 1:
        results = map(_render_chunk, jobs)
    else:  # fork: the workers need nothing from the parent but the scenes module; CUDA is not initialised yet
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        results = pool.map(_render_chunk, jobs)
    for i, block in enumerate(results):
        images[i * chunk : i * chunk + len(block)] = block
        bar.update(len(block))
    bar.close()
    if workers > 1:
        pool.shutdown()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, images)
    return images, scenes


def to_video(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, 1, H, W) in [-1, 1], the one-frame video the Wan VAE takes."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).unsqueeze(2)


def encode_prompts(
    tokenizer: PreTrainedTokenizerFast, text_encoder: UMT5EncoderModel, prompts: Sequence[str], device: torch.device
) -> torch.Tensor:
    """(B, TEXT_LEN, d) text states, each trimmed to its tokens and zero-padded to 512, as WanPipeline encodes them."""
    tokens = tokenizer(list(prompts), padding="longest", truncation=True, max_length=TEXT_LEN, return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state * mask[..., None]  # (B, L, d), zero past each prompt
    return F.pad(hidden, (0, 0, 0, TEXT_LEN - hidden.shape[1]))


# ------------------------------------------------------------------------------------------------------------- VAE
def train_vae(
    vae: AutoencoderKLWan, images: torch.Tensor, recipe: Recipe, rng: np.random.Generator
) -> dict[str, list[float]]:
    """Fit the VAE to `images` (uint8 (N, H, W, 3) on the training device) with L1 + MSE + kl_weight * KL."""
    device = images.device
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(
        optimizer, min(recipe.warmup_steps, recipe.vae_steps // 4), recipe.vae_steps
    )
    history = torch.zeros(recipe.vae_steps, 3, device=device)  # (loss, reconstruction, kl) per step
    bar = tqdm(range(recipe.vae_steps), desc="vae")
    for step in bar:
        x = to_video(images[torch.from_numpy(rng.integers(0, len(images), recipe.vae_batch_size)).to(device)])
        with _autocast(device):
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        recon = recon.float()
        reconstruction = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        loss = reconstruction + recipe.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), recipe.grad_clip)
        optimizer.step()
        schedule.step()
        history[step] = torch.stack([loss, reconstruction, kl]).detach()
        if step % 50 == 0 or step == recipe.vae_steps - 1:
            bar.set_postfix(loss=f"{history[step, 0].item():.4f}", kl=f"{history[step, 2].item():.1f}")
    vae.eval().requires_grad_(False)
    loss, reconstruction, kl = history.T.tolist()
    return {"loss": loss, "reconstruction": reconstruction, "kl": kl}


@torch.no_grad()
def encode_latents(vae: AutoencoderKLWan, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Posterior means (N, 16, 1, H/8, W/8) of uint8 images (N, H, W, 3) on the training device."""
    latents = []
    for start in tqdm(range(0, len(images), batch_size), desc="encode"):
        with _autocast(images.device):
            latents.append(vae.encode(to_video(images[start : start + batch_size])).latent_dist.mode().float())
    return torch.cat(latents)


def set_latent_statistics(vae: AutoencoderKLWan, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Store per-channel mean and std of `latents` (N, C, F, H, W) in the VAE config, as Wan's VAE carries them."""
    mean, std = latents.mean(dim=(0, 2, 3, 4)), latents.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------------- student
def train_student(
    transformer: WanTransformer3DModel,
    latents: torch.Tensor,
    scenes: Sequence[Scene],
    tokenizer: PreTrainedTokenizerFast,
    text_encoder: UMT5EncoderModel,
    recipe: Recipe,
    rng: np.random.Generator,
) -> dict[str, list[float]]:
    """Rectified flow on normalised latents (N, 16, 1, h, w): x_t = (1 - sigma) x0 + sigma eps, target v = eps - x0.

    `recipe.objective` and `recipe.timestep_scale` change the target and the timestep the model is given (only to make
    wrong students). Leaves the EMA weights in `transformer`.
    """
    target_of = OBJECTIVES[recipe.objective]
    device = latents.device
    transformer.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=recipe.lr, betas=(0.9, 0.99), weight_decay=recipe.weight_decay
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps, recipe.student_steps)
    ema = EMAModel(transformer.parameters(), decay=recipe.ema_decay, use_ema_warmup=True, foreach=True)
    history = torch.zeros(recipe.student_steps, device=device)
    bar = tqdm(range(recipe.student_steps), desc="student")
    for step in bar:
        index = rng.integers(0, len(latents), recipe.batch_size)
        prompts = [caption_scene(scenes[i], rng) if rng.random() >= recipe.caption_dropout else "" for i in index]
        with torch.no_grad():
            text = encode_prompts(tokenizer, text_encoder, prompts, device)  # (B, 512, d), fp32 as at inference
        x0 = latents[torch.from_numpy(index).to(device)]
        eps = torch.randn_like(x0)
        u = torch.rand(len(x0), device=device)
        sigma = shift_sigmas(u, recipe.shift)  # the shifted flow grid of the sampler
        s = sigma.view(-1, 1, 1, 1, 1)
        x = (1 - s) * x0 + s * eps
        with _autocast(device):
            pred = transformer(x, sigma * recipe.timestep_scale, text, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target_of(x0, eps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), recipe.grad_clip)
        optimizer.step()
        schedule.step()
        ema.step(transformer.parameters())
        history[step] = loss.detach()
        if step % 50 == 0 or step == recipe.student_steps - 1:
            bar.set_postfix(loss=f"{history[step].item():.4f}")
    ema.copy_to(transformer.parameters())
    transformer.eval().requires_grad_(False)
    return {"loss": history.tolist()}


# -------------------------------------------------------------------------------------------------------- guidance
@torch.no_grad()
def sweep_guidance(pipe: WanPipeline, recipe: Recipe, size: int, seed: int) -> dict:
    """Score each guidance scale on captions of fresh scenes; pick the one whose samples look most like the data.

    Adherence is the share of requested attributes that `analyzer` finds in the images. Among the scales with the
    best adherence, the chosen one has the final latents' per-channel std closest to the data's (1 after
    normalisation): too little guidance gives washed-out averages (std < 1), too much over-saturates (std > 1).
    (An earlier rule accepted one point less adherence for a closer std; it chose 1.0 over 2.0 here, and 1.0 then
    scored 3 points lower on the held-out combinations: adherence comes first.)
    """
    rng = np.random.default_rng(seed + 1)  # scenes and captions the student never saw (same distribution)
    prompts = [caption_scene(sample_scene(rng, held_out=False), rng) for _ in range(recipe.sweep_prompts)]
    adherence, std_ratio, final = {}, {}, {}

    def keep_latents(pipe: WanPipeline, i: int, t: torch.Tensor, tensors: dict) -> dict:
        final["latents"] = tensors["latents"]  # (B, 16, 1, h, w), normalised; the last call leaves the final ones
        return tensors

    for scale in tqdm(recipe.guidance_scales, desc="guidance sweep"):
        frames = pipe(
            prompt=prompts,
            negative_prompt=[""] * len(prompts),
            height=size,
            width=size,
            num_frames=1,
            num_inference_steps=recipe.sampling_steps,
            guidance_scale=scale,
            generator=torch.Generator(pipe.device).manual_seed(seed),  # the same noise for every scale
            output_type="np",
            callback_on_step_end=keep_latents,
        ).frames  # (B, 1, H, W, 3) in [0, 1]
        hits = []
        for prompt, frame in zip(prompts, frames, strict=True):
            image = Image.fromarray(np.round(frame[0] * 255).astype(np.uint8))
            hits += attribute_matches(requested_attributes(prompt), analyze_image(image)).values()
        adherence[scale] = float(np.mean(hits))
        std_ratio[scale] = final["latents"].float().std(dim=(0, 2, 3, 4)).mean().item()
    best = max(adherence.values())
    chosen = min((s for s in adherence if adherence[s] == best), key=lambda s: abs(std_ratio[s] - 1.0))
    return {
        "adherence": {str(k): v for k, v in adherence.items()},
        "latent_std_ratio": {str(k): v for k, v in std_ratio.items()},
        "chosen": chosen,
        "prompts": len(prompts),
    }


# ---------------------------------------------------------------------------------------------------------- bundle
def save_bundle(pipe: WanPipeline, out_dir: Path, defaults: dict) -> None:
    """Save `pipe` (fp32) with every weight file under 10 MB, and this project's defaults beside it."""
    pipe.to("cpu")  # weights stay fp32: autocast only lowered the arithmetic
    pipe.save_pretrained(out_dir, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
    portable_tokenizer_class(out_dir)
    (out_dir / "wan_t2i.json").write_text(json.dumps(defaults, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------------ main
def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train(
    out_dir: Path,
    components: DemoComponentsConfig,
    recipe: Recipe,
    *,
    device: torch.device,
    seed: int = 0,
    workers: int = 1,
    cache_dir: Path | None = None,
) -> dict:
    """Run every stage and write the bundle to `out_dir`; returns the training log (also saved as train_log.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = components.image_size
    timings: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    images, scenes = render_dataset(recipe.num_scenes, size, seed, workers, cache_dir)  # before CUDA: workers fork
    lap("render")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    images = torch.from_numpy(images).to(device)

    tokenizer = build_word_tokenizer(VOCABULARY)
    text_encoder = build_text_encoder(components.text_encoder, len(tokenizer), seed).to(device)
    vae = build_vae(components.vae).to(device)
    transformer = build_transformer(components.student, components.text_encoder.d_model).to(device)

    vae_history = train_vae(vae, images, recipe, rng)
    lap("vae")
    latents = encode_latents(vae, images)
    mean, std = set_latent_statistics(vae, latents)
    latents = (latents - mean) / std  # WanPipeline decodes latents * std + mean
    del images
    lap("encode")

    student_history = train_student(transformer, latents, scenes, tokenizer, text_encoder, recipe, rng)
    lap("student")

    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=build_scheduler(recipe.shift),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    sweep = sweep_guidance(pipe, recipe, size, seed)
    lap("sweep")

    defaults = {
        "name": NAME,
        "steps": 20,
        "shift": recipe.shift,
        "guidance_scale": sweep["chosen"],
        "height": size,
        "width": size,
        "negative_prompt": "",
        "resolutions": [[size, size]],
        "public_max_side": 2 * size,  # what the app accepts from a request: twice the trained size at most
        "vocabulary_note": vocabulary_note(),
        "vocabulary": vocabulary_slots(),
    }
    save_bundle(pipe, out_dir, defaults)
    timings["total"] = time.perf_counter() - start
    info = {
        "name": NAME,
        "seed": seed,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "components": asdict(components),
        "recipe": asdict(recipe),
        "parameters": {
            "transformer": count_parameters(transformer),
            "vae": count_parameters(vae),
            "vae_decoder": count_parameters(vae.decoder) + count_parameters(vae.post_quant_conv),
            "text_encoder": count_parameters(text_encoder),
        },
        "vocabulary_size": len(tokenizer),
        "data": {"num_scenes": len(scenes), "image_size": size, "workers": workers},
        "latents": {"mean": vae.config.latents_mean, "std": vae.config.latents_std},
        "vae": vae_history,
        "student": student_history,
        "guidance_sweep": sweep,
        "defaults": defaults,
        "timings": timings,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }
    (out_dir / "train_log.json").write_text(json.dumps(info) + "\n")
    write_training_curves(out_dir / "training_curves.png", info)
    write_model_card(out_dir, info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: 64x64, tiny models, tens of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16), help="render processes")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wan_t2i", help="rendered data")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the rendered-data cache")
    recipe_flags = {
        "num_scenes": int, "vae_steps": int, "vae_batch_size": int, "vae_lr": float, "kl_weight": float,
        "student_steps": int, "batch_size": int, "lr": float, "warmup_steps": int, "sweep_prompts": int,
        "timestep_scale": float,
    }  # fmt: skip
    for name, kind in recipe_flags.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=f"default: {getattr(RECIPE, name)} (tiny: "
                            f"{getattr(TINY_RECIPE, name)})")  # fmt: skip
    parser.add_argument("--objective", choices=list(OBJECTIVES), help="student target (default: flow_velocity, Wan's; "
                        "epsilon trains a deliberately wrong student)")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, name) for name in recipe_flags if getattr(args, name) is not None}
    for name, value in overrides.items():
        if value <= 0 and name != "warmup_steps":
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.objective is not None:
        overrides["objective"] = args.objective
    recipe = replace(TINY_RECIPE if args.tiny else RECIPE, **overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = train(
        args.out,
        TINY if args.tiny else FULL,
        recipe,
        device=device,
        seed=args.seed,
        workers=args.workers,
        cache_dir=None if args.no_cache else args.cache_dir,
    )
    t, vae_loss, student_loss = info["timings"], info["vae"]["loss"], info["student"]["loss"]
    size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(
        f"wrote {args.out} ({size_mb:.1f} MB) in {t['total'] / 60:.1f} min on {info['device']}: "
        f"render {t['render']:.0f} s, "
        f"vae {t['vae']:.0f} s (loss {np.mean(vae_loss[:10]):.4f} -> {np.mean(vae_loss[-10:]):.4f}), encode "
        f"{t['encode']:.0f} s, student {t['student']:.0f} s (loss {np.mean(student_loss[:10]):.4f} -> "
        f"{np.mean(student_loss[-10:]):.4f}), sweep {t['sweep']:.0f} s, guidance {info['defaults']['guidance_scale']:g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
