"""Deterministic DDIM (η = 0) inversion x0 -> x_T and reconstruction x_T -> x0 (Song et al. 2021, sec. 4.3).

Both walk the sampling timesteps t_0 > ... > t_{K-1} (as `spacing.timesteps` returns them), one way or the
other. A move from noise level ā to ā' with noise estimate ε̂ is the DDIM update
    x' = sqrt(ā') (x - sqrt(1-ā) ε̂) / sqrt(ā) + sqrt(1-ā') ε̂.
Reconstruction takes ε̂ at the level it leaves (exactly the `ddim` sampler with η = 0); inversion cannot
know ε̂ at the level it arrives at, so it takes the usual approximation ε̂ = ε(x, t') evaluated at the
level it goes to, which makes the round trip exact only as the steps shrink.
"""

from __future__ import annotations

import math

import torch

from studio.denoisers.base import Denoiser
from studio.diffusion.samplers import ddim_step, eps_from_x0
from studio.diffusion.schedules import Schedule


def ddim_move(x: torch.Tensor, eps: torch.Tensor, ab: float, ab_next: float) -> torch.Tensor:
    """The η = 0 DDIM update between any two noise levels (ā = 1 means clean data)."""
    return ddim_step((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab), eps, ab_next)


def _eps(denoiser: Denoiser, x: torch.Tensor, t: int, ab: float) -> torch.Tensor:
    return eps_from_x0(x, denoiser.denoise(x, t, ab).x0.to(x.dtype), ab)


def _levels(schedule: Schedule, timesteps: torch.Tensor) -> list[tuple[int, float]]:
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError("timesteps: expected strictly decreasing sampling timesteps t_0 > ... > t_{K-1}")
    if ts and not 0 <= ts[-1] <= ts[0] < schedule.T:
        raise ValueError(f"timesteps: must lie in [0, {schedule.T - 1}]")
    return [(t, schedule.ab(t)) for t in ts]


def ddim_invert(denoiser: Denoiser, x0: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor) -> torch.Tensor:
    """x_T at t_0 from clean x0, climbing t_{K-1}, ..., t_0 with ε̂ evaluated at the level being reached."""
    x, ab = x0, 1.0
    for t, ab_next in reversed(_levels(schedule, timesteps)):
        x = ddim_move(x, _eps(denoiser, x, t, ab_next), ab, ab_next)
        ab = ab_next
    return x


def reconstruct(denoiser: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM sampling from x_T at t_0 down to clean data (the x̂0 of the last step)."""
    levels = _levels(schedule, timesteps)
    x = x_T
    for k, (t, ab) in enumerate(levels):
        ab_next = levels[k + 1][1] if k + 1 < len(levels) else 1.0
        x = ddim_move(x, _eps(denoiser, x, t, ab), ab, ab_next)
    return x
