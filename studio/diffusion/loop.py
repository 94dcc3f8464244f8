"""The sampling loop: a generator of per-step records, and a collector that stacks them into a Trajectory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from studio.denoisers.base import Denoised, Denoiser
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import Sampler


class RunError(ValueError):
    """A run that cannot go on, with a message fit for the page (no traceback needed)."""


class NonFiniteError(RunError):
    pass


class OutOfMemory(RunError):
    pass


class Cancelled(Exception):
    """Raised when a progress callback asks to stop; the partial trajectory is attached."""

    def __init__(self, steps_done: int) -> None:
        super().__init__(f"cancelled after {steps_done} steps")
        self.steps_done = steps_done


@dataclass
class Step:
    k: int
    K: int
    t: int
    alpha_bar: float
    x_t: torch.Tensor
    x0: torch.Tensor
    extras: dict[str, torch.Tensor]
    shared: dict[str, Any]
    seconds: float
    final: torch.Tensor | None = None  # last step only: the sampler's state after its last update (ā' = 1)


@dataclass
class Trajectory:
    """Everything a run recorded, on the CPU: x_t/x0 are [K, N, *shape]; extras are [K, N, ...]."""

    timesteps: torch.Tensor
    alpha_bar: torch.Tensor
    x_t: torch.Tensor
    x0: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    shared: list[dict[str, Any]] = field(default_factory=list)
    final: torch.Tensor | None = None  # [N, *shape] the sampler's state after its last update

    @property
    def samples(self) -> torch.Tensor:
        """The result of sampling: the sampler's final state after its last update (ā' = 1). For DDPM and DDIM it
        equals x̂0 of the last step; for the generalized sampler with γ ≠ 1 (and other samplers whose last update
        is not x̂0) it does not. Records without a final state (older run folders) fall back to the last x̂0."""
        return self.x0[-1] if self.final is None else self.final


def denoise_batched(denoiser: Denoiser, x: torch.Tensor, t: int, ab: float, batch_size: int | None) -> Denoised:
    """Call the denoiser on slices of at most `batch_size` samples and join the results."""
    if not batch_size or batch_size >= x.shape[0]:
        return denoiser.denoise(x, t, ab)
    parts = [denoiser.denoise(x[i:i + batch_size], t, ab) for i in range(0, x.shape[0], batch_size)]
    extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
    return Denoised(torch.cat([p.x0 for p in parts]), extras, parts[0].shared)


def _oom_types() -> tuple[type[BaseException], ...]:
    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else (torch.cuda.OutOfMemoryError,)


class StepClock:
    """Where a run's sampling time goes, without a host synchronisation per step: on a GPU, CUDA events around
    each denoiser call are read once at the end; on the CPU, the host clock (the work is synchronous there).
    `totals()` gives denoise_s (the denoiser's calls less their per-level setup), setup_s (what the denoiser
    reports in its `setup_s` counter: masks and plans of new noise levels), overhead_s (the rest of the loop:
    sampler updates, checks, launches) and loop_s (all of it)."""

    def __init__(self, device: torch.device, denoiser: Denoiser) -> None:
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.current_stream(device) if self.cuda else None  # looked up once, not per mark
        self.denoiser = denoiser
        self.setup0 = getattr(denoiser, "setup_s", 0.0)
        self.marks: list[tuple[Any, Any]] = []
        self.begin = self._mark()
        self.end: Any = None

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(self.stream)
            return event
        return time.perf_counter()

    def around(self) -> tuple[Any, Callable[[], None]]:
        start = self._mark()

        def done() -> None:
            self.marks.append((start, self._mark()))
        return start, done

    def stop(self) -> None:
        self.end = self._mark()

    def _seconds(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def totals(self) -> dict[str, float]:
        if self.end is None:
            self.stop()
        if self.cuda:
            self.end.synchronize()
        setup = getattr(self.denoiser, "setup_s", 0.0) - self.setup0
        calls = sum(self._seconds(a, b) for a, b in self.marks)
        total = self._seconds(self.begin, self.end)
        return {"loop_s": total, "setup_s": setup, "denoise_s": max(calls - setup, 0.0),
                "overhead_s": max(total - calls, 0.0)}


def steps(
    denoiser: Denoiser,
    sampler: Sampler,
    noise: NoiseSource,
    clip_x0: bool = False,
    batch_size: int | None = None,
    x_T: torch.Tensor | None = None,
    clock: dict[str, float] | None = None,
) -> Iterator[Step]:
    """Yield one Step per denoiser call. x_T defaults to the first draw of each sample's noise stream.
    Out of memory: retried once with quarter-size batches (kept for the rest of the run), then RunError.
    NaN/inf in x̂0 stops the run with a RunError naming the step and the denoiser: at once on the CPU; on a GPU
    the check stays on the device (no host synchronisation per step) and is read after the last step.
    The loop copies nothing to the host: the consumer copies what it shows or keeps. A `clock` dict is filled,
    when the run ends, with where the time went (StepClock.totals)."""
    sampler.start(noise.draw() if x_T is None else x_T.to(noise.device), noise.generators)
    K = len(sampler)
    denoiser.prepare(sampler.levels())
    timer = StepClock(noise.device, denoiser) if clock is not None else None
    totals: list[torch.Tensor] = []  # GPU runs: float64 Σ x̂0 of each step, on the device
    for k in range(K):
        t0 = time.perf_counter()
        t, ab, x = sampler.point(k)
        done = timer.around()[1] if timer is not None else None
        try:
            out = denoise_batched(denoiser, x, t, ab, batch_size)
        except _oom_types():
            if x.is_cuda:
                torch.cuda.empty_cache()
            batch_size = max(1, (batch_size or x.shape[0]) // 4)
            try:
                out = denoise_batched(denoiser, x, t, ab, batch_size)
            except _oom_types():
                raise OutOfMemory(
                    f"step {k + 1}/{K}: {denoiser.name} ran out of GPU memory even with batches of {batch_size}"
                    " samples; use fewer samples, a smaller dataset or the CPU"
                ) from None
        if done is not None:
            done()
        total = out.x0.sum(dtype=torch.float64)  # one reduction: not finite exactly when x̂0 holds NaN or inf
        if total.is_cuda:
            totals.append(total)
        elif not math.isfinite(total):
            raise _non_finite(denoiser, k, K, t)
        x0 = out.x0.clamp(-1, 1) if clip_x0 else out.x0
        last = k == K - 1
        if last:  # the final update draws no noise before the caller could cancel: do it now and hand it over
            sampler.advance(k, x0, noise.draw)
            if timer is not None:
                timer.stop()  # the loop's GPU work ends here; what follows waits for it
            if totals:
                bad = (~torch.stack(totals).isfinite()).nonzero()  # one host synchronisation, at the end
                if bad.numel():
                    k_bad = int(bad[0, 0])
                    raise _non_finite(denoiser, k_bad, K, sampler.level(k_bad)[0])
        yield Step(k, K, t, ab, x, x0, out.extras, out.shared, time.perf_counter() - t0,
                   final=sampler.x if last else None)
        if not last:
            sampler.advance(k, x0, noise.draw)
    if timer is not None:
        clock.update(timer.totals())


def _non_finite(denoiser: Denoiser, k: int, K: int, t: int) -> NonFiniteError:
    return NonFiniteError(f"step {k + 1}/{K} (t={t}): denoiser {denoiser.name} produced NaN or inf in x̂0; "
                          "the run was stopped (try another temperature, schedule or denoiser)")


DEVICE_KEEP_BYTES = 256 * 2**20  # a GPU trajectory of at most this size (and 1/64 of the GPU's memory) stays on
# the device until the run ends
PINNED_MAX_BYTES = 512 * 2**20  # a larger one is copied step by step through pinned memory up to this size


def _total_memory(device: torch.device) -> int:
    """The GPU's memory in bytes, from torch's cached device properties (asking the driver for the free memory
    takes ~0.2 ms, a step's worth of GPU work)."""
    return torch.cuda.get_device_properties(device).total_memory


class HostStack:
    """Per-step tensors stacked [K, *shape] and handed over on the CPU. From a GPU the steps' tensors are kept on
    the device while they are small (no work per step: one stack and one copy at the end; per-step copies cost
    the host more than a step of `optimal` costs the GPU); larger ones are copied step by step, through pinned
    memory without blocking the host (stream order keeps them correct). On the CPU each step is copied into one
    buffer. `ready()` waits for the copies once."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        self.dtype = dtype
        self.kept: list[torch.Tensor] | None = None  # device tensors of the steps so far
        self.buf: torch.Tensor | None = None         # [K, *shape] on the host, when copied step by step
        self.rows: tuple[torch.Tensor, ...] = ()     # its views [*shape], one per step, made once
        self.pinned = False

    def put(self, k: int, K: int, value: torch.Tensor) -> None:
        if value.requires_grad:
            value = value.detach()
        if self.kept is None and self.buf is None:
            size = K * value.numel() * value.element_size()
            if value.is_cuda and size <= min(DEVICE_KEEP_BYTES, _total_memory(value.device) // 64):
                self.kept = []
            else:
                self.pinned = value.is_cuda and size <= PINNED_MAX_BYTES  # larger runs copy blocking
                self.buf = torch.empty((K, *value.shape), dtype=self.dtype or value.dtype, pin_memory=self.pinned)
                self.rows = self.buf.unbind(0)
        if self.kept is not None:
            self.kept.append(value)
            return
        if value.dtype != self.buf.dtype:
            value = value.to(self.buf.dtype)  # on the value's device
        self.rows[k].copy_(value, non_blocking=self.pinned)

    @property
    def empty(self) -> bool:
        return self.kept is None and self.buf is None

    def ready(self, n: int) -> torch.Tensor:
        if self.kept is not None:
            return torch.stack(self.kept[:n]).to("cpu", self.dtype)
        if self.pinned:  # into ordinary memory: a kept run holds no page-locked memory; the pinned block goes
            torch.cuda.synchronize()  # back to torch's host allocator for the next run
            return self.buf[:n].clone()
        return self.buf[:n]


def collect(records: Iterator[Step], on_step: Callable[[Step], bool | None] | None = None) -> Trajectory:
    """Stack the records on the CPU; `on_step` returning False cancels (raises Cancelled). From a GPU nothing
    waits per step (HostStack); the host waits once, at the end."""
    ts, abs_, shared = [], [], []
    xs, x0s, last = HostStack(torch.float32), HostStack(torch.float32), HostStack(torch.float32)
    extras: dict[str, HostStack] = {}
    for step in records:
        i = len(ts)
        ts.append(step.t)
        abs_.append(step.alpha_bar)
        xs.put(i, step.K, step.x_t)
        x0s.put(i, step.K, step.x0)
        if step.final is not None:
            last.put(0, 1, step.final)
        shared.append(step.shared)
        for key, value in step.extras.items():
            extras.setdefault(key, HostStack()).put(i, step.K, value)
        if on_step is not None and on_step(step) is False:
            raise Cancelled(len(ts))
    n = len(ts)
    if not n:
        raise RunError("the sampler made no steps")
    return Trajectory(
        timesteps=torch.tensor(ts, dtype=torch.int64),
        alpha_bar=torch.tensor(abs_, dtype=torch.float64),
        x_t=xs.ready(n),
        x0=x0s.ready(n),
        extras={k: v.ready(n) for k, v in extras.items()},
        shared=shared,
        final=None if last.empty else last.ready(1)[0],
    )
