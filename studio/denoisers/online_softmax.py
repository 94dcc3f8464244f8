"""The exact online softmax every softmax denoiser shares: softmax-weighted sums over candidates that arrive in
chunks, merged with a running maximum (log-sum-exp), so the result depends neither on the chunk size nor on
the order of the data; plus the running top-k of the logits."""

from __future__ import annotations

from typing import Callable

import torch

EXP_FLOOR = -87.0  # below it fp32 exp leaves the normal range (weights < 2e-38) and CPUs take a slow path


def shifted_exp(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """exp(logits - top), the difference floored at EXP_FLOOR: such weights are irrelevant next to the 1 of
    the maximum."""
    return torch.exp((logits - top).clamp_min_(EXP_FLOOR))


class OnlineSoftmax:
    """Per row: running max m, denominator Σ e^(ℓ-m), numerator Σ e^(ℓ-m) v and, optionally, Σ e^(2(ℓ-m))."""

    def __init__(self, rows: tuple[int, ...], value_shape: tuple[int, ...], device: torch.device,
                 squares: bool = False) -> None:
        self.m = torch.full(rows, -torch.inf, device=device)
        self.den = torch.zeros(rows, device=device)
        self.num = torch.zeros(rows + value_shape, device=device)
        self.sq = torch.zeros(rows, device=device) if squares else None
        self._value_dims = (1,) * len(value_shape)

    def add(self, logits: torch.Tensor, weigh: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Fold in one chunk: logits [*rows, n]; weigh(w) returns Σ_i w_i v_i [*rows, *value_shape]."""
        m_new = torch.maximum(self.m, logits.amax(-1))
        scale = torch.exp(self.m - m_new)
        w = shifted_exp(logits, m_new.unsqueeze(-1))  # [*rows, n]
        self.den = self.den * scale + w.sum(-1)
        if self.sq is not None:
            self.sq = self.sq * scale**2 + (w * w).sum(-1)
        self.num = self.num * scale.reshape(scale.shape + self._value_dims) + weigh(w)
        self.m = m_new

    def mean(self) -> torch.Tensor:
        """Σ_i softmax_i v_i [*rows, *value_shape]."""
        return self.num / self.den.reshape(self.den.shape + self._value_dims)

    def log_normaliser(self) -> torch.Tensor:
        """log Σ_i e^ℓ_i [*rows]."""
        return self.m + torch.log(self.den)

    def effective_count(self) -> torch.Tensor:
        """1 / Σ_i softmax_i² [*rows] (needs squares=True)."""
        return self.den**2 / self.sq


def merge_partials(m: torch.Tensor, den: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
    """The softmax mean from partial states (max, denominator, numerator) stacked along dim 0, each over its
    own slice of the candidates (the Triton kernel's slices)."""
    weights = torch.exp(m - m.amax(0))
    return (weights * num).sum(0) / (weights * den).sum(0)


class RunningTopK:
    """The k largest scores per row, and their candidate indices, over chunks of candidates."""

    def __init__(self, rows: int, k: int, device: torch.device) -> None:
        self.k = k
        self.values = torch.full((rows, 0), -torch.inf, device=device)
        self.index = torch.zeros((rows, 0), dtype=torch.long, device=device)

    def add(self, scores: torch.Tensor, first: int) -> None:
        """Fold in scores [rows, n] of candidates first .. first + n - 1."""
        rows, n = scores.shape
        idx = torch.arange(first, first + n, device=scores.device).expand(rows, -1)
        self.values, pos = torch.cat([self.values, scores], 1).topk(min(self.k, self.values.shape[1] + n), dim=1)
        self.index = torch.cat([self.index, idx], 1).gather(1, pos)
