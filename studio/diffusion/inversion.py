"""Deterministic DDIM (η = 0) inversion x0 -> x_T and reconstruction x_T -> x0 (Song et al. 2021, sec. 4.3).

Both walk the sampling timesteps t_0 > ... > t_{K-1} (as `spacing.timesteps` returns them), one way or the
other. A move from noise level ā to ā' with noise estimate ε̂ is the DDIM update
    x' = sqrt(ā') (x - sqrt(1-ā) ε̂) / sqrt(ā) + sqrt(1-ā') ε̂.
Reconstruction takes ε̂ at the level it leaves (exactly the `ddim` sampler with η = 0); inversion cannot
know ε̂ at the level it arrives at, so it takes the usual approximation ε̂ = ε(x, t') evaluated at the
level it goes to, which makes the round trip exact only as the steps shrink. `refine` fixed-point iterations
per step remove that approximation (Pan et al. 2023, "Effective real image editing with accelerated iterative
diffusion inversion", ICCV): the x' with ddim_move(x', ε(x', t'), ā', ā) = x is the fixed point of
g(x') = ddim_move(x, ε(x', t'), ā, ā'), since the two moves with one ε̂ undo each other. Plain iteration of g
contracts slowly along the data's low-variance directions (by about (1-ā')/(ā'λ + 1-ā') per iteration), so the
iterates are combined by Anderson mixing (Walker & Ni 2011), per sample; reconstruction then returns x0 up to
the iteration's convergence, whatever the step count.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

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


MEMORY = 5  # past iterates Anderson mixing combines


def fixed_point(g: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iterations: int,
                tol: float) -> torch.Tensor:
    """g(y) at the approximate fixed point y = g(y) reached from y = x in at most `iterations` more calls of g
    (Anderson mixing of the last MEMORY iterates per sample, history dropped when a mixed step does not shrink the
    residual; stops once |g(y) - y| <= tol |g(y)|)."""
    gy = g(x)
    residual = (gy - x).flatten(1).double()  # [B, D]
    d_res: list[torch.Tensor] = []
    d_g: list[torch.Tensor] = []
    for _ in range(iterations):
        size = float(residual.norm())
        if size <= tol * float(gy.norm()):
            break
        y = gy
        if d_res:
            F = torch.stack(d_res, 2)  # [B, D, m]
            gram = F.transpose(1, 2) @ F  # [B, m, m]
            ridge = 1e-12 * gram.diagonal(dim1=1, dim2=2).sum(1)[:, None, None] + 1e-300
            eye = torch.eye(len(d_res), dtype=F.dtype, device=F.device)
            gamma = torch.linalg.solve(gram + ridge * eye, F.transpose(1, 2) @ residual[..., None])  # [B, m, 1]
            mixed = gy.flatten(1).double() - (torch.stack(d_g, 2) @ gamma)[..., 0]  # [B, D]
            if bool(torch.isfinite(mixed).all()):
                y = mixed.to(gy.dtype).reshape(gy.shape)
        g_next = g(y)
        r_next = (g_next - y).flatten(1).double()
        if float(r_next.norm()) > size:  # the mixing did not help: start again from the plain iterate
            d_res.clear()
            d_g.clear()
        else:
            d_res.append(r_next - residual)
            d_g.append((g_next - gy).flatten(1).double())
            del d_res[:-MEMORY], d_g[:-MEMORY]
        gy, residual = g_next, r_next
    return gy


def _climb(denoiser: Denoiser, x: torch.Tensor, t: int, ab: float, ab_next: float, y: torch.Tensor) -> torch.Tensor:
    """The DDIM move from x at ā up to ā' with ε̂ taken at y, a guess of where the move lands (level t)."""
    return ddim_move(x, _eps(denoiser, y, t, ab_next), ab, ab_next)


def ddim_invert(denoiser: Denoiser, x0: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor,
                refine: int = 0, tol: float = 1e-6) -> torch.Tensor:
    """x_T at t_0 from clean x0, climbing t_{K-1}, ..., t_0 with ε̂ evaluated at the level being reached, each
    step then refined by up to `refine` fixed-point iterations (fewer once a step's residual is < tol relative)."""
    x, ab = x0, 1.0
    for t, ab_next in reversed(_levels(schedule, timesteps)):
        x, ab = fixed_point(functools.partial(_climb, denoiser, x, t, ab, ab_next), x, refine, tol), ab_next
    return x


def reconstruct(denoiser: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM sampling from x_T at t_0 down to clean data (the x̂0 of the last step)."""
    levels = _levels(schedule, timesteps)
    x = x_T
    for k, (t, ab) in enumerate(levels):
        ab_next = levels[k + 1][1] if k + 1 < len(levels) else 1.0
        x = ddim_move(x, _eps(denoiser, x, t, ab), ab, ab_next)
    return x
