"""Numbers that Wan fixes, each with the file it comes from."""

# wan/configs/shared_config.py: `num_train_timesteps = 1000`; every Wan timestep lives on this 0-1000 scale.
NUM_TRAIN_TIMESTEPS = 1000

# wan/configs/wan_t2v_A14B.py: `boundary = 0.875`; the high-noise expert runs while t >= 0.875 * 1000.
BOUNDARY_RATIO = 0.875

# wan/configs/shared_config.py: `text_len = 512`; prompts are encoded, trimmed to their length, zero-padded to 512.
TEXT_LEN = 512

# wan/configs/wan_t2v_A14B.py: `vae_stride = (4, 8, 8)`, `patch_size = (1, 2, 2)`: image sides are multiples of 16.
VAE_STRIDE = (4, 8, 8)
PATCH_SIZE = (1, 2, 2)

# Wan2.1 generate.py defaults for t2i-14B: 50 steps, shift 5.0, guidance 5.0 (see shared/reference).
DEFAULT_SHIFT = 5.0
DEFAULT_GUIDANCE_SCALE = 5.0

# wan/configs/shared_config.py: `sample_neg_prompt`, used by Wan whenever no negative prompt is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)
