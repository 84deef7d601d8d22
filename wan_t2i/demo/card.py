"""The demo model's card: its README.md (recipe, vocabulary, evaluation) and the training-curves PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wan_t2i.constants import TEXT_LEN
from wan_t2i.demo.scenes import vocabulary_note

NAME = "wan-t2i demo (tiny)"
TARGETS = {"flow_velocity": "eps - x0", "epsilon": "eps"}  # train.OBJECTIVES, as the card writes them


def write_training_curves(path: Path, info: dict) -> None:
    """Two panels: the VAE's loss and the student's flow-matching loss, raw and smoothed, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100)
    panels = (
        ("VAE: L1 + MSE + KL", info["vae"]["loss"]),
        ("student: flow matching (MSE on v)", info["student"]["loss"]),
    )
    for ax, (title, losses) in zip(axes, panels, strict=True):
        losses = np.asarray(losses)
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(losses, color="0.8", linewidth=0.6)
        ax.plot(np.arange(len(smooth)) + window - 1, smooth, color="C0")
        ax.set(title=title, xlabel="step", yscale="log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(out_dir: Path, info: dict, evaluation: str | None = None) -> Path:
    """Write README.md from the training log `info` (train_log.json); `evaluation` fills the '## Evaluation' section."""
    c, r, p, t = info["components"], info["recipe"], info["parameters"], info["timings"]
    st, te, vae = c["student"], c["text_encoder"], c["vae"]
    sweep = info["guidance_sweep"]
    size = c["image_size"]
    lines = [
        f"# {NAME}",
        "",
        "A tiny text-to-image model in the layout of Wan 2.1 (Diffusers `WanPipeline` folder), trained from scratch on "
        "procedurally painted landscapes so that the wan-t2i demo runs on a CPU in about a second. It only knows the "
        "vocabulary below. Load it with `diffusers.WanPipeline.from_pretrained(path)` and `num_frames=1`.",
        "",
        "## Recipe",
        "",
        "| component | class | architecture | parameters |",
        "|---|---|---|---|",
        f"| transformer (student) | `WanTransformer3DModel` | {st['num_layers']} layers, dim {st['dim']}, "
        f"{st['num_heads']} heads, ffn {st['dim'] * st['ffn_mult']}, freq_dim {st['freq_dim']}, patch (1, 2, 2) "
        f"| {p['transformer'] / 1e6:.2f} M |",
        f"| vae | `AutoencoderKLWan` | z_dim 16, 8x spatial, base_dim {vae['base_dim']} (decoder "
        f"{vae['decoder_base_dim']}), dim_mult {list(vae['dim_mult'])}, {vae['num_res_blocks']} res block(s) "
        f"| {p['vae'] / 1e6:.2f} M |",
        f"| text_encoder (random, frozen) | `UMT5EncoderModel` | {te['num_layers']} layers, d_model {te['d_model']}, "
        f"{te['num_heads']} heads, d_ff {te['d_ff']} | {p['text_encoder'] / 1e6:.2f} M |",
        "| tokenizer | word-level `PreTrainedTokenizerFast` | UMT5 ids (pad 0, </s> 1, <unk> 2) | "
        f"{info['vocabulary_size']} tokens |",
        "| scheduler | `UniPCMultistepScheduler` | flow_prediction, flow sigmas, shift 5.0, bh2, order 2 | |",
        "",
        f"- **Data**: {info['data']['num_scenes']:,} scenes from `wan_t2i.demo.scenes` at {size}x{size}, held-out "
        "attribute combinations excluded; a fresh `caption_scene` caption for every sample at every step; "
        f'{100 * r["caption_dropout"]:.0f}% of captions dropped to "" for classifier-free guidance.',
        f"- **VAE**: L1 + MSE reconstruction + {r['kl_weight']:g} x KL (per-element mean), {r['vae_steps']} steps, "
        f"batch {r['vae_batch_size']}, AdamW lr {r['vae_lr']:g}; then frozen, and `latents_mean`/`latents_std` set "
        "to the per-channel statistics of the training set's posterior means.",
        f"- **Student**: rectified flow on normalised latents, x_t = (1 - sigma) x0 + sigma eps, target "
        f"{TARGETS[r.get('objective', 'flow_velocity')]}, "
        f"timestep {r.get('timestep_scale', 1000):g} sigma, sigma = shift u / (1 + (shift - 1) u) with u ~ U(0, 1) "
        f"and shift {r['shift']:g}; "
        f"text trimmed to its tokens and zero-padded to {TEXT_LEN} as in WanPipeline; {r['student_steps']} steps, "
        f"batch {r['batch_size']}, AdamW lr {r['lr']:g} (warm-up {r['warmup_steps']}, cosine), weight decay "
        f"{r['weight_decay']:g}, EMA {r['ema_decay']:g} (saved).",
        f"- **Seed** {info['seed']}; trained on {info['device']} in {t['total'] / 60:.1f} min (render "
        f"{t['render']:.0f} s, VAE {t['vae']:.0f} s, encode {t['encode']:.0f} s, student {t['student']:.0f} s, "
        f"guidance sweep {t['sweep']:.0f} s); torch {info['versions']['torch']}, diffusers "
        f"{info['versions']['diffusers']}.",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Guidance scale",
        "",
        f"{sweep['prompts']} captions of unseen training-distribution scenes, {r['sampling_steps']} UniPC steps, shift "
        f"{r['shift']:g}, one seed each. Adherence: the share of requested attributes that `wan_t2i.demo.analyzer` "
        "finds in the images. Latent std: per-channel std of the final latents, 1.0 for the training data. Default: "
        f"**{sweep['chosen']:g}**, the scale of best adherence whose latent std is closest to 1.",
        "",
        "| guidance scale | " + " | ".join(sweep["adherence"]) + " |",
        "|---|" + "---|" * len(sweep["adherence"]),
        "| adherence | " + " | ".join(f"{100 * v:.1f}%" for v in sweep["adherence"].values()) + " |",
        "| latent std | " + " | ".join(f"{v:.2f}" for v in sweep["latent_std_ratio"].values()) + " |",
        "",
        "## Vocabulary",
        "",
        vocabulary_note(),
        "",
        "## Evaluation",
        "",
        evaluation or "_Not evaluated yet: run `python -m wan_t2i.demo.evaluate --update-card`._",
        "",
        "## Files",
        "",
        "`wan_t2i.json` holds this project's sampling defaults; `train_log.json` the loss histories, timings and "
        "settings above.",
        "",
    ]
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path
