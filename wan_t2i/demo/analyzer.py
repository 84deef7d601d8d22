"""Read a demo scene's four attributes back from its pixels, to score what the demo model generates.

Hand-written, region-averaged image statistics: generated images are blurrier and slightly off in colour, so every
feature is a mean or a fraction over a band of rows rather than an exact pixel test. The bands follow the layout of
`scenes.render_scene` (horizon at 60% of the height, clouds in the top quarter); thresholds were fitted by eye on
renders, clean and degraded, with margins on both sides.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from wan_t2i.demo.scenes import ALL_COMBOS, Scene, render_scene

ANALYSIS_SIZE = 128

# Bands as (top, bottom) fractions of the image height.
SKY_BAND = (0.0, 0.30)  # above the peaks; holds the clouds and the noon sun or the moon
CLOUD_BAND = (0.03, 0.28)
PEAK_BAND = (0.32, 0.575)  # from the highest peak down to the lowest horizon
MOUNTAIN_BAND = (0.45, 0.575)  # just above the lowest horizon: mostly mountain when there is one
HILL_BAND = (0.50, 0.575)  # covered almost edge to edge by green hills
FOREGROUND_BAND = (0.80, 1.0)  # below the reflection of the mountains: lake water or meadow

SUNSET_MAX_GREEN_RED = 0.67  # sky green/red: sunset <= 0.51, dawn >= 0.86, night and noon >= 1.1
NIGHT_MAX_SKY_VALUE = 0.5  # mean sky brightness: night <= 0.24, dawn and noon >= 0.64
NOON_MAX_RED_MINUS_BLUE = -0.2  # sky red - blue: noon <= -0.31, dawn >= -0.1
HILLS_MIN_GREEN_FRACTION = 0.3  # green hills >= 0.54, anything else <= 0.1
PEAKS_MIN_VARIATION = 0.05  # mean |value - row median|: snowy >= 0.041 (blurred, night), flat <= 0.034 (low sun)
FLAT_MAX_VARIATION = 0.025  # noon and night flat horizons <= 0.008
# The mountain band is less saturated with grey rock and snow than with the open sky it hides; the sky's saturation
# depends on the time of day, so the threshold does too.
SNOWY_MAX_SATURATION = {"dawn": 0.25, "noon": 0.34, "sunset": 0.68, "night": 0.60}
CLOUD_BLUR = 2  # pixels at ANALYSIS_SIZE
CLOUD_MIN_DEVIATION = 0.06  # a pixel this far from its row's median colour is not plain sky
CLOUDY_MIN_FRACTION = 0.04  # clear skies <= 0.02, cloudy >= 0.065
SUN_MASK_RADIUS = 0.22  # the noon sun or the moon and most of its glow, as a fraction of the width
MEADOW_MIN_GREENNESS = 0.0  # (G - max(R, B)) / mean: meadow >= 0.22, lake water <= -0.15


def _rows(band: tuple[float, float]) -> slice:
    return slice(round(band[0] * ANALYSIS_SIZE), round(band[1] * ANALYSIS_SIZE))


def _hue_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV of an (..., 3) array in 0..1; hue in degrees."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value, low = rgb.max(-1), rgb.min(-1)
    spread = value - low + 1e-6
    hue = np.where(value == r, ((g - b) / spread) % 6, np.where(value == g, (b - r) / spread + 2, (r - g) / spread + 4))
    return hue * 60, (value - low) / (value + 1e-3), value


def _box_blur(rgb: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2 * radius + 1)^2 window, edges clamped."""
    padded = np.pad(rgb, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    summed = padded.cumsum(0).cumsum(1)
    summed = np.pad(summed, ((1, 0), (1, 0), (0, 0)))
    k, h, w = 2 * radius + 1, rgb.shape[0], rgb.shape[1]
    return (summed[k:, k:] - summed[:h, k:] - summed[k:, :w] + summed[:h, :w]) / k**2


def _time_of_day(rgb: np.ndarray) -> str:
    sky = rgb[_rows(SKY_BAND)].reshape(-1, 3)
    r, g, b = sky.mean(0)
    if g / (r + 1e-3) < SUNSET_MAX_GREEN_RED:
        return "sunset"
    if sky.max(-1).mean() < NIGHT_MAX_SKY_VALUE:
        return "night"
    return "noon" if r - b < NOON_MAX_RED_MINUS_BLUE else "dawn"


def _mountains(rgb: np.ndarray, time_of_day: str) -> str:
    hue, saturation, _ = _hue_saturation_value(rgb)
    hills = _rows(HILL_BAND)
    green = (hue[hills] > 55) & (hue[hills] < 170) & (saturation[hills] > 0.2)
    if green.mean() > HILLS_MIN_GREEN_FRACTION:
        return "green"
    # Rows crossing peaks change across the image (rock, snow, sky between peaks); rows of open sky barely do.
    value = rgb[_rows(PEAK_BAND)].mean(-1)
    variation = np.abs(value - np.median(value, axis=1, keepdims=True)).mean()
    if variation > PEAKS_MIN_VARIATION:
        return "snowy"
    if variation < FLAT_MAX_VARIATION:
        return "none"
    # In between (a low sun varies a flat horizon a little; blur smooths peaks): grey rock and snow are less
    # saturated than the sky they hide.
    return "snowy" if saturation[_rows(MOUNTAIN_BAND)].mean() < SNOWY_MAX_SATURATION[time_of_day] else "none"


def _water(rgb: np.ndarray) -> str:
    ground = rgb[_rows(FOREGROUND_BAND)].reshape(-1, 3)
    greenness = (ground[:, 1] - np.maximum(ground[:, 0], ground[:, 2])) / (ground.mean(1) + 0.02)
    return "none" if greenness.mean() > MEADOW_MIN_GREENNESS else "lake"


def _clouds(rgb: np.ndarray, time_of_day: str) -> str:
    band = _box_blur(rgb, CLOUD_BLUR)[_rows(CLOUD_BAND)]  # the blur dims stars, which are not clouds
    # A clear sky is a vertical gradient, so every row is nearly one colour; clouds stand out from their row.
    deviation = np.abs(band - np.median(band, axis=1, keepdims=True)).max(-1)
    keep = np.ones(deviation.shape, dtype=bool)
    if time_of_day in ("noon", "night"):
        # The high sun or the moon sits in the cloud band: mask it and its glow out around the brightest spot.
        value = rgb[_rows(SKY_BAND)].mean(-1)
        sun_y, sun_x = np.unravel_index(np.argmax(value), value.shape)
        y, x = np.mgrid[_rows(CLOUD_BAND), 0:ANALYSIS_SIZE]
        keep = np.hypot(y - sun_y, x - sun_x) > SUN_MASK_RADIUS * ANALYSIS_SIZE
    fraction = (deviation[keep] > CLOUD_MIN_DEVIATION).mean() if keep.any() else 0.0
    return "cloudy" if fraction > CLOUDY_MIN_FRACTION else "clear"


def analyze_image(image: Image.Image) -> dict[str, str]:
    """Predict time_of_day, mountains, water and clouds of a square demo-scene image from its pixels alone."""
    small = image.convert("RGB").resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32) / 255  # (H, W, 3)
    time_of_day = _time_of_day(rgb)
    return {
        "time_of_day": time_of_day,
        "mountains": _mountains(rgb, time_of_day),
        "water": _water(rgb),
        "clouds": _clouds(rgb, time_of_day),
    }


def attribute_matches(requested: dict[str, str], predicted: dict[str, str]) -> dict[str, bool]:
    """For each requested attribute, whether the prediction satisfies it; mountains "some" means snowy or green."""
    matches = {}
    for name, wanted in requested.items():
        got = predicted.get(name)
        matches[name] = got in ("snowy", "green") if (name == "mountains" and wanted == "some") else got == wanted
    return matches


def validate_analyzer(n: int = 400, size: int = 256, seed: int = 0) -> dict[str, float]:
    """Accuracy per attribute and overall (all four right) on `n` renders of random scenes with random seeds."""
    rng = np.random.default_rng(seed)
    names = ("time_of_day", "mountains", "water", "clouds")
    correct = {name: 0 for name in (*names, "overall")}
    for _ in range(n):
        scene = Scene(*ALL_COMBOS[rng.integers(len(ALL_COMBOS))])
        predicted = analyze_image(render_scene(scene, size, seed=int(rng.integers(2**31))))
        matches = attribute_matches(dict(zip(names, scene.combo(), strict=True)), predicted)
        for name in names:
            correct[name] += matches[name]
        correct["overall"] += all(matches.values())
    return {name: count / n for name, count in correct.items()}
