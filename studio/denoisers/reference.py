"""Naive float64 references, written straight from the formulas: the yardstick for tests and benchmarks."""

from __future__ import annotations

import torch

_ROWS = 2048


def sq_dists(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """||x_t - s x_i||² in float64 by explicit differences (row chunks keep memory bounded)."""
    x = x_t.reshape(x_t.shape[0], -1).double()
    d = data.reshape(data.shape[0], -1).double()
    parts = [((x[:, None, :] - ab**0.5 * d[None, lo:lo + _ROWS]) ** 2).sum(-1) for lo in range(0, len(d), _ROWS)]
    return torch.cat(parts, 1)


def nearest_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """x_{i*}, i* = argmin_i ||x_t - s x_i||²."""
    idx = sq_dists(x_t, data, ab).argmin(1)
    return data.double()[idx].reshape(x_t.shape)


def optimal_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, temperature: float = 1.0) -> torch.Tensor:
    """Σ_i w_i x_i with w ∝ exp(-||x_t - s x_i||² / (2(1-ā)τ)), all in float64."""
    w = torch.softmax(-sq_dists(x_t, data, ab) / (2 * (1 - ab) * temperature), dim=1)
    return (w @ data.reshape(data.shape[0], -1).double()).reshape(x_t.shape)


def wiener_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """μ + ā Σ (ā Σ + (1-ā) I)⁻¹ (x_t/s - μ) with the dense float64 covariance and a linear solve."""
    d = data.reshape(data.shape[0], -1).double()
    mu = d.mean(0)
    cov = (d - mu).T @ (d - mu) / d.shape[0]
    y = x_t.reshape(x_t.shape[0], -1).double() / ab**0.5 - mu
    a = ab * cov + (1 - ab) * torch.eye(cov.shape[0], dtype=torch.float64, device=cov.device)
    return (mu + (ab * cov @ torch.linalg.solve(a, y.T)).T).reshape(x_t.shape)
