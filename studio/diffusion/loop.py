"""The sampling loop: a generator of per-step records, and a collector that stacks them into a Trajectory."""

from __future__ import annotations

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


def steps(
    denoiser: Denoiser,
    sampler: Sampler,
    noise: NoiseSource,
    clip_x0: bool = False,
    batch_size: int | None = None,
    x_T: torch.Tensor | None = None,
) -> Iterator[Step]:
    """Yield one Step per denoiser call. x_T defaults to the first draw of each sample's noise stream.
    Out of memory: retried once with quarter-size batches (kept for the rest of the run), then RunError.
    NaN/inf in x̂0 stops the run with a RunError naming the step and the denoiser."""
    sampler.start(noise.draw() if x_T is None else x_T.to(noise.device), noise.generators)
    K = len(sampler)
    for k in range(K):
        t0 = time.perf_counter()
        t, ab, x = sampler.point(k)
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
        if not torch.isfinite(out.x0).all():
            raise NonFiniteError(f"step {k + 1}/{K} (t={t}): denoiser {denoiser.name} produced NaN or inf in x̂0; "
                                 "the run was stopped (try another temperature, schedule or denoiser)")
        x0 = out.x0.clamp(-1, 1) if clip_x0 else out.x0
        last = k == K - 1
        if last:  # the final update draws no noise before the caller could cancel: do it now and hand it over
            sampler.advance(k, x0, noise.draw)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        yield Step(k, K, t, ab, x, x0, out.extras, out.shared, time.perf_counter() - t0,
                   final=sampler.x if last else None)
        if not last:
            sampler.advance(k, x0, noise.draw)


def collect(records: Iterator[Step], on_step: Callable[[Step], bool | None] | None = None) -> Trajectory:
    """Stack the records on the CPU; `on_step` returning False cancels (raises Cancelled)."""
    ts, abs_, xs, x0s, shared = [], [], [], [], []
    extras: dict[str, list[torch.Tensor]] = {}
    final = None
    for step in records:
        if step.final is not None:
            final = step.final.detach().float().cpu()
        ts.append(step.t)
        abs_.append(step.alpha_bar)
        xs.append(step.x_t.detach().float().cpu())
        x0s.append(step.x0.detach().float().cpu())
        shared.append(step.shared)
        for key, value in step.extras.items():
            extras.setdefault(key, []).append(value.detach().cpu())
        if on_step is not None and on_step(step) is False:
            raise Cancelled(len(ts))
    return Trajectory(
        timesteps=torch.tensor(ts, dtype=torch.int64),
        alpha_bar=torch.tensor(abs_, dtype=torch.float64),
        x_t=torch.stack(xs),
        x0=torch.stack(x0s),
        extras={k: torch.stack(v) for k, v in extras.items()},
        shared=shared,
        final=final,
    )
