"""Noise schedules: betas and ā_t = prod_{s<=t} (1 - β_s), in float64, matching diffusers' definitions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")


def make_betas(name: str, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_0..β_{T-1} in float64. `cosine` is Nichol & Dhariwal (2021), s=0.008, β capped at 0.999."""
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if name == "cosine":
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    if name == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"schedule.name: unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class Schedule:
    """A discrete schedule t = 0..T-1; `alpha_bar[t]` is float64."""

    name: str
    betas: torch.Tensor

    @classmethod
    def build(cls, name: str = "linear", T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        return cls(name, make_betas(name, T, beta_start, beta_end))

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, 0)

    @cached_property
    def _ab_list(self) -> list[float]:
        return self.alpha_bar.tolist()  # the loop asks three times a step: not a cumprod each time

    def ab(self, t: int) -> float:
        """ā_t as a Python float; t = -1 means "before any noise" (ā = 1), the end of sampling."""
        return 1.0 if t < 0 else self._ab_list[t]
