"""The app as a public Space meets it: stoppable renders, bounded work, bounded disk and bodies, one-line errors.

Each test launches the app on a tiny random Wan model on 127.0.0.1 and talks to it over HTTP (gradio_client, or
raw requests where a client would not send what is tested). `Recorder` watches the real pipeline's renders: when each
started and ended, its steps, and how many ran at once.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from conftest import free_port
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import app
from wan_t2i.images import read_parameters
from wan_t2i.jobs import Live
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.request import GenerationRequest, Limits

PROMPT = "A serene lake at sunset"
LONG = dict(steps=1000, height=128, width=128, seed=3)  # about 25 s on the tiny model: always stopped mid-way
WIDE_LIMITS = Limits(max_side=128, max_work=100.0, max_seconds=120.0)


class Recorder:
    """Wraps a pipeline's `generate` and `sweep` (the real ones run) to record each render and how many run at once."""

    def __init__(self, pipe: WanT2IPipeline):
        self.renders: list[dict] = []
        self.active = self.peak = 0
        self._lock = threading.Lock()
        pipe.generate = self.wrap(pipe.generate, "generate")
        pipe.sweep = self.wrap(pipe.sweep, "sweep")

    def wrap(self, method, kind: str):
        def recorded(*args, progress=None, **settings):
            render = {"kind": kind, "start": time.monotonic(), "steps": [], "total": None, "end": None, "error": None}
            with self._lock:
                self.renders.append(render)
                self.active += 1
                self.peak = max(self.peak, self.active)

            def step(i: int, total: int) -> None:
                render["steps"].append(time.monotonic())
                render["total"] = total
                if progress is not None:
                    progress(i, total)

            try:
                return method(*args, progress=step, **settings)
            except BaseException as error:
                render["error"] = type(error).__name__
                raise
            finally:
                render["end"] = time.monotonic()
                with self._lock:
                    self.active -= 1

        return recorded

    def wait_for_steps(self, index: int, n: int = 3, timeout: float = 30) -> dict:
        """Render number `index` (0: the first recorded), once it has taken `n` steps."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.renders) > index and len(self.renders[index]["steps"]) >= n:
                return self.renders[index]
            time.sleep(0.01)
        raise AssertionError(f"render {index} did not reach {n} steps in {timeout} s")

    def wait_until_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.active, "a render is still running"


def step_seconds(render: dict) -> float:
    """The longest step of a render (its first steps included)."""
    times = [render["start"], *render["steps"]]
    return max(b - a for a, b in zip(times[:-1], times[1:], strict=True))


def launch(pipe: WanT2IPipeline, **options) -> tuple:
    demo = app.create_demo(pipe, **options)
    _, url, _ = demo.launch(
        **demo.launch_args, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    return demo, url


@pytest.fixture(scope="module")
def pipe(tiny_wan_dir: Path) -> WanT2IPipeline:
    """A pipeline of its own, so that the Recorder watches only this module's renders."""
    return WanT2IPipeline.from_pretrained(teacher_path=tiny_wan_dir, device="cpu")


@pytest.fixture(scope="module")
def recorder(pipe: WanT2IPipeline) -> Recorder:
    return Recorder(pipe)


@pytest.fixture(scope="module")
def url(pipe: WanT2IPipeline, recorder: Recorder) -> Iterator[str]:
    demo, url = launch(pipe, limits=WIDE_LIMITS)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(url: str) -> Client:
    return Client(url, verbose=False)


def raw_call(url: str, api_name: str, body: bytes | dict, timeout: float = 60) -> tuple[str, object]:
    """POST /gradio_api/call/<api_name>, then read its event stream: ("complete" or "error", data)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.Client(base_url=url + "gradio_api/", timeout=timeout) as http:
        response = http.post(f"call/{api_name}", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        stream = http.get(f"call/{api_name}/{response.json()['event_id']}").text
    events = [block.split("\n") for block in stream.strip().split("\n\n")]
    final = [(e[0].removeprefix("event: "), json.loads(e[1].removeprefix("data: "))) for e in events if len(e) == 2]
    return [f for f in final if f[0] in ("complete", "error")][-1]


# 1. Cancel and disconnect stop a render within a step; nothing ever renders beside the one slot ------------------
@pytest.mark.slow
def test_submit_cancel_submit_never_runs_two_renders(client: Client, recorder: Recorder) -> None:
    first = len(recorder.renders)
    for _ in range(3):
        before = len(recorder.renders)
        job = client.submit(PROMPT, **LONG, api_name="/generate")
        render = recorder.wait_for_steps(before)  # this job's render, not the one before
        cancelled = time.monotonic()
        job.cancel()
        recorder.wait_until_idle()
        # It stopped after the step that was running, well before its 1000 steps.
        assert render["error"] == "RenderStopped" and len(render["steps"]) < LONG["steps"] // 2
        assert render["end"] - cancelled < 3 * step_seconds(render) + 1.0
    _, seed, _ = client.predict(PROMPT, steps=2, seed=4, api_name="/generate")
    assert seed == 4
    assert recorder.peak == 1 and len(recorder.renders) - first == 4


@pytest.mark.slow
def test_a_client_that_goes_away_frees_the_slot_within_a_step(url: str, client: Client, recorder: Recorder) -> None:
    before = len(recorder.renders)
    with httpx.Client(base_url=url + "gradio_api/", timeout=30) as http:
        data = [PROMPT, None, None, None, LONG["steps"], None, None, LONG["seed"], None, LONG["height"], LONG["width"]]
        response = http.post("call/generate", json={"data": data})  # positional: see test_a_400_digit_number...
        with http.stream("GET", f"call/generate/{response.json()['event_id']}"):
            render = recorder.wait_for_steps(before)
        gone = time.monotonic()  # the connection is closed here
    _, seed, _ = client.predict(PROMPT, steps=1, seed=5, api_name="/generate")
    following = recorder.renders[-1]
    assert seed == 5 and render["error"] == "RenderStopped" and len(render["steps"]) < LONG["steps"] // 2
    assert render["end"] - gone < 3 * step_seconds(render) + 1.0
    assert following["start"] - gone < 3 * step_seconds(render) + 2.0  # the next request did not wait for it
    assert recorder.peak == 1


@pytest.mark.slow
def test_a_render_past_the_time_limit_stops_with_a_message(pipe: WanT2IPipeline, recorder: Recorder) -> None:
    demo, url = launch(pipe, limits=Limits(max_side=128, max_work=100.0, max_seconds=0.5))
    try:
        start = time.monotonic()
        with pytest.raises(AppError, match=r"ran past this app's limit of 0.5 s per render \(max_render_seconds\)"):
            Client(url, verbose=False).predict(PROMPT, **LONG, api_name="/generate")
        assert time.monotonic() - start < 5  # not the 25 s of the whole render
        assert recorder.renders[-1]["error"] == "RenderStopped"
    finally:
        demo.close()


@pytest.mark.slow
def test_a_cancelled_sweep_stops_within_a_step_and_nothing_renders_beside_it(
    client: Client, recorder: Recorder
) -> None:
    """/sweep goes through the same handler as /generate: one worker, stopped at its next forward when cancelled."""
    before = len(recorder.renders)
    job = client.submit(PROMPT, axis_1="steps", values_1="1000,999", axis_2="none", seed=3, api_name="/sweep")
    render = recorder.wait_for_steps(before)
    assert render["kind"] == "sweep"
    cancelled = time.monotonic()
    job.cancel()
    _, seed, _ = client.predict(PROMPT, steps=2, seed=6, api_name="/generate")  # queued behind it, never beside it
    assert seed == 6 and render["error"] == "RenderStopped" and len(render["steps"]) < 1000
    assert render["end"] - cancelled < 3 * step_seconds(render) + 1.0
    assert recorder.peak == 1


@pytest.mark.slow
def test_the_doctor_stops_at_the_time_limit(pipe: WanT2IPipeline) -> None:
    """/diagnose runs as a job too: past the limit it stops with the same message (and no report is kept)."""
    demo, url = launch(pipe, limits=Limits(max_side=128, max_work=100.0, max_seconds=0.05))
    try:
        client = Client(url, verbose=False)
        for _ in range(2):  # a failed run keeps nothing: the second runs (and stops) again
            start = time.monotonic()
            with pytest.raises(AppError, match=r"ran past this app's limit of 0.05 s per render"):
                client.predict(api_name="/diagnose")
            assert time.monotonic() - start < 10
    finally:
        demo.close()


async def drive(event: Callable, values: dict, stop_after: int | None = None) -> list:
    """Run an event function as Gradio would, keeping what it yields other than nothing-to-show; with
    `stop_after`, close it (a client that left) after that many live previews."""
    shown, previews = [], 0
    stream = event(None, **values)
    async for outputs in stream:
        if isinstance(outputs, tuple) and all(isinstance(o, dict) and o.get("__type__") == "update" for o in outputs):
            continue  # nothing new to show while it waits
        shown.append(outputs)
        previews += isinstance(outputs, Live)
        if stop_after is not None and previews >= stop_after:
            await stream.aclose()
            break
    return shown


@pytest.mark.slow
def test_jobs_cross_a_zerogpu_process_boundary(pipe: WanT2IPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """On ZeroGPU the GPU side runs in a forked worker that gets its job and returns what it yields by pickling,
    and is stopped between two yields (tests/zerogpu_double.py does the same). A generation with live previews, a
    sweep and the doctor all cross that boundary; a closed event stops its worker within a step."""
    import asyncio

    from zerogpu_double import FakeSpaces

    from wan_t2i import zerogpu
    from wan_t2i.app_sweep import sweep_job
    from wan_t2i.handlers import Handler
    from wan_t2i.jobs import Job

    fake = FakeSpaces()
    monkeypatch.setattr(zerogpu, "spaces", fake)
    handler = Handler(pipe, WIDE_LIMITS)
    # Long enough (about a second) to span several of the event's polls (POLL_SECONDS): a render that ends within
    # one poll shows its result alone, which is right for a visitor but leaves this test nothing to check.
    values = dict(prompt=PROMPT, sampler_a="legacy_ddim", sampler_b="flow_unipc", steps=40, height=128, width=128,
                  seed=2)  # fmt: skip
    keep = lambda result, _: result  # noqa: E731 - the event's outputs are the job's result itself
    shown = asyncio.run(drive(handler.endpoint(keep, values, 1, preview=lambda live: live), values))
    *live, generation = shown
    assert live and all(isinstance(p, Live) and set(p.images) == {"legacy_ddim", "flow_unipc"} for p in live)
    assert len(live[-1].latent_std["flow_unipc"]) == live[-1].step  # the plot's data as far as it has come
    here = pipe.generate(handler.request(values))
    for label in ("legacy_ddim", "flow_unipc"):  # the worker's images are this process's
        assert np.array_equal(np.asarray(generation[label].image), np.asarray(here[label].image))
    assert fake.durations[-1] == zerogpu.gpu_seconds(handler.request(values))

    sweep_values = dict(prompt=PROMPT, axis_1="shift", values_1="1,5", axis_2="none", values_2="", steps=2, seed=1)
    prepare = lambda v: sweep_job(handler, v)  # noqa: E731
    (sweep,) = asyncio.run(drive(handler.endpoint(keep, sweep_values, 1, prepare=prepare), sweep_values))
    assert [cell.values["shift"] for cell in sweep.cells] == [1.0, 5.0] and sweep.cells[0].image is not None
    (report,) = asyncio.run(drive(handler.endpoint(keep, [], 1, prepare=lambda _: Job("diagnose")), {}))
    assert report.check("parameterization").status in ("ok", "warning", "problem")

    long = dict(prompt=PROMPT, sampler="flow_unipc", **LONG)
    asyncio.run(drive(handler.endpoint(keep, long, 1, preview=lambda live: live), long, stop_after=1))
    closed = time.monotonic()  # after its first preview, at step 100 of 1000
    child = fake.children[-1]
    child.join(timeout=30)
    assert not child.is_alive() and time.monotonic() - closed < 5  # the worker stopped within a step or so


# 2. Per-model public limits and a work budget per request -----------------------------------------------------------
def test_the_default_limits_are_what_the_page_can_ask(tiny_pipe: WanT2IPipeline) -> None:
    """The tiny model's presets are 32x48 and 48x32: its side limit is 48, its budget 100 steps x 2 x 1536 pixels."""
    limits = Limits.for_model(tiny_pipe.defaults)
    assert (limits.max_side, limits.max_work, limits.max_seconds) == (48, 100 * 2 * 32 * 48 / 1e6, 300.0)
    assert Limits.for_model(tiny_pipe.defaults, max_work=5, max_seconds=9).max_work == 5
    with pytest.raises(ValueError, match="max_work must be a number > 0, got 0"):
        Limits.for_model(tiny_pipe.defaults, max_work=0)


def test_the_demo_bundle_sets_its_public_sizes() -> None:
    from wan_t2i.loading import DEMO_MODEL_DIR, ModelDefaults

    limits = Limits.for_model(ModelDefaults.read(DEMO_MODEL_DIR))
    assert limits.max_side == 512 and limits.max_work == pytest.approx(100 * 2 * 256 * 256 / 1e6)


def test_the_budget_is_set_per_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAN_T2I_MAX_WORK", raising=False)
    assert app.parse_args([]).max_work is None
    monkeypatch.setenv("WAN_T2I_MAX_WORK", "40")
    monkeypatch.setenv("WAN_T2I_MAX_RENDER_SECONDS", "90")
    args = app.parse_args([])
    assert (args.max_work, args.max_render_seconds) == (40.0, 90.0)
    assert app.parse_args(["--max_work", "7.5"]).max_work == 7.5


@pytest.fixture(scope="module")
def default_url(tiny_pipe: WanT2IPipeline) -> Iterator[str]:
    """The app with the model's own public limits (tiny: 48 pixels per side, 0.31 megapixel-steps)."""
    demo, url = launch(tiny_pipe, keep_outputs_seconds=2)
    yield url
    demo.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"steps": 1000}, r"1000 steps x 1 sampler\(s\) x 48x32 pixels is 1.54 megapixel-steps, over this app's "
         r"budget of 0.307 per request \(max_work\): use at most 200 steps here"),
        ({"height": 64}, r"height must be at most 48 pixels on this app \(public_max_side\), got 64"),
    ],
)  # fmt: skip
def test_requests_over_the_public_limits_are_refused_before_rendering(
    default_url: str, arguments: dict, message: str
) -> None:
    with pytest.raises(AppError, match=message):
        Client(default_url, verbose=False).predict(PROMPT, **arguments, api_name="/generate")


# 4. Uploads, and what the app keeps on disk ----------------------------------------------------------------------
def test_uploads_are_limited(url: str) -> None:
    """The app takes no file: uploads stop at 100 KB (`app_api.MAX_UPLOAD`), well under the 1 MiB body limit."""
    with httpx.Client(base_url=url + "gradio_api/", timeout=30) as http:
        small = http.post("upload", files={"files": ("a.txt", b"x" * 1000)})
        large = http.post("upload", files={"files": ("a.bin", b"x" * (300 << 10))})  # a body the body limit lets by
    assert small.status_code == 200 and large.status_code == 413 and "102400 bytes" in large.text


@pytest.mark.slow
def test_a_restart_clears_what_the_last_run_left_and_keeps_the_opening(
    pipe: WanT2IPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started on the cache folder of an earlier run deletes that run's files once they are past their age;
    the page's opening images (kept for the server's life) stay, however old."""
    cache = tmp_path / "gradio-cache"
    leftover = cache / "earlier-run" / "image.png"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"an image of the last run")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo, url = launch(pipe, render_on_load=True, keep_outputs_seconds=2)
    try:
        time.sleep(2.5)  # every file, the opening's too, is now past the age
        with httpx.Client(base_url=url, timeout=30) as http:
            components = http.get("config").json()["components"]  # the first request starts the sweeper
            time.sleep(3)
            opening = next(c for c in components if c["props"].get("elem_id") == "image-b")["props"]["value"]["path"]
            assert not leftover.exists() and Path(opening).is_file()
            assert http.get(f"gradio_api/file={opening}").status_code == 200
    finally:
        demo.close()


@pytest.mark.slow
def test_served_images_are_deleted_on_a_schedule(
    tiny_pipe: WanT2IPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 requests with outputs kept 2 s: the files in the app's cache folder stay bounded while they run, and are
    gone after. Gradio's own cleanup misses them (it reads only the components' records, and each session's outputs
    are recorded on its own copies): serving.CacheSweeper deletes by age."""
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # the app's own folder, read as the demo is created
    demo, url = launch(tiny_pipe, keep_outputs_seconds=2)
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))

    def on_disk() -> list[Path]:  # os.walk, not rglob: folders go while it walks
        return [Path(root, name) for root, _, names in os.walk(cache) for name in names]

    try:
        counts, hashes = [], set()
        start = time.monotonic()
        for seed in range(40):  # a new image per seed: nothing is shared by hash
            path, _, _ = client.predict(PROMPT, steps=1, seed=seed, api_name="/generate")
            hashes.add(Path(path).parent.name)
            counts.append(len(on_disk()))
        seconds = time.monotonic() - start
        time.sleep(5)  # the age (2 s) and one more sweep (every 2 s)
        left = on_disk()
    finally:
        demo.close()
    assert len(hashes) == 40 and max(counts) >= 1  # the images are written to this folder
    # The oldest went while the requests ran: no more on disk than about two sweeps' worth of requests.
    assert max(counts) <= 40 * 6 / seconds + 2 and max(counts) < 40, (counts, seconds)
    assert left == []


# 5. Oversized bodies are refused before they are parsed -------------------------------------------------------------
def send_raw(url: str, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand (a client that means harm does not wait for permission), return the reply's start."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending: what it should do
        return sock.recv(4096)


def test_a_200_mb_body_is_refused_unread(url: str) -> None:
    rss = psutil.Process(os.getpid()).memory_info().rss  # the server runs in this process
    size = 200 << 20
    head = (
        f"POST /gradio_api/call/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    start = time.monotonic()
    reply = send_raw(url, head, iter([b'{"data": ["' + b"x" * (1 << 20)] * 8))
    assert reply.startswith(b"HTTP/1.1 413") and b"limit of 1048576 bytes" in reply
    assert time.monotonic() - start < 5
    gc.collect()
    assert psutil.Process(os.getpid()).memory_info().rss - rss < 50 << 20


def test_a_chunked_body_is_cut_off_at_the_limit(url: str) -> None:
    """No Content-Length: the server counts what arrives and answers 413 once it passes 1 MiB."""
    head = b"POST /gradio_api/call/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * (64 << 10)
    chunks = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64))  # 4 MiB offered
    assert send_raw(url, head, chunks).startswith(b"HTTP/1.1 413")


def test_a_body_under_the_limit_gets_the_usual_message(url: str) -> None:
    kind, data = raw_call(url, "generate", {"data": ["x" * 500_000]})
    assert kind == "error" and data["error"].startswith("the prompt is 500000 characters long; the limit is 2000")


# 6. Every failure a request can cause is one line saying what to change -------------------------------------------
@pytest.mark.parametrize("position", [4, 5, 6, 7, 9, 10])  # steps, shift, guidance_scale, seed, height, width
def test_a_400_digit_number_is_refused_in_one_line(url: str, position: int) -> None:
    data = [PROMPT, None, None, None, 2, 5.0, 4.0, 1, False, 32, 48]
    body = json.dumps({"data": data}).encode()
    digits = "1" + "0" * 400
    values = json.loads(body)["data"]
    values[position] = "@"
    body = json.dumps({"data": values}).replace('"@"', digits).encode()
    kind, data = raw_call(url, "generate", body)
    name = ["steps", "shift", "guidance_scale", "seed", None, "height", "width"][position - 4]
    assert kind == "error" and "\n" not in data["error"] and len(data["error"]) < 200, data
    assert data["error"].startswith(name) and "(401 digits)" in data["error"]


def test_raw_calls_may_leave_out_every_input_but_the_prompt(url: str, pipe: WanT2IPipeline) -> None:
    kind, (image, seed, details) = raw_call(url, "generate", {"data": [PROMPT]})
    assert kind == "complete" and details["results"]["flow_unipc"]["parameters"]["steps"] == pipe.defaults.steps
    kind, (image_a, image_b, seed, details) = raw_call(url, "compare", {"data": [PROMPT, None, None, "flow_euler"]})
    assert kind == "complete" and list(details["results"]) == ["legacy_ddim", "flow_euler"]
    kind, data = raw_call(url, "generate", {"data": []})
    assert kind == "error" and data["error"].startswith("the prompt is empty")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (42, "the prompt must be text, got int 42"),
        ([PROMPT], "the prompt must be text, got list"),
        ({"text": PROMPT}, "the prompt must be text, got dict"),
        (True, "the prompt must be text, got bool True"),
        ("&nbsp;&nbsp;", "the prompt is empty"),
        ("\u200b\u200b \u2060", "the prompt is empty"),
        ("&#8203;&amp;nbsp;", "the prompt is empty"),
    ],
)
def test_prompts_that_are_not_text_or_show_nothing_are_refused(client: Client, prompt: object, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(prompt, steps=1, api_name="/generate")


# 7. Seeds, PNG parameters, the opening comparison ----------------------------------------------------------------
def test_a_given_seed_is_used_and_a_missing_one_drawn(client: Client) -> None:
    assert client.predict(PROMPT, steps=1, seed=123, api_name="/generate")[1] == 123  # randomize_seed left out
    drawn = {client.predict(PROMPT, steps=1, api_name="/generate")[1] for _ in range(3)}
    assert len(drawn) == 3
    assert client.predict(PROMPT, steps=1, seed=123, randomize_seed=True, api_name="/generate")[1] != 123


def test_a_png_gives_back_the_request_that_reproduces_it(client: Client, pipe: WanT2IPipeline) -> None:
    path, seed, _ = client.predict(PROMPT, steps=3, seed=77, api_name="/generate")
    again = pipe.generate(GenerationRequest.from_png(path))
    assert again.seed == 77
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(again["flow_unipc"].image))
    from_text = pipe.generate(GenerationRequest.from_parameters(read_parameters(path)))
    assert np.array_equal(np.asarray(from_text["flow_unipc"].image), np.asarray(again["flow_unipc"].image))


def test_the_opening_and_the_lessons_render_once_at_start_up(pipe: WanT2IPipeline, recorder: Recorder) -> None:
    """With render_on_load, the opening comparison and every lesson render once as the app starts; a page view shows
    the opening from the page's config (no event at all), and a request for a lesson's settings is answered from its
    kept result, with no render."""
    from wan_t2i.app_compare import LESSONS

    before = len(recorder.renders)
    demo, url = launch(pipe, render_on_load=True)
    try:
        kinds = sorted(r["kind"] for r in recorder.renders[before:])
        assert kinds == sorted("sweep" if lesson.tab == "sweep" else "generate" for lesson in LESSONS)
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(5):  # five page views
                components = http.get("config").json()["components"]
                image_b = next(c for c in components if c["props"].get("elem_id") == "image-b")["props"]["value"]
                assert image_b["path"].endswith("_flow_unipc_seed0.png")  # the opening's B, named for what it is
                assert http.get(f"gradio_api/file={image_b['path']}").status_code == 200
        lesson = LESSONS[0].values
        a, b, seed, _ = Client(url, verbose=False).predict(
            lesson["prompt"], sampler_a=lesson["sampler_a"], sampler_b=lesson["sampler_b"], steps=lesson["steps"],
            seed=0, api_name="/compare",
        )  # fmt: skip
        assert seed == 0 and len(recorder.renders) == before + len(LESSONS)  # no render for any of it
    finally:
        demo.close()
