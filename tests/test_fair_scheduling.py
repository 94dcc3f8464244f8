"""With STUDIO_SCHEDULING=fair (the default on a Space) a quick job submitted behind a slow one finishes within a
few seconds: the worker interleaves jobs step by step. The waiting page names the jobs ahead and their time."""

import time

import pytest

import studio.serving.worker as worker
from studio.config import RunConfig
from studio.limits import LimitError


def config(steps: int, seed: int) -> RunConfig:
    return RunConfig.from_dict({"dataset": {"name": "moons", "size": 50}, "denoiser": {"name": "wiener"}, "n": 2,
                                "seed": seed, "sampler": {"name": "ddim", "steps": steps}, "device": "cpu"})


@pytest.fixture
def slow_steps(monkeypatch, slow_wiener):
    slow_wiener(0.2)
    monkeypatch.setattr(worker, "_WORKERS", {})


def test_a_quick_job_behind_a_slow_one_finishes_quickly(monkeypatch, slow_steps):
    monkeypatch.setenv("STUDIO_SCHEDULING", "fair")
    slow = worker.submit([config(200, 0)])  # 40 s alone
    deadline = time.monotonic() + 20
    while worker.worker_for("cpu").position(slow):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    start = time.monotonic()
    quick = list(worker.stream([config(3, 1)]))
    took = time.monotonic() - start
    assert quick[-1].kind == "done" and any(e.kind == "result" for e in quick)
    assert took < 12
    assert not slow.events.empty() and slow.events.queue[-1].kind not in worker.TERMINAL  # still running
    slow.cancel()
    assert list(slow.stream())[-1].kind == "cancelled"


def test_fifo_locally_and_the_waiting_message(monkeypatch, slow_steps):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert worker.scheduling() == "fifo"
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    assert worker.scheduling() == "fair"
    monkeypatch.setenv("STUDIO_SCHEDULING", "lottery")
    with pytest.raises(LimitError, match="STUDIO_SCHEDULING"):
        worker.scheduling()
    monkeypatch.setenv("STUDIO_SCHEDULING", "fifo")
    slow = worker.submit([config(200, 0)])
    waiting = worker.submit([config(3, 1)])
    first = next(waiting.stream())
    assert first.kind == "queued" and first.message.startswith("waiting: 1 job(s) ahead, about ")
    slow.cancel()
    waiting.cancel()
    assert list(waiting.stream())[-1].kind in ("cancelled", "done")
