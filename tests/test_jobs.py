"""The GPU thread every app job runs in (wan_t2i.jobs): one long-lived thread per process, jobs in turn, a stop that
reaches only its own job."""

from __future__ import annotations

import threading

import pytest

from wan_t2i import jobs
from wan_t2i.jobs import Job, run_job
from wan_t2i.pipeline import WanT2IPipeline


def result_of(events) -> tuple:
    for event in events:
        if event[0] in ("result", "failed"):
            return event
    raise AssertionError("the job ended without a result")


def test_every_job_runs_in_one_long_lived_thread(tiny_pipe: WanT2IPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    threads = []
    monkeypatch.setattr(tiny_pipe, "generate", lambda request, **_: threads.append(threading.current_thread()))
    job = Job("generate", tiny_pipe.request("a lake", steps=2))
    for _ in range(3):
        assert result_of(run_job(tiny_pipe, job))[0] == "result"
    assert len(set(threads)) == 1 and threads[0] is not threading.main_thread() and threads[0].is_alive()
    assert threads[0].daemon  # a render never holds up the process's exit


def test_a_forked_process_starts_its_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    first = jobs.gpu_thread()
    assert jobs.gpu_thread() is first
    monkeypatch.setattr(jobs.os, "getpid", lambda: first.pid + 1)  # as in a child forked for a job (ZeroGPU)
    child = jobs.gpu_thread()
    assert child is not first and child.thread.is_alive()


def test_a_job_stopped_while_it_waits_leaves_the_running_one_alone(
    tiny_pipe: WanT2IPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, started = threading.Event(), threading.Event()
    real_generate = tiny_pipe.generate

    def generate(request, **options):
        if request.prompt == "first":
            started.set()
            release.wait(30)  # the second job is queued and stopped meanwhile
        return real_generate(request, **options)  # forwards run through every job's stop hook

    monkeypatch.setattr(tiny_pipe, "generate", generate)
    first = run_job(tiny_pipe, Job("generate", tiny_pipe.request("first", steps=2)))
    second = run_job(tiny_pipe, Job("generate", tiny_pipe.request("second", steps=2)))
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("first", result_of(first)))
    runner.start()
    assert started.wait(30)
    assert next(second) == ("tick",)  # queued behind the first
    closer = threading.Thread(target=second.close)  # the visitor stops it: it waits for its turn, then ends at once
    closer.start()
    release.set()
    runner.join(60)
    closer.join(60)
    assert outcome["first"][0] == "result" and outcome["first"][1]["flow_unipc"].image is not None
    stopped = run_job(tiny_pipe, Job("generate", tiny_pipe.request("third", steps=2)))
    assert result_of(stopped)[0] == "result"  # the thread serves on
