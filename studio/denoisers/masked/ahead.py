"""Noise levels prepared ahead: a run knows the levels it will visit, so on a GPU the next levels' masks and plans
are built by one background thread on a side CUDA stream while the current level's kernels run."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import torch

# levels prepared ahead of the current one, by device type (STUDIO_LEVELS_AHEAD sets the GPU's; 0 = build each
# level when the run reaches it); none on the CPU, whose cores the denoiser already uses
DEPTH = {"cuda": int(os.environ.get("STUDIO_LEVELS_AHEAD", "2"))}
# The builds' stream has the highest priority the device offers (CUDA maps any lower number to it): their small,
# host-synchronised kernels then take SMs as the run's large kernels free them, instead of queueing behind every
# block of those kernels (each synchronisation would wait out a whole denoise step).
SIDE_PRIORITY = int(os.environ.get("STUDIO_LEVELS_PRIORITY", "-100"))


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor held by `value` (through dataclasses, dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors_in(getattr(value, f.name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v)


class LevelsAhead:
    """Runs `build(ab)` (which returns what it made) for the levels after the current one in a background thread,
    at most DEPTH ahead, in the order the run visits them. `wait(ab)` is called before a level is used: it returns
    once a build of that level under way has finished (its result is then in the caller's cache; a failed build is
    left for the caller to redo in its own thread, where the error surfaces)."""

    def __init__(self, device: torch.device, build: Callable[[float], Any]) -> None:
        self.device, self.build = device, build
        self.depth = DEPTH.get(device.type, 0)
        self.levels: list[float] = []
        self.cursor = 0
        self.pending: dict[float, Future] = {}
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.stream: Any = None  # the side CUDA stream the builds run on
        self.run_stream: Any = None  # the run's stream, which uses what they build
        self.ready_event: Any = None

    def start(self, levels: Sequence[float]) -> None:
        """A run begins: these levels, in order; the ones after the first are prepared while the first runs."""
        if not self.depth:
            return
        self.levels, self.cursor = [float(ab) for ab in levels], 0
        if self.device.type == "cuda":  # the side stream starts after what the caller queued (the fit's copies)
            self.stream = self.stream or torch.cuda.Stream(self.device, priority=SIDE_PRIORITY)
            self.run_stream = torch.cuda.current_stream(self.device)
            self.ready_event = self.run_stream.record_event()
        self._submit_after(0)

    def wait(self, ab: float) -> float:
        """Before level `ab` is used: wait for its build if one is under way, then prepare the next levels; the
        seconds waited (the part of the level's setup the run did not overlap)."""
        if not self.levels:
            return 0.0
        ab = float(ab)
        with self.lock:
            future = self.pending.pop(ab, None)
        waited = time.perf_counter()
        if future is not None:
            future.exception()  # waits; an error is not raised here: the caller builds the level itself
        waited = time.perf_counter() - waited
        try:
            i = self.levels.index(ab, self.cursor)
        except ValueError:  # a level outside the run's plan (a direct call): nothing to prepare after it
            return waited
        self.cursor = i
        self._submit_after(i)
        return waited

    def _submit_after(self, i: int) -> None:
        upcoming = list(dict.fromkeys(ab for ab in self.levels[i + 1:] if ab != self.levels[i]))[:self.depth]
        with self.lock:
            for ab in upcoming:
                if ab not in self.pending:
                    self.pool = self.pool or ThreadPoolExecutor(1, thread_name_prefix="studio-levels-ahead")
                    self.pending[ab] = self.pool.submit(self._build, ab)

    def _build(self, ab: float) -> None:
        if self.stream is None:
            self.build(ab)
            return
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self.ready_event)
            made = self.build(ab)
        for t in tensors_in(made):  # freed later, their memory waits for the run's stream before it is reused
            t.record_stream(self.run_stream)
        self.stream.synchronize()  # the level is complete before the run may use it (this thread waits, not the run)
