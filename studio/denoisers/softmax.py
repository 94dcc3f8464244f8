"""Exact softmax over all N training points, one GEMM per data chunk, with an online log-sum-exp.

Logits are ℓ_i = (2 s <x_t, x_i> - ā ||x_i||²) / (2 (1-ā) τ), i.e. -||x_t - s x_i||² / (2(1-ā)τ) up to a
per-row constant. Chunks are merged exactly (running max, rescaled numerator and denominator), so the
result does not depend on the chunk size, the batch size or the order of the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from studio.data.dataset import Dataset
from studio.denoisers.budget import gib, memory_budget, require
from studio.denoisers.cpu_threads import one_thread, run_parts
from studio.denoisers.online_softmax import EXP_FLOOR, OnlineSoftmax, RunningTopK

_CHUNK_BYTES = 256 * 2**20
COLS_FIRST_BYTES = 64 * 2**20  # the data are also kept coordinates-first up to this size
# On the CPU the two long products of a one-chunk softmax (and weighted_rows) are cut into this many fixed parts
# over N, run by single-threaded workers (cpu_threads), one per core of a 2-core machine; partial sums are added
# in order, so the result does not depend on the thread count.
CPU_PARTS = 2
_NORM_BLOCK_BYTES = 64 * 2**20
_LOG2E = 1.0 / math.log(2.0)
# the fp32 weight at the exp floor, as shifted_exp (exp) or _one_chunk (exp2 of the base-2 floor) gives it
_FLOOR_WEIGHT = max(float(torch.exp(torch.tensor(EXP_FLOOR))), float(torch.exp2(torch.tensor(EXP_FLOOR * _LOG2E))))


def _require_resident(N: int, D: int, device: torch.device) -> None:
    require(4 * N * D + 4 * N + _NORM_BLOCK_BYTES, device,
            f"the training data resident on {device.type} ({N:,} points x {D:,} coordinates as float32 = "
            f"{gib(4 * N * D)})")


def flat_on(dataset: Dataset, device: torch.device | str) -> torch.Tensor:
    """The dataset's float32 data [N, D] for work on `device`: from 8-bit images the codes travel to a GPU and are
    decoded there (a quarter of the bytes, no host float copy; refused up front when they do not fit), else the
    float data as they are (the caller moves them)."""
    device = torch.device(device)
    if dataset.codes is None or device.type == "cpu":
        return dataset.flat()
    N, D = dataset.n, dataset.dim
    require(4 * N * D, device, f"dataset {dataset.name} decoded on {device.type} ({N:,} x {D:,} float32 = "
            f"{gib(4 * N * D)})")
    return dataset.codes.decode(f"dataset {dataset.name}", device).reshape(N, -1)  # [N, D]


@dataclass
class DataBank:
    """Training data resident on the device as one [N, D] fp32 tensor, with squared norms."""

    x: torch.Tensor
    sq_norms: torch.Tensor
    derived: dict[Any, torch.Tensor] = field(default_factory=dict)  # layouts computed once, by key

    @classmethod
    def from_flat(cls, x: torch.Tensor, device: torch.device) -> "DataBank":
        """The data [N, D] as fp32 on `device` with their squared norms; refused up front (a ValueError naming the
        size) when they do not fit the device's memory budget."""
        device = torch.device(device)
        if device.type != "cpu":  # on the CPU the float32 data are already in memory: no copy is made
            _require_resident(*x.shape, device)
        x = x.to(device=device, dtype=torch.float32).contiguous()
        return cls(x, block_sq_norms(x, 1)[0])

    @classmethod
    def from_dataset(cls, dataset: Dataset, device: torch.device | str) -> "DataBank":
        """A dataset's data as a bank on `device`: data from 8-bit images go to a GPU as their codes and are decoded
        there (a quarter of the bytes to move, no host float copy); the same values as from_flat(dataset.flat())."""
        device = torch.device(device)
        if dataset.codes is None or device.type == "cpu":
            return cls.from_flat(dataset.flat(), device)
        _require_resident(dataset.n, dataset.dim, device)
        x = flat_on(dataset, device)
        return cls(x, block_sq_norms(x, 1)[0])

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def derive(self, key: Any, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor computed from the data once and kept beside it (norms per channel, kernel layouts)."""
        if key not in self.derived:
            self.derived[key] = make()
        return self.derived[key]

    def channel_sq_norms(self, channels: int) -> torch.Tensor:
        """[K, N]: ||x_i,k||² over each of K equal contiguous blocks of coordinates."""
        return self.derive(("channel_sq", channels), lambda: block_sq_norms(self.x, channels))


def cols_first(bank: DataBank) -> torch.Tensor | None:
    """The data coordinates-first [D, N] (faster GEMMs on the CPU), kept beside them when at most COLS_FIRST_BYTES;
    None above that."""
    N, D = bank.x.shape
    if 4 * N * D > min(COLS_FIRST_BYTES, memory_budget(bank.x.device) // 8):
        return None
    return bank.derive("cols-first", lambda: bank.x.T.contiguous())


def block_sq_norms(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """[K, N] fp32: Σ x² over each of K equal contiguous blocks of the coordinates of x [N, D], summed in float64
    a few thousand rows at a time (never a float64 copy of all the data)."""
    N, D = x.shape
    rows = max(1, _NORM_BLOCK_BYTES // (8 * D))
    out = torch.empty(blocks, N, dtype=torch.float32, device=x.device)
    for lo in range(0, N, rows):
        part = x[lo:lo + rows].reshape(-1, blocks, D // blocks).double()  # [rows, K, D/K] float64
        out[:, lo:lo + rows] = (part**2).sum(2).T.float()
    return out


@dataclass
class Posterior:
    """Posterior mean plus the top-k weights/indices and the effective number of points 1/Σw²."""

    mean: torch.Tensor
    top_w: torch.Tensor
    top_idx: torch.Tensor
    ess: torch.Tensor


def auto_chunk(batch: int, n: int, chunk: int | None) -> int:
    """Rows per chunk: the caller's choice, else what keeps the [B, chunk] temporaries under budget."""
    if chunk:
        return max(1, min(chunk, n))
    return max(1, min(n, _CHUNK_BYTES // (12 * max(batch, 1))))


def scaled_scores(x: torch.Tensor, bank: DataBank, lo: int, hi: int, s: float, ab: float) -> torch.Tensor:
    """2 s <x, x_i> - ā ||x_i||² for the rows lo:hi (larger is closer)."""
    return torch.addmm(bank.sq_norms[lo:hi].unsqueeze(0), x, bank.x[lo:hi].T, beta=-ab, alpha=2 * s)


def posterior_mean(
    x: torch.Tensor, bank: DataBank, ab: float, temperature: float = 1.0, chunk: int | None = None, k: int = 8
) -> Posterior:
    """Σ_i softmax_i(ℓ) x_i over all N points for each row of x [B, D]."""
    if not isinstance(bank, DataBank):  # 8-bit codes (byte_bank.ByteBank) bring their own kernels
        return bank.posterior_mean(x, ab, temperature, chunk, k)
    B, D = x.shape
    s = ab**0.5
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    step = auto_chunk(B, bank.n, chunk)
    if step >= bank.n:  # GPU too: measured on an H200 (0.68 ms/step at N=50,000 against 0.74 for the loop)
        if x.device.type != "cpu":
            return _one_chunk(x, bank, s, ab, inv, min(k, bank.n), 1)
        with one_thread() as threads:
            return _one_chunk(x, bank, s, ab, inv, min(k, bank.n), threads)
    acc = OnlineSoftmax((B,), (D,), x.device, squares=True)
    top = RunningTopK(B, min(k, bank.n), x.device)
    for lo in range(0, bank.n, step):
        hi = min(lo + step, bank.n)
        logits = scaled_scores(x, bank, lo, hi, s, ab) * inv  # [B, n]
        acc.add(logits, lambda w: weighted_rows(w, bank.x[lo:hi]))
        top.add(logits, lo)
    lse = acc.log_normaliser()
    return Posterior(acc.mean(), torch.exp(top.values - lse[:, None]), top.index, acc.effective_count())


def _one_chunk(x: torch.Tensor, bank: DataBank, s: float, ab: float, inv: float, k: int, threads: int) -> Posterior:
    """posterior_mean when all N points make one chunk: the same exact softmax with no merging, in base 2 (exp2
    is the fast exp); the top-k logits give the maximum. On the CPU the products run as CPU_PARTS parts over N
    on up to `threads` single-threaded workers."""
    B, N = x.shape[0], bank.n
    inv2 = inv * _LOG2E
    xt = cols_first(bank) if x.device.type == "cpu" else None
    keys = bank.x.T if xt is None else xt  # [D, N]
    logits = torch.empty(B, N, device=x.device)

    def part(cut: tuple[int, int]) -> None:
        lo, hi = cut
        torch.addmm(bank.sq_norms[lo:hi].unsqueeze(0), x, keys[:, lo:hi], beta=-ab * inv2, alpha=2 * s * inv2,
                    out=logits[:, lo:hi])

    run_parts(part, even_cuts(N, CPU_PARTS if x.device.type == "cpu" else 1), threads)
    top, index = logits.topk(max(k, 1), dim=1)
    w = logits.sub_(top[:, :1]).clamp_min_(EXP_FLOOR * _LOG2E).exp2_()
    den = w.sum(1)
    mean = weighted_rows(w, bank.x, threads).div_(den[:, None])
    top_w = torch.exp2(top[:, :k] - top[:, :1]).div_(den[:, None])
    return Posterior(mean, top_w, index[:, :k], den * den / (w * w).sum(1))


def even_cuts(n: int, parts: int) -> list[tuple[int, int]]:
    """(lo, hi) of `parts` near-equal consecutive slices of range(n)."""
    step = max(1, -(-n // parts))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def weighted_rows(w: torch.Tensor, rows: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """Σ_i w_i x_i [B, D] for weights w [B, n] and rows x [n, D]. On the CPU the rows whose weight is at the exp
    floor for every query are skipped when that leaves under a third of them: their share of the sum is below
    n · 2e-38 of the maximum weight's, nothing in fp32. (On a GPU finding them would synchronise the host.)
    Otherwise on the CPU: CPU_PARTS products over slices of the rows, on up to `threads` workers, added in order."""
    if w.device.type != "cpu":
        return w @ rows
    live = (w > _FLOOR_WEIGHT).any(0).nonzero().squeeze(1)  # long [n_live]
    if 3 * live.numel() < w.shape[1]:
        return w[:, live] @ rows[live]  # [B, n_live] @ [n_live, D]
    parts = run_parts(lambda cut: w[:, cut[0]:cut[1]] @ rows[cut[0]:cut[1]], even_cuts(w.shape[1], CPU_PARTS), threads)
    total = parts[0]
    for p in parts[1:]:
        total.add_(p)
    return total


def nearest_rows(x: torch.Tensor, bank: DataBank, ab: float, chunk: int | None = None, k: int = 8):
    """Indices and squared distances ||x - s x_i||² of the k closest rows, best first."""
    if not isinstance(bank, DataBank):  # 8-bit codes (byte_bank.ByteBank)
        return bank.nearest_rows(x, ab, chunk, k)
    B = x.shape[0]
    s = ab**0.5
    step = auto_chunk(B, bank.n, chunk)
    top = RunningTopK(B, min(k, bank.n), x.device)
    for lo in range(0, bank.n, step):
        top.add(scaled_scores(x, bank, lo, min(lo + step, bank.n), s, ab), lo)
    dist = ((x.unsqueeze(1) - s * bank.x[top.index]) ** 2).sum(-1)
    return top.index, dist
