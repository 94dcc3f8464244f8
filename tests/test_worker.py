import threading
import time

import pytest
import torch

from studio import engine
from studio.serving import worker
from studio.config import RunConfig
from studio.denoisers.wiener import Wiener
from studio.serving.worker import Job, QueueFull, Worker, job_events


def cfg(steps: int = 5, seed: int = 0, n: int = 3, denoiser: str = "wiener", sampler: str = "ddim") -> RunConfig:
    return RunConfig.from_dict({
        "dataset": {"name": "digits", "size": 200}, "denoiser": {"name": denoiser},
        "sampler": {"name": sampler, "steps": steps}, "n": n, "seed": seed, "device": "cpu",
    })


@pytest.fixture
def counted_wiener(monkeypatch):
    """Wiener steps that take a little time and are counted, so tests can see where a job stood."""
    calls = {"n": 0, "delay": 0.02}
    original = Wiener.denoise

    def slow(self, x_t, t, ab):
        time.sleep(calls["delay"])
        calls["n"] += 1
        return original(self, x_t, t, ab)

    monkeypatch.setattr(Wiener, "denoise", slow)
    return calls


def test_inline_job_events_and_result_match_the_engine():
    events = list(job_events(Job([cfg(steps=4)])))
    kinds = [e.kind for e in events]
    assert kinds == ["preparing", "ready", "step", "step", "step", "step", "result", "done"]
    assert [e.k for e in events if e.kind == "step"] == [1, 2, 3, 4] and events[2].K == 4
    assert events[1].dataset.name == "digits" and events[1].dataset.n == 200
    run = events[-2].run
    assert run.samples.shape == (3, 1, 8, 8)
    assert torch.equal(run.samples, engine.execute(cfg(steps=4)).samples)
    assert torch.equal(events[5].step.x0, run.samples)


def test_inline_cancel_stops_within_one_step():
    job = Job([cfg(steps=200)])
    seen = []
    for event in job_events(job):
        seen.append(event)
        if event.kind == "step" and event.k == 3:
            job.cancel()
    assert [e.kind for e in seen][-1] == "cancelled"
    assert seen[-1].k == 3 and max(e.k for e in seen if e.kind == "step") == 3


def test_worker_cancel_stops_within_one_step(counted_wiener):
    job = worker.submit([cfg(steps=200)])
    calls_at_cancel = None
    last = None
    for event in job.stream():
        last = event
        if event.kind == "step" and event.k >= 3 and calls_at_cancel is None:
            calls_at_cancel = counted_wiener["n"]
            job.cancel()
    assert last.kind == "cancelled"
    assert last.k <= calls_at_cancel + 1 < 200
    time.sleep(0.1)
    assert counted_wiener["n"] <= calls_at_cancel + 1  # nothing ran after the stop


def test_error_is_one_clear_message_and_the_worker_keeps_serving(monkeypatch):
    def broken(self, x_t, t, ab):
        raise RuntimeError("boom in the denoiser")

    monkeypatch.setattr(Wiener, "denoise", broken)
    events = list(worker.submit([cfg(seed=1)]).stream())
    assert events[-1].kind == "error"
    assert events[-1].message == "the run failed: RuntimeError: boom in the denoiser"
    monkeypatch.undo()
    again = list(worker.submit([cfg(seed=1)]).stream())
    assert again[-1].kind == "done" and again[-2].run.samples.shape == (3, 1, 8, 8)


def test_bad_input_is_refused_before_queueing():
    bad = cfg()
    bad.sampler.steps = 0
    with pytest.raises(ValueError, match=r"sampler\.steps: 0 is out of range"):
        worker.submit([bad])


def test_sessions_get_their_own_results(counted_wiener):
    counted_wiener["delay"] = 0.002
    results = {}

    def session(seed: int) -> None:
        results[seed] = [e for e in worker.submit([cfg(steps=6, seed=seed)]).stream()]

    threads = [threading.Thread(target=session, args=(s,)) for s in (11, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    runs = {seed: next(e.run for e in events if e.kind == "result") for seed, events in results.items()}
    assert runs[11].config.seed == 11 and runs[22].config.seed == 22
    for seed, run in runs.items():
        assert torch.equal(run.samples, engine.execute(cfg(steps=6, seed=seed)).samples)
    assert not torch.equal(runs[11].samples, runs[22].samples)


def test_comparison_parts_advance_in_lock_step():
    events = list(job_events(Job([cfg(steps=3), cfg(steps=3, sampler="ddpm")])))
    steps = [(e.part, e.k) for e in events if e.kind == "step"]
    assert steps == [(0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
    results = [e for e in events if e.kind == "result"]
    assert [r.run.config.sampler.name for r in results] == ["ddim", "ddpm"]


def test_queue_limit_and_positions(counted_wiener):
    w = Worker("cpu", max_queue=2)
    first = w.submit(Job([cfg(steps=30)]))
    second = w.submit(Job([cfg(steps=2)]))
    deadline = time.time() + 10
    while w.position(first) and time.time() < deadline:  # wait until the first job has started
        time.sleep(0.01)
    assert w.position(second) == 1
    third = w.submit(Job([cfg(steps=2)]))
    assert w.position(third) == 2
    with pytest.raises(QueueFull, match="queue is full"):
        w.submit(Job([cfg(steps=2)]))
    queued = next(second.stream())
    assert queued.kind == "queued" and queued.position == 1
    first.cancel()
    assert [e.kind for e in second.stream()][-1] == "done"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_thread_is_restarted(monkeypatch):
    w = Worker("cpu")
    real = worker.job_events

    def dies(job):
        raise SystemExit("thread killed")

    monkeypatch.setattr(worker, "job_events", dies)
    lost = w.submit(Job([cfg()]))
    events = list(lost.stream())
    assert {e.kind for e in events[:-1]} <= {"queued"} and events[-1].kind == "error"
    assert "worker running this job stopped" in events[-1].message
    assert not w._threads[0].is_alive()
    monkeypatch.setattr(worker, "job_events", real)
    assert [e.kind for e in w.submit(Job([cfg()])).stream()][-1] == "done"


def test_saved_run_folder(tmp_path):
    events = list(job_events(Job([cfg(steps=2)], save_to=lambda part, run: tmp_path / run.run_id)))
    result = next(e for e in events if e.kind == "result")
    assert result.folder == tmp_path / result.run.run_id
    assert {"config.yaml", "metrics.json", "samples.png", "tensors.safetensors"} <= {
        p.name for p in result.folder.iterdir()}
