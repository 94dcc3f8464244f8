"""Exact per-coordinate softmax over all N training points under a 0/1 mask (pca_locality, LS).

For output coordinate m: x̂0[m] = Σ_i softmax_i(-Σ_n M[n, m] (x[n] - s x_i[n])² / (2(1-ā)τ)) x_i[m].
Squared differences are formed directly in fp32 (no expansion, so no cancellation at low noise) and
summed with the 0/1 mask; chunks of training points merge through an exact online log-sum-exp.

A `ColumnPlan` arranges one mask for speed: all-ones columns share one softmax (the `optimal`
denoiser's); the other columns are cut into tiles of G columns of one channel and a compact patch of
pixels, each reading only the union of its columns' inputs. Per channel a tile may instead start from
that channel's full distance and subtract the inputs its columns skip, whichever reads fewer inputs:
a mid-noise mask holds nearly all of its own channel and a blob of the others. Work per tile is then
B·N·|support|·G instead of B·N·D·G. The same plan feeds the torch path (CPU, and GPU without Triton;
G = 64) and the Triton kernel (studio.denoisers.masked_triton, G = 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from studio.denoisers.budget import rows_that_fit
from studio.denoisers.softmax import DataBank, posterior_mean

TILE = 64
KERNELS = ("auto", "torch", "triton")


@dataclass
class ColumnPlan:
    """One mask [D, D] arranged as dense columns plus tiles of sparse columns (padding index = D)."""

    D: int
    channels: int                # K equal contiguous coordinate blocks (image channels) a tile may start from
    dense: torch.Tensor          # long [Dd]: all-ones columns
    cols: torch.Tensor           # long [T, G]: the columns of each tile, padded with D
    supports: list[torch.Tensor]  # long [S_t]: the inputs a tile reads
    blocks: list[torch.Tensor]    # float32 [S_t, G]: +1 an input the column reads, -1 one a based channel skips
    based: torch.Tensor          # bool [T, K]: channels whose full distance the tile starts from
    packed: dict[Any, Any] = field(default_factory=dict)  # per-kernel device layouts, built on first use

    @property
    def n_tiles(self) -> int:
        return self.cols.shape[0]

    def work(self) -> float:
        """Fraction of the dense B·N·D·D multiply-adds this plan performs."""
        done = sum(s.numel() for s in self.supports) * self.cols.shape[1]
        return done / max(self.D * self.D, 1)

    def to(self, device: torch.device) -> "ColumnPlan":
        return ColumnPlan(self.D, self.channels, self.dense.to(device), self.cols.to(device),
                          [s.to(device) for s in self.supports], [b.to(device) for b in self.blocks],
                          self.based.to(device))


def tile_order(shape: tuple[int, ...], tile: int = TILE) -> torch.Tensor:
    """Coordinates ordered channel by channel, then by patches of h x w = tile pixels, row-major over
    patches, so `tile` consecutive coordinates are one channel of a compact patch and their masks overlap."""
    if len(shape) != 3:
        return torch.arange(math.prod(shape))
    C, H, W = shape
    h = 2 ** ((max(tile, 1).bit_length() - 1) // 2)
    w = max(1, tile // h)
    c, y, x = torch.meshgrid(torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij")
    patch = (y // h) * (-(-W // w)) + x // w
    key = (c * (-(-H // h) * -(-W // w)) + patch) * (h * w) + (y % h) * w + x % w
    return key.reshape(-1).argsort()


def plan_channels(shape: tuple[int, ...]) -> int:
    """Image channels (equal contiguous blocks of coordinates); 1 for any other shape."""
    return shape[0] if len(shape) == 3 else 1


def build_plan(mask: torch.Tensor, shape: tuple[int, ...], tile: int = TILE) -> ColumnPlan:
    """Arrange a bool mask [D, D] into a ColumnPlan (done once per mask; cheap next to the mask itself)."""
    D = mask.shape[0]
    K = plan_channels(shape)
    span = D // K
    full = mask.all(0)
    order = tile_order(shape, tile)
    sparse = order[~full[order]]
    n_tiles = -(-sparse.numel() // tile)
    cols = torch.full((n_tiles * tile,), D, dtype=torch.long)
    cols[:sparse.numel()] = sparse
    cols = cols.reshape(n_tiles, tile)
    padded = torch.cat([mask, torch.zeros(D, 1, dtype=torch.bool)], 1)
    real = cols < D
    sub = padded[:, cols]  # [input, tile, column]
    reads = sub.reshape(K, span, n_tiles, tile)
    read_rows = reads.any(3)
    skip_rows = (~reads & real).any(3)
    based = skip_rows.sum(1) < read_rows.sum(1)  # [K, T]: fewer inputs to subtract than to add
    used = torch.where(based[:, None, :], skip_rows, read_rows).permute(2, 0, 1).reshape(n_tiles, D)
    tile_of, rows = used.nonzero(as_tuple=True)
    picked = sub[rows, tile_of]
    block_rows = torch.where(based[rows // span, tile_of][:, None], -(~picked & real[tile_of]).float(), picked.float())
    counts = used.sum(1).tolist()
    return ColumnPlan(D, K, full.nonzero().squeeze(1), cols, list(rows.split(counts)),
                      list(block_rows.split(counts)), based.T.contiguous())


def shifted_exp(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """exp(logits - top), with the difference floored at -87: below it fp32 exp leaves the normal range
    (weights < 2e-38, irrelevant next to the 1 of the maximum) and CPUs take a slow path."""
    return torch.exp((logits - top).clamp_min_(-87.0))


class ColumnSoftmax:
    """Running max, denominator and numerator per (sample, column): an exact online softmax over chunks."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.m = torch.full(shape, -torch.inf, device=device)
        self.den = torch.zeros(shape, device=device)
        self.num = torch.zeros(shape, device=device)

    def add(self, t: int, logits: torch.Tensor, values: torch.Tensor) -> None:
        """Fold in group t: logits [B, G, n] of n chunk points whose coordinates are values [G, n]."""
        m_new = torch.maximum(self.m[t], logits.amax(2))
        scale = torch.exp(self.m[t] - m_new)
        p = shifted_exp(logits, m_new[:, :, None])
        self.den[t] = self.den[t] * scale + p.sum(2)
        self.num[t] = self.num[t] * scale + (p * values).sum(2)
        self.m[t] = m_new

    def mean(self) -> torch.Tensor:
        return self.num / self.den


def plan_for(mask: torch.Tensor, shape: tuple[int, ...], device: torch.device, kernel: str = "auto") -> ColumnPlan:
    """The plan in the tile width of the kernel that will run, on `device`."""
    if _use_triton(device, kernel):
        from studio.denoisers.masked_triton import CONFIG

        return build_plan(mask, shape, CONFIG["tile"]).to(device)
    return build_plan(mask, shape, TILE).to(device)


def masked_posterior_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float = 1.0,
    chunk: int | None = None, kernel: str = "auto",
) -> torch.Tensor:
    """x̂0 [B, D] for queries x [B, D] (fp32, on the bank's device) under the plan's mask."""
    B, D = x.shape
    out = torch.empty_like(x)
    if plan.dense.numel():
        out[:, plan.dense] = posterior_mean(x, bank, ab, temperature, chunk, k=1).mean[:, plan.dense]
    if not plan.n_tiles:
        return out
    if _use_triton(x.device, kernel):
        from studio.denoisers.masked_triton import tiles_posterior_mean

        means = tiles_posterior_mean(x, bank, plan, ab, temperature)
    else:
        means = _tiles_torch(x, bank, plan, ab, temperature, chunk)
    real = plan.cols < D
    out[:, plan.cols[real]] = means[:, real]
    return out


def _use_triton(device: torch.device, kernel: str) -> bool:
    if kernel not in KERNELS:
        raise ValueError(f"denoiser.kernel: {kernel!r} is not allowed; choose one of: {', '.join(KERNELS)}")
    if kernel == "torch" or device.type != "cuda":
        if kernel == "triton":
            raise ValueError("denoiser.kernel: triton needs a CUDA device; choose auto or torch")
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        if kernel == "triton":
            raise ValueError("denoiser.kernel: triton is not installed; choose auto or torch") from None
        return False
    return True


def _tiles_torch(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float, chunk: int | None
) -> torch.Tensor:
    """Per-tile softmax means [B, T, G] with plain torch ops, chunked over the training points.

    Each chunk is transposed once ([D, n]) so a tile gathers whole rows of its support and forms only
    the B x |support| x n squared differences it needs; a tile that starts from channels' full distances
    adds them, computed in float64 (their per-query constants dropped)."""
    B, D = x.shape
    T, G = plan.cols.shape
    K = plan.channels
    s = math.sqrt(ab)
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    widest = max((blk.shape[0] for blk in plan.blocks), default=0)
    per_row = 4 * (B * (widest + 4 * G) + 2 * D)  # differences, distances and softmax temporaries, chunk copy
    step = rows_that_fit(per_row, 0, x.device, "denoiser: masked softmax chunk", chunk or bank.n)
    state = ColumnSoftmax((T, B, G), x.device)
    blocks_t = [blk.T.contiguous() for blk in plan.blocks]
    x64 = x.double().reshape(B, K, D // K)
    for lo in range(0, bank.n, step):
        xc = bank.x[lo:lo + step]
        cols_first = xc.T.contiguous()
        if bool(plan.based.any()):
            sq = bank.channel_sq_norms(K)[:, None, lo:lo + step].double()
            base = ab * sq - 2 * s * torch.einsum("bkd,nkd->kbn", x64, xc.double().reshape(-1, K, D // K))
        for t in range(T):
            rows = plan.supports[t]
            diff = (x[:, rows, None] - s * cols_first[rows][None]).square_()
            dist = blocks_t[t] @ diff
            if plan.based[t].any():
                dist = (base[plan.based[t]].sum(0)[:, None, :] + dist.double()).float()
            state.add(t, dist.mul_(-inv), cols_first[plan.cols[t].clamp(max=D - 1)])
    return state.mean().permute(1, 0, 2)
