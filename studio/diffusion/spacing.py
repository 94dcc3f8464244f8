"""Timestep spacings of Lin et al. (arXiv 2305.08891, Table 2), as diffusers implements them."""

from __future__ import annotations

import numpy as np
import torch

SPACINGS = ("trailing", "leading", "linspace")


def timesteps(spacing: str, T: int, K: int) -> torch.Tensor:
    """K decreasing timesteps t_0 > ... > t_{K-1} in [0, T-1] (int64)."""
    if not 1 <= K <= T:
        raise ValueError(f"sampler.steps: {K} is out of range [1, {T}]")
    if spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / K)).astype(np.int64) - 1
    elif spacing == "leading":
        ts = (np.arange(0, K) * (T // K)).round()[::-1].astype(np.int64)
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, K).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"sampler.spacing: unknown spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    return torch.from_numpy(ts.copy())
