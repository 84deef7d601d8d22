"""The Gradio app over real HTTP: the demo on a tiny random Wan model, called through `gradio_client`."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import app
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.request import GenerationRequest

PROMPT = "A serene lake at sunset"
STEPS = 3


def pixels(image: Image.Image | str) -> np.ndarray:
    image = Image.open(image) if isinstance(image, str) else image
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_image(got: Image.Image | str, expected: Image.Image) -> None:
    """Equal within 1/255 per pixel: batching on a CPU may change the last bit of a float before rounding."""
    difference = np.abs(pixels(got) - pixels(expected))
    assert difference.max() <= 1, f"images differ by up to {difference.max()}/255"


@pytest.fixture(scope="module")
def url(tiny_pipe: WanT2IPipeline) -> Iterator[str]:
    demo = app.create_demo(tiny_pipe)
    _, local_url, _ = demo.launch(
        **demo.launch_args, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    yield local_url
    demo.close()


@pytest.fixture(scope="module")
def client(url: str) -> Client:
    return Client(url, verbose=False)


def test_importing_the_app_loads_no_model() -> None:
    assert not hasattr(app, "pipe") and not hasattr(app, "demo")


def test_the_api_has_exactly_the_four_named_endpoints(client: Client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/generate", "/compare", "/sweep", "/diagnose"}  # the Sweep and Diagnose tabs (issue 16)
    names = [p["parameter_name"] for p in endpoints["/compare"]["parameters"]]
    assert names[:6] == ["prompt", "negative_prompt", "sampler_a", "sampler_b", "model_a", "model_b"]


def test_generate_serves_a_png_carrying_its_parameters(client: Client, tiny_pipe: WanT2IPipeline) -> None:
    path, seed, details = client.predict(PROMPT, steps=STEPS, seed=7, randomize_seed=False, api_name="/generate")
    assert seed == 7 and details["seed"] == 7
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (48, 32)
        parameters = json.loads(image.text["parameters"])  # the tEXt chunk survived Gradio's save
    assert parameters | {"prompt": PROMPT, "sampler": "flow_unipc", "steps": STEPS, "seed": 7} == parameters
    assert_same_image(path, tiny_pipe.generate(PROMPT, steps=STEPS, seed=7)["flow_unipc"].image)


def test_compare_renders_both_samplers_from_one_seed(client: Client, tiny_pipe: WanT2IPipeline) -> None:
    path_a, path_b, seed, details = client.predict(
        PROMPT, steps=STEPS, seed=11, randomize_seed=False, api_name="/compare"
    )
    assert seed == 11
    assert {json.loads(Image.open(p).text["parameters"])["seed"] for p in (path_a, path_b)} == {11}
    assert [r["sampler"] for r in details["results"].values()] == ["legacy_ddim", "flow_unipc"]
    assert "noise" in details["results"]["legacy_ddim"]["verdict"]
    assert len(details["results"]["flow_unipc"]["latent_std"]) == STEPS
    # The flow image of the pair is the image a single-sampler run with that seed gives.
    assert_same_image(path_b, tiny_pipe.generate(PROMPT, steps=STEPS, seed=11)["flow_unipc"].image)
    assert np.abs(pixels(path_a) - pixels(path_b)).max() > 10  # and the legacy loop gives something else


def test_a_random_seed_is_returned_and_reproduces_the_image(client: Client, tiny_pipe: WanT2IPipeline) -> None:
    path, seed, _ = client.predict(PROMPT, steps=STEPS, randomize_seed=True, api_name="/generate")
    assert json.loads(Image.open(path).text["parameters"])["seed"] == seed
    assert_same_image(path, tiny_pipe.generate(PROMPT, steps=STEPS, seed=seed)["flow_unipc"].image)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": "x" * 100_000}, "the prompt is 100000 characters long"),
        ({"steps": 0}, "steps must be an integer from 1 to 1000, got 0"),
        ({"steps": 10_000}, "steps must be an integer from 1 to 1000, got 10000"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": "twenty"}, "steps must be an integer from 1 to 1000, got 'twenty'"),
        ({"shift": 0}, "shift must be a finite number > 0, got 0"),
        ({"shift": -3}, "shift must be a finite number > 0, got -3"),
        ({"shift": "high"}, "shift must be a finite number > 0"),
        ({"height": 40}, "height must be a multiple of 16"),
        ({"width": 33}, "width must be a multiple of 16"),
        ({"width": 4096}, "width must be between"),
        ({"guidance_scale": 0}, "guidance_scale must be from 1"),
        ({"seed": -1, "randomize_seed": False}, "seed must be an integer from 0"),
        ({"randomize_seed": "yes"}, "randomize_seed must be true or false"),
        ({"sampler": "ddpm"}, "unknown sampler 'ddpm'; choose one of"),
        ({"model": "teacher"}, "no teacher transformer is loaded"),
        ({"negative_prompt": "y" * 5000}, "the negative prompt must be text of at most"),
    ],
)
def test_bad_input_gives_a_clear_message_and_the_app_keeps_serving(
    client: Client, arguments: dict, message: str
) -> None:
    request = {"prompt": PROMPT, "steps": STEPS} | arguments
    with pytest.raises(AppError, match=message):
        client.predict(**request, api_name="/generate")
    _, seed, _ = client.predict(PROMPT, steps=1, seed=1, randomize_seed=False, api_name="/generate")
    assert seed == 1


def test_compare_rejects_the_same_branch_twice(client: Client) -> None:
    with pytest.raises(AppError, match="each sampler/model pair may appear once"):
        client.predict(PROMPT, sampler_a="flow_unipc", sampler_b="flow_unipc", api_name="/compare")


def test_no_input_reaches_files_outside_the_outputs(client: Client, url: str) -> None:
    path, _, _ = client.predict("/etc/passwd", steps=1, api_name="/generate")  # a prompt is only ever text
    assert Image.open(path).format == "PNG"
    for route in ("gradio_api/file=/etc/passwd", "gradio_api/file=../../../../etc/passwd", "file=/etc/passwd"):
        try:
            with urllib.request.urlopen(url + route, timeout=10) as response:
                assert b"root:" not in response.read()
        except urllib.error.HTTPError as error:
            assert error.code in (403, 404)


def test_concurrent_clients_each_get_the_image_of_their_seed(url: str, tiny_pipe: WanT2IPipeline) -> None:
    seeds = [101, 202, 303, 404, 505, 606]
    got: dict[int, tuple] = {}

    def call(seed: int) -> None:
        got[seed] = Client(url, verbose=False).predict(
            PROMPT, steps=STEPS, seed=seed, randomize_seed=False, api_name="/compare"
        )

    threads = [threading.Thread(target=call, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(got) == seeds
    for seed, (path_a, path_b, returned_seed, _) in got.items():
        expected = tiny_pipe.generate(PROMPT, samplers=["legacy_ddim", "flow_unipc"], steps=STEPS, seed=seed)
        assert returned_seed == seed
        assert_same_image(path_a, expected["legacy_ddim"].image)
        assert_same_image(path_b, expected["flow_unipc"].image)


def test_configuration_comes_from_flags_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_PATH", "TEACHER_PATH", "DEVICE", "DTYPE", "GPU_MEMORY_GB", "WITH_TEACHER"):
        monkeypatch.delenv(f"WAN_T2I_{name}", raising=False)
    defaults = app.parse_args([])
    assert (defaults.model_path, defaults.teacher_path, defaults.with_teacher) == (None, None, False)  # the demo
    monkeypatch.setenv("WAN_T2I_TEACHER_PATH", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    monkeypatch.setenv("WAN_T2I_DTYPE", "bf16")
    monkeypatch.setenv("WAN_T2I_WITH_TEACHER", "1")
    args = app.parse_args(["--dtype", "fp32"])
    assert (args.teacher_path, args.dtype, args.with_teacher) == ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "fp32", True)
    monkeypatch.setenv("WAN_T2I_GPU_MEMORY_GB", "20")
    assert app.parse_args([]).gpu_memory_gb == 20.0 and app.parse_args(["--gpu_memory_gb", "16"]).gpu_memory_gb == 16


def test_gpu_time_grows_with_the_work_and_survives_bad_values() -> None:
    def request(steps: int, branches: int = 1, size: int = 480) -> GenerationRequest:
        samplers = ("flow_unipc", "legacy_ddim")[:branches]
        return GenerationRequest("p", "", samplers, steps=steps, height=size, width=size)

    small, more_steps = app.gpu_seconds(request(10)), app.gpu_seconds(request(50))
    assert app.GPU_BASE_SECONDS <= small < more_steps < app.gpu_seconds(request(50, branches=2))
    assert app.gpu_seconds(request(50, size=1024)) > more_steps
    assert app.gpu_seconds(request(1000, 2, 2048)) == app.GPU_MAX_SECONDS
    assert app.gpu_seconds("twenty") == app.GPU_BASE_SECONDS  # not a request: the fixed minimum, no error


def test_the_vocabulary_note_is_shown_when_the_model_has_one(tiny_pipe: WanT2IPipeline) -> None:
    pipe = copy.copy(tiny_pipe)
    pipe.defaults = replace(tiny_pipe.defaults, vocabulary_note="understands: lake, mountains, sunset, dawn")
    shown = [c.get("props", {}).get("value") for c in app.create_demo(pipe).config["components"]]
    assert any(isinstance(v, str) and "understands: lake, mountains" in v for v in shown)
    plain = [c.get("props", {}).get("value") for c in app.create_demo(tiny_pipe).config["components"]]
    assert not any(isinstance(v, str) and "understands:" in v for v in plain)


def test_student_against_teacher_through_the_api(tiny_wan_dir: Path, tmp_path: Path) -> None:
    from conftest import tiny_transformer

    tiny_transformer(seed=3).save_pretrained(tmp_path / "student")
    pipe = WanT2IPipeline.from_pretrained(tmp_path / "student", tiny_wan_dir, device="cpu", with_teacher=True)
    demo = app.create_demo(pipe)
    _, local_url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        student, teacher, seed, details = Client(local_url, verbose=False).predict(
            PROMPT, sampler_a="flow_unipc", model_a="student", model_b="teacher", steps=STEPS, seed=5,
            randomize_seed=False, api_name="/compare",
        )  # fmt: skip
    finally:
        demo.close()
    assert list(details["results"]) == ["student/flow_unipc", "teacher/flow_unipc"] and seed == 5
    expected = pipe.generate(
        PROMPT, samplers=["flow_unipc"] * 2, models=["student", "teacher"], steps=STEPS, seed=5
    ).images
    assert_same_image(student, expected["student/flow_unipc"])
    assert_same_image(teacher, expected["teacher/flow_unipc"])
    assert np.abs(pixels(student) - pixels(teacher)).max() > 0  # two different transformers


def test_bad_input_is_refused_before_the_gpu_is_asked_for(
    client: Client, tiny_pipe: WanT2IPipeline, monkeypatch
) -> None:
    """On ZeroGPU every call of the sampling function takes a GPU slot; a bad request must not get that far."""
    sampled = []
    original = tiny_pipe.generate
    monkeypatch.setattr(tiny_pipe, "generate", lambda *a, **k: sampled.append(1) or original(*a, **k))
    with pytest.raises(AppError, match="shift must be a finite number > 0"):
        client.predict(PROMPT, steps=STEPS, shift=-1, api_name="/compare")
    assert sampled == []
    client.predict(PROMPT, steps=1, seed=2, randomize_seed=False, api_name="/generate")
    assert sampled == [1]


def test_the_latent_health_figure_makes_its_case(tiny_pipe: WanT2IPipeline) -> None:
    """#1, #2: a log axis, the shaded band labelled, each line marked and labelled at its end with this run's
    samplers, in fixed colours (B keeps blue alone); at one step the chart still shows its points."""
    from matplotlib.colors import to_hex

    from wan_t2i.report import SERIES_COLORS, latent_health_figure

    generation = tiny_pipe.generate(PROMPT, samplers=["flow_euler", "flow_unipc"], steps=STEPS, seed=3)
    ax = latent_health_figure(generation, ["flow_euler", "flow_unipc"]).axes[0]
    assert ax.get_yscale() == "log" and "noise → image" in ax.get_xlabel()
    texts = [t.get_text() for t in ax.texts]
    assert any("VAE decodes cleanly" in t for t in texts)
    ratio = generation["flow_euler"].diagnostics.latent_std[-1] / generation["flow_euler"].diagnostics.expected_std
    assert any(t.startswith("flow_euler: ") and t.endswith("x") for t in texts), texts
    assert [line.get_label() for line in ax.lines] == ["flow_euler", "flow_unipc"]
    assert [to_hex(line.get_color()) for line in ax.lines] == list(SERIES_COLORS)
    assert all(line.get_marker() == "o" for line in ax.lines)
    low, high = ax.get_ylim()
    assert low < min(0.6, ratio) and high > max(1.6, ratio)  # the band and every point are in view
    alone = tiny_pipe.generate(PROMPT, samplers=["flow_unipc"], steps=1, seed=3)
    ax = latent_health_figure(alone, ["flow_unipc"]).axes[0]
    assert [line.get_label() for line in ax.lines] == ["flow_unipc"]  # no ghost series of an earlier run
    assert to_hex(ax.lines[0].get_color()) == SERIES_COLORS[1] and len(ax.lines[0].get_xdata()) == 1


def test_badges_and_summary_say_what_the_verdict_measures(tiny_pipe: WanT2IPipeline) -> None:
    """#4: a red badge on the legacy loop's image, a green one on flow UniPC's; #10: one time for the batch, and at
    few steps a hint that an in-range latent can still be a blurry average."""
    from wan_t2i.report import badge, summary

    generation = tiny_pipe.generate(PROMPT, samplers=["legacy_ddim", "flow_unipc"], steps=STEPS, seed=11)
    legacy, flow = (badge(generation[s].diagnostics) for s in ("legacy_ddim", "flow_unipc"))
    assert "verdict-bad" in legacy and "too wide: the VAE cannot decode this" in legacy
    assert "verdict-good" in flow or "verdict-warn" in flow
    text = summary(generation, ["A", "B"])
    assert "not the image's quality" in text and f"With {STEPS} steps, expect a blurry average" in text
    assert text.count("one batch") == 1 and text.count("total") == 1
    assert not any(" s ·" in line for line in text.splitlines() if line.startswith("- "))  # no per-branch times
    many = tiny_pipe.generate(PROMPT, samplers=["flow_unipc"], steps=8, seed=11)
    assert "blurry average" not in summary(many, ["B"])


def test_the_page_has_no_autofocus_and_limits_the_prompt(tiny_pipe: WanT2IPipeline) -> None:
    """#5: nothing scrolls a phone to the prompt; #6: the prompt field stops at the request's limit; #10: a
    resolution menu of one choice is hidden; #13: every integer input rounds to whole numbers."""
    from wan_t2i.request import MAX_PROMPT_CHARS

    config = app.create_demo(tiny_pipe).config["components"]
    props = {c["props"].get("elem_id"): c["props"] for c in config if c["props"].get("elem_id")}
    assert not props["prompt"].get("autofocus") and props["prompt"]["max_length"] == MAX_PROMPT_CHARS
    assert props["seed"]["precision"] == 0
    menus = [c["props"] for c in config if str(c["props"].get("label", "")).startswith("Resolution")]
    assert len(tiny_pipe.defaults.resolutions or ()) > 1 or not menus[0]["visible"]
    assert "share" not in props["image-a"]["buttons"] and "share" not in props["image-b"]["buttons"]  # not a Space


def test_sweep_renders_a_labelled_grid_with_a_verdict_per_cell(client: Client, tiny_pipe: WanT2IPipeline) -> None:
    grid, table, details = client.predict(
        PROMPT, "flow_unipc", "shift", "1,5", "sampler", "legacy_ddim,flow_unipc", STEPS, 5.0, 1.0, 9,
        api_name="/sweep",
    )  # fmt: skip
    cells = details["cells"]
    assert details["seed"] == 9 and len(cells) == 4
    assert [(c["axis_shift"], c["axis_sampler"]) for c in cells] == [
        (1, "legacy_ddim"), (1, "flow_unipc"), (5, "legacy_ddim"), (5, "flow_unipc"),
    ]  # fmt: skip
    assert [c["verdict_word"] for c in cells if c["axis_sampler"] == "legacy_ddim"] == ["garbage", "garbage"]
    assert len(table["data"]) == 4
    with Image.open(grid) as image:
        assert image.width > 2 * 48 and image.height > 2 * 32  # two columns and two rows of 48x32 cells, labelled
    single = tiny_pipe.generate(PROMPT, samplers=["flow_unipc"], steps=STEPS, shift=5.0, seed=9)["flow_unipc"]
    assert abs(cells[3]["std_ratio"] - single.diagnostics.std_ratio) < 1e-4  # a cell is the single render


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (("shift", "1,x", "none", ""), "sweep axis shift takes numbers"),
        (("shift", "1,3", "shift", "5"), "sweep axis shift is chosen twice"),
        (("colour", "red", "none", ""), "sweep axis must be one of"),
        (("seed", ",".join(map(str, range(17))), "none", ""), "17 cells; this app renders at most 16 at once"),
        (("steps", "150", "sampler", "legacy_ddim,flow_unipc"), "over 2 cells; .* fewer cells or fewer steps"),
    ],
)
def test_a_bad_sweep_is_refused_before_it_renders(client: Client, axes: tuple, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(PROMPT, "flow_unipc", *axes, STEPS, 5.0, 1.0, 1, api_name="/sweep")


def test_diagnose_returns_the_doctors_report_and_figure(client: Client) -> None:
    figure, report = client.predict(api_name="/diagnose")
    assert report.startswith("# Checkpoint doctor") and "## The VAE at T = 1" in report
    assert "## What the model predicts" in report
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 300


def test_the_api_describes_each_endpoint_and_parameter(client: Client) -> None:
    """#13: descriptions that say what a parameter does, not "the input value of the 'steps' Number component"."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "two samplers" in endpoints["/compare"]["description"]
    assert "one sampler" in endpoints["/generate"]["description"]
    assert "grid" in endpoints["/sweep"]["description"] and "doctor" in endpoints["/diagnose"]["description"]
    labels = {p["parameter_name"]: p["label"] for p in endpoints["/generate"]["parameters"]}
    assert labels["steps"].startswith("steps: denoising steps") and "drawn" in labels["seed"]
    assert all(": " in label for label in labels.values()), labels


def test_the_api_page_shows_a_call_the_model_understands(client: Client) -> None:
    """#13: the example call on "Use via API" draws a prompt from the model's own world, not Gradio's "Hello!!"."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/generate", "/compare", "/sweep"):
        prompt = next(p for p in endpoints[name]["parameters"] if p["parameter_name"] == "prompt")
        assert prompt["example_input"] == "A serene lake at sunset", name


def test_a_few_step_student_opens_on_its_sampler_and_timesteps(tiny_pipe: WanT2IPipeline) -> None:
    """A student whose wan_t2i.json names flow_lcm on fixed timesteps: the page's sampler B and Timesteps field, and
    the API's default sampler, are its own; every sampler is offered with its note."""
    from wan_t2i.choices import SAMPLER_NOTES

    pipe = copy.copy(tiny_pipe)
    pipe.defaults = replace(tiny_pipe.defaults, sampler="flow_lcm", timesteps=(1000, 750, 500, 250), steps=4)
    demo = app.create_demo(pipe)
    props = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
    assert props["sampler-b"]["value"] == "flow_lcm" and props["timesteps"]["value"] == "1000,750,500,250"
    assert [tuple(c) for c in props["sampler-a"]["choices"]] == [(f"{s} · {n}", s) for s, n in SAMPLER_NOTES.items()]
    _, local_url, _ = demo.launch(
        **demo.launch_args, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        _, _, details = Client(local_url, verbose=False).predict(PROMPT, seed=1, api_name="/generate")
        (result,) = details["results"].values()
        assert result["sampler"] == "flow_lcm" and result["t"] == [1000, 750, 500, 250]
    finally:
        demo.close()


def test_the_timesteps_field_reaches_the_request_and_its_errors_its_field(tiny_pipe: WanT2IPipeline) -> None:
    from wan_t2i.app_compare import field_of
    from wan_t2i.handlers import Handler

    handler = Handler(tiny_pipe)
    values = dict(prompt=PROMPT, sampler_a="legacy_ddim", sampler_b="flow_lcm", seed=1)
    assert handler.request(values | {"timesteps": "1000, 750,500 250"}).timesteps == (1000, 750, 500, 250)
    assert handler.request(values | {"timesteps": ""}).timesteps == ()
    with pytest.raises(ValueError, match="strictly decreasing") as error:
        handler.request(values | {"timesteps": "250,500"})
    assert field_of(str(error.value)) == "timesteps"


def test_progress_shows_the_decode_after_the_last_step() -> None:
    """#7: the steps, then "decoding" once the last step is done (not 100% while the VAE still works)."""
    from wan_t2i.handlers import report_progress
    from wan_t2i.jobs import Job

    shown = []
    progress = lambda value, desc=None, unit=None: shown.append((value, desc))  # noqa: E731 - gr.Progress's call
    for i in (1, 2, 3):
        report_progress(progress, Job("generate"), i, 3)
    assert shown == [((1, 3), "sampling"), ((2, 3), "sampling"), (None, "decoding the image (VAE, one frame)")]
    report_progress(progress, Job("sweep"), 3, 3)
    assert shown[-1] == ((3, 3), "sweep")


def test_a_sweeps_progress_names_the_cells_running(tiny_pipe) -> None:
    """The Sweep tab's progress says which cells run, not only steps: a real sweep job through `execute`."""
    from wan_t2i.handlers import report_progress
    from wan_t2i.jobs import Job, execute

    request = tiny_pipe.request("A serene lake at sunset", steps=2, seed=3)
    events = []
    sweep = execute(tiny_pipe, Job("sweep", request=request, axes={"shift": [1.0, 5.0, 9.0]}), events.append)
    assert len(sweep.cells) == 3 and events and all(e[0] == "step" for e in events)
    assert events[-1][1] == events[-1][2]  # the last one: every step done
    shown = []
    for event in events:
        report_progress(lambda value, desc=None, unit=None: shown.append(desc), Job("sweep"), *event[1:])
    assert all(desc.startswith("sweep: cell") for desc in shown), shown
    assert shown[-1].endswith("/3 · step 2/2"), shown
