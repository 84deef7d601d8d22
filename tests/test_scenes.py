"""The demo model's training data: scenes, renders, captions and the caption parser."""

import itertools
import re

import numpy as np
import pytest

from wan_t2i.demo.scenes import (
    ALL_COMBOS,
    CLOUDS,
    HELD_OUT_COMBOS,
    MOUNTAINS,
    TIMES_OF_DAY,
    VOCABULARY,
    WATER,
    Scene,
    caption_scene,
    held_out_prompts,
    render_scene,
    requested_attributes,
    sample_scene,
    vocabulary_note,
)

NAMES = ("time_of_day", "mountains", "water", "clouds")


def test_render_is_deterministic_and_seed_moves_the_layout():
    scene = Scene("sunset", "snowy", "lake", "cloudy")
    first = render_scene(scene, 128, seed=3)
    assert first.tobytes() == render_scene(scene, 128, seed=3).tobytes()
    assert first.tobytes() != render_scene(scene, 128, seed=4).tobytes()


@pytest.mark.parametrize("size", [128, 256, 512])
def test_render_size_and_mode(size):
    image = render_scene(Scene("noon", "green", "none", "clear"), size, seed=1)
    assert image.size == (size, size)
    assert image.mode == "RGB"


def test_render_rejects_tiny_sizes():
    with pytest.raises(ValueError, match="size"):
        render_scene(Scene("noon", "green", "none", "clear"), 8)


def test_scene_rejects_unknown_values():
    with pytest.raises(ValueError, match="time_of_day"):
        Scene("evening", "green", "none", "clear")


def test_night_is_darker_than_noon():
    for mountains, water, clouds in itertools.product(MOUNTAINS, WATER, CLOUDS):
        night = np.asarray(render_scene(Scene("night", mountains, water, clouds), 128, seed=0)).mean()
        noon = np.asarray(render_scene(Scene("noon", mountains, water, clouds), 128, seed=0)).mean()
        assert night < 0.5 * noon


def test_held_out_split():
    assert len(set(HELD_OUT_COMBOS)) == len(HELD_OUT_COMBOS) == 8
    assert set(HELD_OUT_COMBOS) <= set(ALL_COMBOS)
    rng = np.random.default_rng(0)
    train = {sample_scene(rng).combo() for _ in range(2000)}
    held_out = {sample_scene(rng, held_out=True).combo() for _ in range(300)}
    assert train == set(ALL_COMBOS) - set(HELD_OUT_COMBOS)
    assert held_out == set(HELD_OUT_COMBOS)
    # Every value, and every pair of values of two attributes, is still seen in training.
    for (i, a), (j, b) in itertools.combinations(enumerate((TIMES_OF_DAY, MOUNTAINS, WATER, CLOUDS)), 2):
        for va, vb in itertools.product(a, b):
            assert any(c[i] == va and c[j] == vb for c in train), (va, vb)
    anything = {sample_scene(rng, held_out=None).combo() for _ in range(3000)}
    assert anything == set(ALL_COMBOS)


def test_full_captions_round_trip_for_every_combo():
    for index, combo in enumerate(ALL_COMBOS):
        rng = np.random.default_rng(index)
        for _ in range(60):
            caption = caption_scene(Scene(*combo), rng, partial=False)
            assert requested_attributes(caption) == dict(zip(NAMES, combo, strict=True)), caption


def test_partial_captions_never_contradict_the_scene():
    rng = np.random.default_rng(0)
    partial = 0
    for _ in range(3000):
        scene = sample_scene(rng, held_out=None)
        caption = caption_scene(scene, rng)
        requested = requested_attributes(caption)
        assert requested, caption
        partial += len(requested) < 4
        for name, value in requested.items():
            truth = getattr(scene, name)
            assert value == truth or (value == "some" and truth != "none"), (caption, scene)
    assert 0.2 < partial / 3000 < 0.4


def test_original_prompts():
    assert requested_attributes("A beautiful mountain landscape") == {"mountains": "some"}
    assert requested_attributes("A serene lake at sunset") == {"water": "lake", "time_of_day": "sunset"}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("snow-capped peaks under a starry sky", {"mountains": "snowy", "time_of_day": "night"}),
        (
            "Rolling hills at dawn, not a cloud in the sky",
            {"mountains": "green", "time_of_day": "dawn", "clouds": "clear"},
        ),
        ("a meadow with no mountains, cloudy", {"mountains": "none", "water": "none", "clouds": "cloudy"}),
        ("a cat", {}),
    ],
)
def test_free_prompts(prompt, expected):
    assert requested_attributes(prompt) == expected


def test_vocabulary_covers_every_caption_word():
    vocabulary = set(VOCABULARY)
    assert all(word == word.lower() for word in vocabulary)
    rng = np.random.default_rng(1)
    captions = [caption_scene(sample_scene(rng, held_out=None), rng) for _ in range(3000)] + held_out_prompts()
    for caption in captions:
        for word in re.split(r"[\s,.;:!?'\"-]+", caption.lower()):
            assert not word or word in vocabulary, (word, caption)
    assert "mountain" in vocabulary_note()


def test_held_out_prompts_are_full_distinct_and_deterministic():
    prompts = held_out_prompts()
    assert prompts == held_out_prompts()
    assert len(prompts) == len(set(prompts)) == 3 * len(HELD_OUT_COMBOS)
    combos = [tuple(requested_attributes(p)[name] for name in NAMES) for p in prompts]
    assert combos == [combo for combo in HELD_OUT_COMBOS for _ in range(3)]
