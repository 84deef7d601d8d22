"""Procedural, captioned landscape scenes: the training data of the demo model.

A scene has four attributes (time of day, mountains, water, clouds). `render_scene` paints it with soft, smooth shapes
that a tiny VAE and transformer can learn; `caption_scene` describes it in varied words; `requested_attributes` reads
the attributes back out of a caption or a user's prompt. A few attribute combinations are held out of training so that
evaluation can test composition.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

TIMES_OF_DAY = ("dawn", "noon", "sunset", "night")
MOUNTAINS = ("snowy", "green", "none")
WATER = ("lake", "none")
CLOUDS = ("clear", "cloudy")

# Spread so that every attribute value, and every pair of values, still occurs in training.
HELD_OUT_COMBOS: tuple[tuple[str, str, str, str], ...] = (
    ("dawn", "snowy", "lake", "cloudy"),
    ("dawn", "green", "none", "clear"),
    ("noon", "none", "lake", "clear"),
    ("noon", "snowy", "none", "cloudy"),
    ("sunset", "green", "lake", "clear"),
    ("sunset", "none", "none", "cloudy"),
    ("night", "green", "lake", "cloudy"),
    ("night", "snowy", "none", "clear"),
)

PARTIAL_CAPTION_FRACTION = 0.3


@dataclass(frozen=True)
class Scene:
    """What a scene shows; `render_scene`'s seed decides where things are."""

    time_of_day: str  # one of TIMES_OF_DAY
    mountains: str  # one of MOUNTAINS: snowy peaks, green hills, or a flat horizon
    water: str  # one of WATER: a lake in the foreground, or a meadow
    clouds: str  # one of CLOUDS

    def __post_init__(self) -> None:
        for name, allowed in (
            ("time_of_day", TIMES_OF_DAY),
            ("mountains", MOUNTAINS),
            ("water", WATER),
            ("clouds", CLOUDS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def combo(self) -> tuple[str, str, str, str]:
        return (self.time_of_day, self.mountains, self.water, self.clouds)


ALL_COMBOS = tuple(itertools.product(TIMES_OF_DAY, MOUNTAINS, WATER, CLOUDS))
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELD_OUT_COMBOS)


def sample_scene(rng: np.random.Generator, *, held_out: bool | None = False) -> Scene:
    """Draw a scene uniformly from the training combos (False), the held-out ones (True) or all of them (None)."""
    combos = {False: TRAIN_COMBOS, True: HELD_OUT_COMBOS, None: ALL_COMBOS}[held_out]
    return Scene(*combos[rng.integers(len(combos))])


# ----------------------------------------------------------------------------------------------------------- render
# Colours are RGB in 0..1. Sky gradients are (top, middle, horizon).
SKY = {
    "dawn": ((0.55, 0.62, 0.82), (0.93, 0.68, 0.72), (1.00, 0.78, 0.55)),
    "noon": ((0.22, 0.46, 0.85), (0.40, 0.63, 0.92), (0.62, 0.79, 0.96)),
    "sunset": ((0.24, 0.13, 0.38), (0.78, 0.26, 0.24), (1.00, 0.55, 0.14)),
    "night": ((0.02, 0.03, 0.10), (0.05, 0.07, 0.19), (0.10, 0.14, 0.30)),
}
# (disc colour, glow colour, radius, height above the horizon as a fraction of the horizon's height)
SUN = {
    "dawn": ((1.00, 0.95, 0.80), (1.00, 0.80, 0.60), 0.055, 0.22),
    "noon": ((1.00, 1.00, 0.93), (1.00, 0.98, 0.85), 0.045, 0.80),
    "sunset": ((1.00, 0.78, 0.35), (1.00, 0.45, 0.15), 0.075, 0.18),
    "night": ((0.93, 0.93, 0.86), (0.35, 0.40, 0.60), 0.040, 0.70),
}
# Light falling on the land: a per-channel multiplier of its daylight colour.
LIGHT = {
    "dawn": (0.95, 0.82, 0.80),
    "noon": (1.00, 1.00, 1.00),
    "sunset": (0.85, 0.62, 0.45),
    "night": (0.20, 0.28, 0.32),
}
# Snow reflects more of a dim or coloured light than rock does: alpenglow at sunset, moonlit caps at night.
SNOW_LIGHT = {
    "dawn": (1.00, 0.92, 0.92),
    "noon": (1.00, 1.00, 1.00),
    "sunset": (1.00, 0.80, 0.70),
    "night": (0.62, 0.66, 0.75),
}
# Cloud (lit top, shaded bottom)
CLOUD = {
    "dawn": ((1.00, 0.93, 0.90), (0.84, 0.72, 0.82)),
    "noon": ((0.98, 0.98, 0.99), (0.76, 0.80, 0.87)),
    "sunset": ((1.00, 0.66, 0.45), (0.85, 0.45, 0.42)),
    "night": ((0.30, 0.33, 0.44), (0.17, 0.19, 0.27)),
}
ROCK = (0.38, 0.40, 0.48)
SNOW = (0.96, 0.97, 1.00)
HILL_BACK, HILL_FRONT = (0.42, 0.63, 0.36), (0.26, 0.52, 0.22)
MEADOW_NEAR, MEADOW_FAR = (0.24, 0.47, 0.18), (0.42, 0.64, 0.32)
SHORE = (0.22, 0.30, 0.18)
WATER_TINT, WATER_REFLECTANCE = (0.08, 0.16, 0.24), 0.78  # water darkens and slightly blue-greens what it mirrors

SUN_GLOW_RADIUS = 0.12  # small enough that a clear sky stays plain where the clouds would be
CLOUD_BOTTOM = 0.34  # no cloud reaches below this fraction of the height
HORIZON = 0.6  # fraction of the image height, before per-seed jitter; the analyzer relies on it


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _blend(img: np.ndarray, color: np.ndarray | tuple, alpha: np.ndarray) -> np.ndarray:
    return img * (1 - alpha[..., None]) + np.asarray(color, dtype=np.float32) * alpha[..., None]


def _sky(tod: str, y: np.ndarray, horizon: float, jitter: np.ndarray) -> np.ndarray:
    top, mid, low = (np.asarray(c, dtype=np.float32) * jitter for c in SKY[tod])
    t = np.clip(y / horizon, 0, 1)[..., None]
    upper = top + (mid - top) * np.clip(t / 0.55, 0, 1)
    return np.where(t < 0.55, upper, mid + (low - mid) * np.clip((t - 0.55) / 0.45, 0, 1))


def _add_sun(img, tod, x, y, horizon, rng, px):
    disc, glow, radius, height = SUN[tod]
    cx, cy = rng.uniform(0.15, 0.85), horizon * (1 - height) + rng.uniform(-0.02, 0.02)
    d = np.hypot(x - cx, y - cy)
    img = img + np.asarray(glow, np.float32) * (0.4 * np.exp(-((d / SUN_GLOW_RADIUS) ** 2)))[..., None]
    return _blend(np.clip(img, 0, 1), disc, 1 - _smoothstep(radius - px, radius + px, d))


def _add_stars(img, x, y, horizon, rng):
    n, size = 45, img.shape[0]
    sx, sy = rng.uniform(0, 1, n), rng.uniform(0, horizon * 0.85, n)
    bright = rng.uniform(0.35, 0.8, n)
    sigma = 0.0045  # about a pixel at 256; stars scale with the image like everything else
    stars = np.zeros_like(x)
    reach = int(np.ceil(4 * sigma * size))  # each star only touches a small window around itself
    for cx, cy, b in zip(sx, sy, bright, strict=True):
        rows = slice(max(int(cy * size) - reach, 0), int(cy * size) + reach + 1)
        cols = slice(max(int(cx * size) - reach, 0), int(cx * size) + reach + 1)
        dot = b * np.exp(-((x[rows, cols] - cx) ** 2 + (y[rows, cols] - cy) ** 2) / (2 * sigma**2))
        stars[rows, cols] = np.maximum(stars[rows, cols], dot)
    return _blend(img, (0.95, 0.95, 1.0), stars)


def _add_clouds(img, tod, x, y, rng):
    lit, shade = (np.asarray(c, np.float32) for c in CLOUD[tod])
    rows = slice(0, int(np.ceil(CLOUD_BOTTOM * img.shape[0])))  # clouds never reach lower, so skip those rows
    img, x, y = img.copy(), x[rows], y[rows]
    n = int(rng.integers(3, 6))
    # One cloud per horizontal slot keeps them spread out rather than piled up.
    centres = (np.arange(n) + rng.uniform(0.2, 0.8, n)) / n
    for cx in centres:
        cy, width = rng.uniform(0.08, 0.26), rng.uniform(0.11, 0.17)
        density = np.zeros_like(x)
        for _ in range(int(rng.integers(3, 6))):
            bx, by = cx + rng.uniform(-1, 1) * width, cy + rng.uniform(-0.02, 0.015)
            r = rng.uniform(0.04, 0.07)
            density += np.exp(-(((x - bx) / (r * 1.6)) ** 2) - ((y - by) / r) ** 2)
        density *= _smoothstep(cy + 0.07, cy + 0.01, y)  # flat-ish bottoms
        alpha = 0.92 * _smoothstep(0.3, 0.75, density)
        colour = lit + (shade - lit) * _smoothstep(cy - 0.05, cy + 0.05, y)[..., None]  # lit tops, shaded bottoms
        img[rows] = _blend(img[rows], colour, alpha)
    return img


def _mountain_profile(kind: str, x: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """One (height above the horizon per column, colour, lit side or None) per layer, back to front."""
    xs = x[0]
    if kind == "snowy":
        n = int(rng.integers(3, 5))
        peaks = (np.arange(n) + rng.uniform(0.25, 0.75, n)) / n
        heights = rng.uniform(0.18, 0.28, n)
        slopes = rng.uniform(1.1, 1.6, n)
        ridges = heights[:, None] - slopes[:, None] * np.abs(xs[None] - peaks[:, None])
        # A soft maximum rounds the valleys a little but keeps the peaks pointed.
        height = 0.01 * np.log(np.exp(ridges / 0.01).sum(0))
        side = np.tanh((xs - peaks[np.argmax(ridges, 0)]) / 0.02)  # which face of its peak a column is on
        return [(height, ROCK, side)]
    layers = []
    for colour, (lo, hi), count in ((HILL_BACK, (0.12, 0.18), 3), (HILL_FRONT, (0.05, 0.10), 4)):
        centres = (np.arange(count) + rng.uniform(0.2, 0.8, count)) / count
        bumps = [rng.uniform(lo, hi) * np.exp(-(((xs - c) / rng.uniform(0.12, 0.2)) ** 2)) for c in centres]
        layers.append((np.maximum(np.max(bumps, 0), lo * 0.3), colour, None))
    return layers


def _add_mountains(img, kind, light, snow_light, x, y, horizon, rng, px):
    for height, colour, side in _mountain_profile(kind, x, rng):
        top = horizon - height[None, :]
        alpha = _smoothstep(top - px, top + px, y) * (y < horizon + 2 * px)
        depth = np.clip((y - top) / np.maximum(height[None, :], 1e-3), 0, 1)  # 0 at the ridge, 1 at the horizon
        body = np.asarray(colour, np.float32) * (1.0 - 0.18 * depth[..., None])
        if kind == "snowy":
            # The sunlit face is a little brighter; snow lies above a gently wavy snow line.
            body = body * (1.0 + 0.12 * side)[None, :, None]
            snow_line = 0.11 + 0.01 * np.sin(x * 17 + rng.uniform(0, 6))
            snow = _smoothstep(snow_line - px, snow_line + px, horizon - y)
            snow_colour = np.asarray(SNOW, np.float32) * (1.0 + 0.04 * side)[None, :, None] * snow_light / light
            body = _blend(body, snow_colour, snow)
        img = _blend(img, np.clip(body * light, 0, 1), alpha)
    return img


def _add_meadow(img, light, x, y, horizon, rng, px):
    t = np.clip((y - horizon) / (1 - horizon), 0, 1)[..., None]
    grass = np.asarray(MEADOW_FAR, np.float32) + (np.asarray(MEADOW_NEAR, np.float32) - MEADOW_FAR) * t
    # Low, rolling swells of shade; long wavelengths only.
    waves = np.sin(x * rng.uniform(4, 7) + y * 25 + rng.uniform(0, 6)) * np.sin(x * 3 + rng.uniform(0, 6))
    grass = grass * (1 + 0.06 * waves[..., None])
    return _blend(img, grass * light, _smoothstep(horizon - px, horizon + px, y))


def _add_lake(img, light, x, y, horizon, rng, px):
    size = img.shape[0]
    rows = np.arange(size)
    h_row = horizon * size
    # Mirror the sky and mountains about the horizon row.
    mirrored = np.clip(np.round(2 * h_row - rows - 1), 0, size - 1).astype(int)
    reflection = img[mirrored] * WATER_REFLECTANCE + np.asarray(WATER_TINT, np.float32) * (1 - WATER_REFLECTANCE) * 0.5
    ripples = np.zeros_like(x)
    for _ in range(6):
        ry, rx, length = rng.uniform(horizon + 0.05, 0.97), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.35)
        ripples += np.exp(-(((y - ry) / 0.006) ** 2) - ((x - rx) / length) ** 2)
    water = np.clip(reflection + 0.10 * ripples[..., None], 0, 1)
    img = _blend(img, water, _smoothstep(horizon - px, horizon + px, y))
    shore = _smoothstep(horizon - px, horizon, y) * _smoothstep(horizon + 0.018 + px, horizon + 0.018, y)
    return _blend(img, np.asarray(SHORE, np.float32) * light, shore)


def render_scene(scene: Scene, size: int = 256, seed: int = 0) -> Image.Image:
    """Paint `scene` as a size x size RGB image; the seed moves peaks, clouds, the sun and ripples."""
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    rng = np.random.default_rng(seed)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")  # (H, W), 0..1 from the top-left corner
    px = 1.0 / size  # edges are smoothed over about one pixel at any size
    horizon = HORIZON + rng.uniform(-0.02, 0.02)
    light = np.asarray(LIGHT[scene.time_of_day], np.float32)
    # Draw every random number in a fixed order, whatever the scene, so a seed means the same layout in every scene.
    rngs = [np.random.default_rng(s) for s in rng.integers(0, 2**31, 6)]
    jitter = 1 + rngs[0].uniform(-0.04, 0.04, 3).astype(np.float32)

    img = _sky(scene.time_of_day, y, horizon, jitter)
    if scene.time_of_day == "night":
        img = _add_stars(img, x, y, horizon, rngs[1])
    img = _add_sun(img, scene.time_of_day, x, y, horizon, rngs[2], px)
    if scene.clouds == "cloudy":
        img = _add_clouds(img, scene.time_of_day, x, y, rngs[3])
    if scene.mountains != "none":
        snow_light = np.asarray(SNOW_LIGHT[scene.time_of_day], np.float32)
        img = _add_mountains(img, scene.mountains, light, snow_light, x, y, horizon, rngs[4], px)
    if scene.water == "lake":
        img = _add_lake(img, light, x, y, horizon, rngs[5], px)
    else:
        img = _add_meadow(img, light, x, y, horizon, rngs[5], px)
    return Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))  # (H, W, 3) uint8 is RGB


# --------------------------------------------------------------------------------------------------------- captions
# Phrases per attribute value. Every phrase states its value unambiguously, so that `requested_attributes` can read it
# back; "dusk" is always sunset and "sunrise" always dawn.
TIME_PHRASES = {
    "dawn": ("at dawn", "at sunrise", "at daybreak", "in the early morning", "in the soft light of dawn"),
    "noon": ("at noon", "at midday", "in the middle of the day", "under the midday sun", "in broad daylight"),
    "sunset": ("at sunset", "at dusk", "at sundown", "in the evening glow", "as the sun sets"),
    "night": ("at night", "under a night sky", "under the stars", "by moonlight", "late at night"),
}
MOUNTAIN_PHRASES = {
    "snowy": (
        "snowy peaks",
        "snow-capped mountains",
        "snowy mountains",
        "snow-capped peaks",
        "mountains covered in snow",
    ),
    "green": ("green hills", "rolling hills", "grassy hills", "rolling green hills", "lush green hills"),
    "none": ("a flat horizon", "a flat, open horizon", "a wide flat horizon", "an open horizon with no mountains"),
}
WATER_PHRASES = {
    "lake": ("a lake", "a calm lake", "still water", "a quiet lake", "a lake reflecting the sky", "a mirror-like lake"),
    "none": ("a grassy meadow", "a green meadow", "a wide meadow", "a field of grass", "an open grassland"),
}
CLOUD_PHRASES = {
    "clear": ("a clear sky", "a cloudless sky", "clear skies", "a sky without clouds"),
    "cloudy": ("a cloudy sky", "scattered clouds", "soft clouds", "a few drifting clouds", "fluffy clouds"),
}
# Only used when the mountains are not "none"; `requested_attributes` reads them as {"mountains": "some"}.
GENERIC_MOUNTAIN_PHRASES = ("mountains", "the mountains", "distant mountains")
ADJECTIVES = ("beautiful", "serene", "peaceful", "quiet", "scenic", "lovely", "calm")

# Full captions: {m} mountains, {w} water, {t} time of day, {c} clouds.
FULL_TEMPLATES = (
    "{w} and {m} {t}, under {c}.",
    "{m} beyond {w} {t}, with {c}.",
    "A {adj} landscape with {m}, {w} and {c} {t}.",
    "A photo of {w} with {m} in the distance {t}, {c}.",
    "{t}: {m}, {w}, {c}.",
    "A {adj} view of {m} and {w} {t}, under {c}.",
    "A painting of {w} and {m} {t}, {c} above.",
    "{t}, {w} lies before {m} under {c}.",
)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def _full_caption(scene: Scene, rng: np.random.Generator) -> str:
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    template = pick(FULL_TEMPLATES)
    return _sentence(
        template.format(
            m=pick(MOUNTAIN_PHRASES[scene.mountains]),
            w=pick(WATER_PHRASES[scene.water]),
            t=pick(TIME_PHRASES[scene.time_of_day]),
            c=pick(CLOUD_PHRASES[scene.clouds]),
            adj=pick(ADJECTIVES),
        )
    )


def _partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Mention one to three attributes, in the style of short user prompts ("A serene lake at sunset")."""
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    names = ["time_of_day", "mountains", "water", "clouds"]
    keep = sorted(rng.choice(4, size=int(rng.integers(1, 4)), replace=False))
    mentioned = {names[i] for i in keep}
    time = " " + pick(TIME_PHRASES[scene.time_of_day]) if "time_of_day" in mentioned else ""
    adj = pick(ADJECTIVES)
    if "mountains" in mentioned and scene.mountains != "none" and rng.random() < 0.5:
        # "A beautiful mountain landscape" style: mountains of some kind.
        extras = [pick(WATER_PHRASES[scene.water])] if "water" in mentioned else []
        extras += [pick(CLOUD_PHRASES[scene.clouds])] if "clouds" in mentioned else []
        body = f"A {adj} mountain landscape" + (" with " + " and ".join(extras) if extras else "")
        return _sentence(body + time + ".")
    nouns = [pick(MOUNTAIN_PHRASES[scene.mountains])] if "mountains" in mentioned else []
    nouns += [pick(WATER_PHRASES[scene.water])] if "water" in mentioned else []
    nouns += [pick(CLOUD_PHRASES[scene.clouds])] if "clouds" in mentioned else []
    listed = ", ".join(nouns[:-1]) + (" and " if len(nouns) > 1 else "") + nouns[-1] if nouns else ""
    if not nouns or rng.random() < 0.5:
        return _sentence(f"A {adj} landscape" + (" with " + listed if listed else "") + time + ".")
    if nouns[0] == "a lake" and rng.random() < 0.5:
        listed = f"a {adj} " + listed[2:]  # "a serene lake at sunset"
    return _sentence(listed + time + ".")


def caption_scene(scene: Scene, rng: np.random.Generator, *, partial: bool | None = None) -> str:
    """Describe `scene` in one sentence; about 30% of captions (partial=None) mention only some attributes."""
    if partial is None:
        partial = bool(rng.random() < PARTIAL_CAPTION_FRACTION)
    return _partial_caption(scene, rng) if partial else _full_caption(scene, rng)


def held_out_prompts() -> list[str]:
    """Three differently phrased full captions per held-out combo, always the same."""
    prompts = []
    for i, combo in enumerate(HELD_OUT_COMBOS):
        rng, seen = np.random.default_rng(1000 + i), set()
        while len(seen) < 3:
            caption = _full_caption(Scene(*combo), rng)
            if caption not in seen:
                seen.add(caption)
                prompts.append(caption)
    return prompts


# --------------------------------------------------------------------------------------------------------- parsing
# Checked in order; the first pattern that matches decides. Negations come before the words they negate.
_PATTERNS: dict[str, tuple[tuple[str, str], ...]] = {
    "time_of_day": (
        ("dawn", r"\b(dawn|sunrise|daybreak|morning|sun rises)\b"),
        ("sunset", r"\b(sunset|dusk|sundown|evening|sun sets|twilight)\b"),
        ("night", r"\b(night|nighttime|midnight|stars|starry|moon|moonlight|moonlit)\b"),
        ("noon", r"\b(noon|midday|middle of the day|daylight|daytime)\b"),
    ),
    "mountains": (
        ("none", r"\b(flat|plains?|no (mountains|hills|peaks)|without (mountains|hills|peaks))\b"),
        ("snowy", r"\b(snowy|snow|snow-capped|snowcapped|glaciers?|alpine)\b"),
        ("green", r"\b(hills?|hillside|green (mountains|peaks))\b"),
        ("some", r"\b(mountains?|mountainous|peaks?|ranges?)\b"),
    ),
    "water": (
        ("none", r"\b(no (lake|water)|without (a lake|water))\b"),
        ("lake", r"\b(lakes?|water|pond|reflections?|reflecting|mirror-like)\b"),
        ("none", r"\b(meadows?|grassland|fields?|prairie)\b"),
    ),
    "clouds": (
        ("clear", r"\b(cloudless|clear(est)? (\w+ )?sk(y|ies)|no clouds|without clouds|not a cloud)\b"),
        ("cloudy", r"\b(clouds?|cloudy|overcast)\b"),
    ),
}


def requested_attributes(prompt: str) -> dict[str, str]:
    """Which attributes a prompt asks for; unmentioned ones are absent.

    "some" for mountains means snowy or green (a bare "mountain landscape"); evaluation treats it as "not none".
    """
    text = " ".join(prompt.lower().split())
    found = {}
    for name, patterns in _PATTERNS.items():
        for value, pattern in patterns:
            if re.search(pattern, text):
                found[name] = value
                break
    return found


def _words(text: str) -> list[str]:
    """Lower-case words split on whitespace and punctuation, as the demo tokenizer splits them."""
    return re.findall(r"[a-z]+", text.lower())


VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        {
            word
            for text in (
                *itertools.chain.from_iterable(p for table in (TIME_PHRASES, MOUNTAIN_PHRASES) for p in table.values()),
                *itertools.chain.from_iterable(p for table in (WATER_PHRASES, CLOUD_PHRASES) for p in table.values()),
                *GENERIC_MOUNTAIN_PHRASES,
                *ADJECTIVES,
                *FULL_TEMPLATES,
                "a landscape with mountain and",
            )
            for word in _words(re.sub(r"\{\w+\}", " ", text))
        }
    )
)


VOCABULARY_SLOTS = (  # (slot, its phrase table): what a prompt chooses, in the order a caption reads
    ("time of day", TIME_PHRASES),
    ("mountains", MOUNTAIN_PHRASES),
    ("foreground", WATER_PHRASES),
    ("sky", CLOUD_PHRASES),
)


def vocabulary_slots(per_value: int = 2) -> dict[str, list[str]]:
    """Phrases the demo model understands, grouped by what they choose: the first `per_value` phrases of each value
    of each attribute ({"time of day": ["at dawn", "at sunrise", "at noon", ...], ...}); the app shows them as chips."""
    return {slot: [p for phrases in table.values() for p in phrases[:per_value]] for slot, table in VOCABULARY_SLOTS}


def vocabulary_note() -> str:
    """One paragraph for users: what the demo model understands."""
    return (
        "The demo model was trained on simple painted landscapes and knows only a small vocabulary. "
        "Time of day: dawn or sunrise, noon or midday, sunset or dusk, night. "
        "Mountains: snowy peaks (snow-capped mountains), green or rolling hills, or a flat horizon. "
        "Foreground: a lake (still water) or a grassy meadow. Sky: clear or cloudy. "
        f"Other words are ignored. Known words: {', '.join(VOCABULARY)}."
    )
