"""Column plans: one 0/1 mask [D, D] arranged for speed, shared by the torch and the Triton tiles.

All-ones columns share one softmax (the `optimal` denoiser's); the other columns are cut into tiles of G
columns of one channel and a compact patch of pixels, each reading only the union of its columns' inputs.
Per channel a tile may instead start from that channel's full distance and subtract the inputs its columns
skip, whichever reads fewer inputs: a mid-noise mask holds nearly all of its own channel and a blob of the
others. Work per tile is then B·N·|support|·G instead of B·N·D·G. The torch tiles use G = 8 (CPU, and GPU
without Triton; they run GROUP columns at a time), the Triton tiles G = TRITON_CONFIG["tile"].
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field

import torch

from studio.denoisers.kernels import use_triton

TILE = 8
# Tile width G, launch shape (support coordinates per MMA step, training points per block, warps,
# pipeline stages, queries x columns per MMA) and training points per slice, measured best on an H100
# (CIFAR-shaped photo patches, N = 50,000). STUDIO_TRITON_CONFIG (JSON) overrides entries, for other GPUs.
TRITON_CONFIG = {"tile": 16, "BK": 64, "BI": 128, "warps": 8, "stages": 2, "cols": 128, "split_rows": 1024}
TRITON_CONFIG.update(json.loads(os.environ.get("STUDIO_TRITON_CONFIG", "{}")))

@dataclass
class ColumnPlan:
    """One mask [D, D] arranged as dense columns plus tiles of sparse columns (padding index = D)."""

    D: int
    channels: int                # C equal contiguous coordinate blocks (image channels) a tile may start from
    dense: torch.Tensor          # long [Dd]: all-ones columns
    cols: torch.Tensor           # long [n_tiles, G]: the columns of each tile, padded with D
    supports: list[torch.Tensor]  # long [S_t]: the inputs a tile reads
    blocks: list[torch.Tensor]    # float32 [S_t, G]: +1 an input the column reads, -1 one a based channel skips
    based: torch.Tensor          # bool [n_tiles, C]: channels whose full distance the tile starts from
    packed: dict[tuple, object] = field(default_factory=dict)  # kernel layouts by (kernel, launch shape), built on first use

    @property
    def n_tiles(self) -> int:
        return self.cols.shape[0]

    def work(self) -> float:
        """Fraction of the dense B·N·D·D multiply-adds this plan performs."""
        done = sum(s.numel() for s in self.supports) * self.cols.shape[1]
        return done / max(self.D * self.D, 1)

    def to(self, device: torch.device) -> "ColumnPlan":
        plan = ColumnPlan(self.D, self.channels, self.dense.to(device), self.cols.to(device),
                          [s.to(device) for s in self.supports], [b.to(device) for b in self.blocks],
                          self.based.to(device))
        if "columns" in self.packed:
            plan.packed["columns"] = self.packed["columns"].to(device)
        return plan


@functools.lru_cache(maxsize=32)
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
    """Arrange a bool mask [D, D] into a ColumnPlan (done once per mask; cheap next to the mask itself). The tiles'
    mask columns (bool [n_tiles, G, D], padding columns empty) stay in `packed["columns"]` for the torch tiles."""
    D = mask.shape[0]
    C = plan_channels(shape)
    span = D // C
    full = mask.all(0)
    order = tile_order(tuple(shape), tile).to(mask.device)
    sparse = order[~full[order]]
    n_tiles = -(-sparse.numel() // tile)
    cols = torch.full((n_tiles * tile,), D, dtype=torch.long, device=mask.device)
    cols[:sparse.numel()] = sparse
    cols = cols.reshape(n_tiles, tile)
    real = cols < D
    # column-major: each tile column's inputs are one contiguous row (a copy of rows of mask.T)
    columns = mask.T.contiguous().index_select(0, cols.reshape(-1).clamp(max=D - 1)).view(n_tiles, tile, D)
    columns &= real[:, :, None]
    readers = columns.sum(1, dtype=torch.int32)  # [n_tiles, D]: real columns reading each input
    read_rows = (readers > 0).view(n_tiles, C, span)
    skip_rows = (readers < real.sum(1, keepdim=True, dtype=torch.int32)).view(n_tiles, C, span)
    based = skip_rows.sum(2) < read_rows.sum(2)  # [n_tiles, C]: fewer inputs to subtract than to add
    used = torch.where(based[:, :, None], skip_rows, read_rows).view(n_tiles, D)
    tile_of, rows = used.nonzero(as_tuple=True)
    picked = columns[tile_of, :, rows].float()  # [R, G]
    # a based channel's row reads -1 where a real column skips the input: picked - real
    based_row = based[tile_of, rows // span].float()
    block_rows = picked.sub_(real.float()[tile_of].mul_(based_row[:, None]))
    counts = used.sum(1).tolist()
    plan = ColumnPlan(D, C, full.nonzero().squeeze(1), cols, list(rows.split(counts)),
                      list(block_rows.split(counts)), based.contiguous())
    plan.packed["columns"] = columns
    return plan


def padded_supports(plan: ColumnPlan, BK: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every tile's support rows (long [R]) and signed mask rows (float32 [R, G]) laid end to end, each tile starting
    at a multiple of BK, the gaps filled with the padding index D and zero rows; and the R-offsets of the tiles
    (n_tiles + 1 host ints). Whole-tensor scatters on `device`: no copy per tile."""
    G = plan.cols.shape[1]
    if not plan.supports:  # an all-ones mask: no tiles
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, G, device=device), [0]
    counts = [r.numel() for r in plan.supports]  # host ints: no synchronisation
    ptr = [0]
    for c in counts:
        ptr.append(ptr[-1] + c + (-c % BK))
    rows = torch.cat(plan.supports).to(device)                      # long [Σ counts]
    block = torch.cat(plan.blocks).to(device, torch.float32)        # [Σ counts, G]
    tile = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                   torch.tensor(counts, device=device), output_size=rows.numel())
    starts = torch.tensor(ptr[:-1], device=device)                  # [n_tiles] padded start of each tile
    firsts = torch.tensor([0] + counts, device=device).cumsum(0)[:-1]  # [n_tiles] unpadded start
    dest = starts[tile] + torch.arange(rows.numel(), device=device) - firsts[tile]  # [Σ counts]
    kidx = torch.full((ptr[-1],), plan.D, dtype=torch.long, device=device)
    kidx[dest] = rows
    blk = torch.zeros(ptr[-1], G, dtype=torch.float32, device=device)
    blk[dest] = block
    return kidx, blk, ptr


def plan_for(mask: torch.Tensor, shape: tuple[int, ...], device: torch.device, kernel: str = "auto") -> ColumnPlan:
    """The plan in the tile width of the kernel that will run, built on `device` (the same plan wherever it is
    built: the steps are exact integer and boolean work)."""
    triton = use_triton(device, kernel)
    plan = build_plan(mask.to(device), shape, TRITON_CONFIG["tile"] if triton else TILE)
    if triton:
        del plan.packed["columns"]  # only the torch tiles read them
    return plan
