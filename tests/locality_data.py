"""Tiny image sets with natural-image-like structure for the locality tests (helpers, no tests here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studio.cache import digest
from studio.data.dataset import Dataset


def smooth_images(n: int, shape: tuple[int, int, int], seed: int = 0, stationary: bool = False) -> torch.Tensor:
    """Blurred noise plus a per-image brightness, in [-1, 1]: pixels correlate strongly with their
    neighbours and weakly with all others, as in photographs. Unless `stationary`, the contrast grows
    from the top to the bottom row, so pixel variances differ."""
    C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, H, W, generator=g)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 3, 1)
    x = x + 0.5 * x.mean(1, keepdim=True) + 0.6 * torch.randn(n, 1, 1, 1, generator=g)
    if not stationary:
        x = x * torch.linspace(0.4, 1.2, H)[None, None, :, None]
    return (x / x.abs().max()).float()


def as_dataset(x: torch.Tensor, name: str = "t") -> Dataset:
    kind = "image" if x.dim() == 4 else "points"
    return Dataset(x=x.float(), name=name, kind=kind, fingerprint=digest(name, x))


def noisy(data: torch.Tensor, ab: float, b: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(data), (b,), generator=g)
    return ab**0.5 * data[pick] + (1 - ab) ** 0.5 * torch.randn(data[pick].shape, generator=g)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Worst per-sample relative L2 error."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())
