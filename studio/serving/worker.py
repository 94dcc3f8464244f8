"""Background jobs: one worker thread per device, fed by a queue; every job streams progress events and stops
within one denoising step when cancelled.

`job_events(job)` is the one function that runs a job and yields its events. The worker thread iterates it and
forwards the events to the job's own queue (`Job.stream()` reads them); a caller that must run the job inline
(a ZeroGPU `spaces.GPU` handler, where the GPU exists only inside the call) iterates it directly. Room to grow:
`Worker(threads=..., max_queue=...)` sets per-device concurrency and the queue limit; a worker whose thread
died is restarted on the next submit.
"""

from __future__ import annotations

import itertools
import math
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from studio.config import RunConfig
from studio.limits import LimitError, Limits, shared_instance
from studio.serving.policy import check_config, check_loaded

if TYPE_CHECKING:  # imported when a job runs: the page starts before torch loads
    from studio.data.dataset import Dataset
    from studio.diffusion.loop import Step
    from studio.runs import Run

log = logging.getLogger("studio.serving.worker")

TERMINAL = ("done", "cancelled", "error")
SaveTo = Callable[[int, "Run"], Path]
"""save_to(part, run) -> folder: where a finished run is written (studio.runs.save_run)."""


class QueueFull(ValueError):
    """Too many jobs are waiting for this device."""


@dataclass
class Event:
    """One progress report. kind: queued | preparing | ready | step | result | done | cancelled | error.
    `part` tells which config of the job it belongs to (a comparison has two)."""

    kind: str
    part: int = 0
    k: int = 0
    K: int = 0
    step: Step | None = None        # with CPU tensors
    run: Run | None = None
    dataset: Dataset | None = None  # the data the run was fitted on
    folder: Path | None = None
    position: int = 0
    message: str = ""


@dataclass
class Job:
    """Configs to run side by side (one per part), the events they produced, and a cancel flag."""

    configs: Sequence[RunConfig]
    save_to: SaveTo | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    events: "queue.Queue[Event]" = field(default_factory=queue.Queue, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    worker: "Worker | None" = field(default=None, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def stream(self, poll_s: float = 0.2, coalesce: bool = True) -> Iterator[Event]:
        """Events until a terminal one. While queued, yields `queued` with the position whenever it changes.
        With `coalesce`, a slow reader gets only the newest `step` of each part among those waiting."""
        last_position = None
        while True:
            position = self.worker.position(self) if self.worker else 0
            if position and position != last_position:
                last_position = position
                yield Event("queued", position=position, message=self.worker.waiting_message(self))
            try:
                batch = [self.events.get(timeout=poll_s)]
            except queue.Empty:
                if self.thread is not None and not self.thread.is_alive() and self.events.empty():
                    yield Event("error", message="the worker running this job stopped; please run it again")
                    return
                continue
            while True:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            for i, event in enumerate(batch):
                newer = coalesce and event.kind == "step" and any(
                    e.kind == "step" and e.part == event.part for e in batch[i + 1:])
                if not newer:
                    yield event
                if event.kind in TERMINAL:
                    return


def _to_cpu(step: Step) -> Step:
    return replace(step, x_t=step.x_t.detach().float().cpu(), x0=step.x0.detach().float().cpu(),
                   extras={k: v.detach().cpu() for k, v in step.extras.items()},
                   final=None if step.final is None else step.final.detach().float().cpu())


def save_result(run: Run, dataset: Dataset, folder: Path) -> Path:
    """Write a finished run (atomically); 2-D runs draw their training points behind the samples."""
    from studio.runs import save_run

    return save_run(run, folder, None if run.is_image else dataset.x)


def _part_events(part: int, cfg: RunConfig, stop: Callable[[], bool], save_to: SaveTo | None) -> Iterator[Event]:
    from studio import engine
    from studio.data.registry import load_dataset
    from studio.diffusion import loop

    yield Event("preparing", part=part, message="loading the dataset and fitting the denoiser")
    loaded = load_dataset(cfg.dataset.name, **cfg.dataset.options)  # the size limit, before any fitting
    check_loaded(loaded.n)
    prep = engine.prepare(cfg)
    yield Event("ready", part=part, dataset=prep.dataset, message=f"fitted in {prep.fit_s:.2f} s")
    kept = []
    for step in prep.steps():
        kept.append(_to_cpu(step))
        yield Event("step", part=part, k=step.k + 1, K=step.K, step=kept[-1])
        if stop():
            raise loop.Cancelled(len(kept))
    traj = loop.collect(iter(kept))
    run = engine.finish(prep, traj, sum(s.seconds for s in kept))
    folder = None if save_to is None else save_result(run, prep.dataset, save_to(part, run))
    yield Event("result", part=part, k=len(kept), K=len(kept), run=run, dataset=prep.dataset, folder=folder)


def job_events(job: Job) -> Iterator[Event]:
    """Run `job` here and now, yielding its events; the parts advance in lock step, one step each in turn.
    Always ends with exactly one terminal event: done, cancelled (within one step of the request) or error."""
    from studio.diffusion.loop import Cancelled

    limit = Limits.from_env().max_job_seconds
    deadline = time.monotonic() + limit

    def timed_out() -> bool:
        return time.monotonic() > deadline

    stop = lambda: job.cancelled or timed_out()  # noqa: E731 - checked after every step
    parts = [_part_events(i, cfg, stop, job.save_to) for i, cfg in enumerate(job.configs)]
    try:
        if job.cancelled:
            raise Cancelled(0)
        for group in itertools.zip_longest(*parts):
            yield from (event for event in group if event is not None)
        yield Event("done")
    except Cancelled as err:
        if timed_out() and not job.cancelled:
            yield Event("error", message=f"job time: stopped after {err.steps_done} step(s), over this instance's "
                                         f"limit of {limit:,} s (set STUDIO_MAX_JOB_SECONDS to change it)")
        else:
            yield Event("cancelled", k=err.steps_done, message=f"cancelled after {err.steps_done} step(s)")
    except ValueError as err:  # bad input: the message names the field
        yield Event("error", message=str(err))
    except Exception as err:  # noqa: BLE001 - one clear line for the page, the traceback for the log
        log.exception("job %s failed", job.id)
        yield Event("error", message=f"the run failed: {type(err).__name__}: {err}")
    finally:
        for gen in parts:
            gen.close()


class Worker:
    """Runs jobs for one device on `threads` background threads. "fifo": each thread runs one job to its end,
    in the order they were submitted. "fair": each thread interleaves up to `max_active` jobs one step (one
    event) at a time, round robin, so a quick job is not held up behind a slow one."""

    def __init__(self, device: str, threads: int = 1, max_queue: int = 64, scheduling: str = "fifo",
                 max_active: int = 8) -> None:
        self.device = device
        self.max_queue = max_queue
        self.scheduling = scheduling
        self.max_active = max_active
        self._jobs: "queue.Queue[Job]" = queue.Queue()
        self._pending: list[Job] = []
        self._running: list[Job] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread | None] = [None] * threads

    def submit(self, job: Job) -> Job:
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the {self.device} queue is full ({self.max_queue} jobs waiting, this instance's "
                                f"limit; set STUDIO_QUEUE_LENGTH to change it); try again shortly")
            self._pending.append(job)
        job.worker = self
        self._jobs.put(job)
        self._ensure_threads()
        return job

    def position(self, job: Job) -> int:
        """1-based place of a job still waiting to start; 0 once it runs."""
        with self._lock:
            return self._pending.index(job) + 1 if job in self._pending else 0

    def ahead(self, job: Job) -> list[Job]:
        """The jobs a waiting job waits for: those running and those queued before it."""
        with self._lock:
            waiting = self._pending[:self._pending.index(job)] if job in self._pending else []
            return [*self._running, *waiting]

    def waiting_message(self, job: Job) -> str:
        """What a waiting job's page shows: the jobs ahead of it and the cost model's estimate of their time."""
        from studio.serving.policy import estimate_cost

        ahead = self.ahead(job)
        try:
            seconds = sum(estimate_cost(cfg).seconds for other in ahead for cfg in other.configs)
        except ValueError:  # a config the job itself will report on
            seconds = 0.0
        share = " (sharing the device step by step)" if self.scheduling == "fair" else ""
        return f"waiting: {len(ahead)} job(s) ahead, about {math.ceil(seconds)} s of work{share}"

    def _ensure_threads(self) -> None:
        with self._lock:
            for i, thread in enumerate(self._threads):
                if thread is None or not thread.is_alive():
                    if thread is not None:
                        log.warning("worker thread %s for %s had died; restarting it", i, self.device)
                    self._threads[i] = threading.Thread(
                        target=self._serve, name=f"studio-worker-{self.device}-{i}", daemon=True)
                    self._threads[i].start()

    def _start(self, job: Job) -> Iterator[Event]:
        """Move a job from waiting to running on this thread; its events, not yet started."""
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
            self._running.append(job)
        job.thread = threading.current_thread()
        return job_events(job)

    def _finish(self, job: Job) -> None:
        with self._lock:
            if job in self._running:
                self._running.remove(job)

    def _serve(self) -> None:
        if self.scheduling == "fair":
            return self._serve_round_robin()
        while True:
            job = self._jobs.get()
            for event in self._start(job):
                job.events.put(event)
            self._finish(job)

    def _serve_round_robin(self) -> None:
        """Advance every active job by one event in turn; take new jobs between rounds (wait when idle)."""
        active: list[tuple[Job, Iterator[Event]]] = []
        while True:
            while len(active) < self.max_active:
                try:
                    job = self._jobs.get(block=not active)
                except queue.Empty:
                    break
                active.append((job, self._start(job)))
            for entry in list(active):
                job, events = entry
                event = next(events, None)
                if event is not None:
                    job.events.put(event)
                if event is None or event.kind in TERMINAL:
                    active.remove(entry)
                    self._finish(job)


_WORKERS: dict[str, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(device: str) -> Worker:
    """The worker of a device ("auto" resolves to cuda when there is one); threads and queue length are the
    instance's limits (studio.limits)."""
    from studio.engine import resolve_device

    key = str(resolve_device(device))
    with _WORKERS_LOCK:
        if key not in _WORKERS:
            lim = Limits.from_env()
            _WORKERS[key] = Worker(key, threads=lim.concurrency_per_device, max_queue=lim.queue_length,
                                   scheduling=scheduling())
        return _WORKERS[key]


SCHEDULING_ENV = "STUDIO_SCHEDULING"


def scheduling() -> str:
    """$STUDIO_SCHEDULING: "fair" (jobs interleaved step by step; the default on a Space) or "fifo" (one job
    after another; the default of a local studio, whose single user runs one job at a time)."""
    value = os.environ.get(SCHEDULING_ENV, "").strip().lower() or ("fair" if shared_instance() else "fifo")
    if value not in ("fair", "fifo"):
        raise LimitError(f"{SCHEDULING_ENV}: expected fair or fifo, got {value!r}")
    return value


def admit(configs: Sequence[RunConfig]) -> None:
    """Validate a job's configs and check them against the instance's limits; ValueError names the field."""
    limits = Limits.from_env()
    for cfg in configs:
        check_config(limits, cfg.validate())


def submit(configs: Sequence[RunConfig], save_to: SaveTo | None = None) -> Job:
    """Queue a job on the worker of its device; ValueError (bad input, a limit, a full queue) before anything runs."""
    admit(configs)
    devices = {cfg.device for cfg in configs}
    if len(devices) != 1:
        raise ValueError(f"device: the parts of one job must share a device, got {', '.join(sorted(devices))}")
    return worker_for(devices.pop()).submit(Job(list(configs), save_to))


def stream(configs: Sequence[RunConfig], save_to: SaveTo | None = None, inline: bool = False,
           on_job: Callable[[Job], None] | None = None) -> Iterator[Event]:
    """Start a job and yield its events: on the device's worker thread, or here when `inline`. A refused job
    (bad input, over a limit, a full queue) yields one `error` event."""
    try:
        if inline:
            admit(configs)
            job = Job(list(configs), save_to)
        else:
            job = submit(configs, save_to)
    except ValueError as err:
        yield Event("error", message=str(err))
        return
    if on_job:
        on_job(job)
    if inline:
        yield from job_events(job)
        return
    try:
        yield from job.stream()
    finally:
        job.cancel()  # the reader went away (page closed, event cancelled): stop the work too
