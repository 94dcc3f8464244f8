"""What the Triton kernel of `triton_scan` reads, built with torch alone (so it is tested without Triton): the
training images as fp16 planes with a float64 summed-area table, and the block layout of a level."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from studio.denoisers.budget import require
from studio.denoisers.windows.geometry import shape_groups

FP16_ROOM = 2.0**14  # operands are scaled to at most this (headroom under fp16's 65504; lo halves stay normal)
EXACT_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 255.0, 256.0, 510.0, 512.0, 1020.0, 1024.0)
META = 20  # int32 fields per block (see LevelLayout)
_BLOCK_BYTES = 64 * 2**20  # images converted at once


@dataclass
class Training:
    """The training images as the kernel reads them: fp16 planes (exact integers λ x, or hi + lo halves of x rx)
    and the float64 summed-area table of Σ_c x²."""

    hi: torch.Tensor   # fp16 [N, C, H, W]
    lo: torch.Tensor   # fp16 [N, C, H, W] (a 1-element dummy when exact)
    sat: torch.Tensor  # float64 [N, H+1, W+1]
    scale: float       # hi (+ lo) = scale · x
    exact: bool

    @classmethod
    def build(cls, images: torch.Tensor) -> "Training":
        """Made a block of images at a time: no float64 (or second fp32) copy of the whole data."""
        x = images.float().contiguous()
        N, C, H, W = x.shape
        scale = exact_scale(x)
        exact = scale is not None
        require(2 * x.numel() * (1 if exact else 2) + 8 * N * (H + 1) * (W + 1), x.device,
                "denoiser.els: the Triton kernel's fp16 copies of the training data and their summed-area table")
        scale = scale if exact else pow2_scale(float(x.abs().max()))
        hi = torch.empty(x.shape, dtype=torch.float16, device=x.device)
        lo = torch.empty(x.shape if not exact else (1,), dtype=torch.float16, device=x.device)
        sat = torch.zeros(N, H + 1, W + 1, dtype=torch.float64, device=x.device)
        step = max(1, _BLOCK_BYTES // (8 * C * H * W))
        for a in range(0, N, step):
            part = x[a:a + step] * scale
            if exact:
                hi[a:a + step] = torch.round(part)
            else:
                hi[a:a + step] = part
                lo[a:a + step] = part - hi[a:a + step].float()
            sat[a:a + step, 1:, 1:] = (x[a:a + step].double() ** 2).sum(1).cumsum(1).cumsum(2)
        return cls(hi, lo, sat, float(scale), exact)


def exact_scale(x: torch.Tensor) -> float | None:
    """The first λ of EXACT_SCALES with λ x integers of at most 2048 in magnitude (exact in fp16) whose fp32
    quotient by λ gives back x exactly; None when there is none."""
    top = float(x.abs().max())
    step = max(1, _BLOCK_BYTES // (4 * x[0].numel()))
    for lam in EXACT_SCALES:
        if lam * top > 2048:
            break
        if all(bool((torch.round(x[a:a + step] * lam) / lam == x[a:a + step]).all()) for a in range(0, len(x), step)):
            return lam
    return None


def pow2_scale(top: float) -> float:
    return 2.0 ** math.floor(math.log2(FP16_ROOM / max(top, 1e-30)))


@dataclass
class LevelLayout:
    """The blocks of one (H, W, k, batch, block sizes): per block META int32 fields (0 shape, 1 first row, 2 rows,
    3 distinct offsets, 4 where they start in `offs`, 6-7 and 8-9 `divisor_magic` of the positions and of the
    positions per row, 10 the block's rows BQ (a launch per BQ), 12 kh, 13 kw, 14 positions per row, 15 positions,
    16 width, 17 padded width, 18 start of the shape's coordinate offsets in `doff`); per row the index of its offset
    among its block's; the blocks' (up, left) offsets; the window coordinate offsets per shape (c·H·W + dy·W +
    dx; the padding repeats 0, which zero query columns cancel); and the gathers that build the query rows from
    the batch and put the rows' results back (flat indices into [B, C, H, W])."""

    meta: torch.Tensor     # int32 [n_blocks, META] (field 5, the block's key slices, set per training set)
    roff: torch.Tensor     # int32 [R_pad]
    offs: torch.Tensor     # int32 [Σ distinct offsets per block, 2]
    doff: torch.Tensor     # int32 [Σ padded widths + BK]
    rowbase: torch.Tensor  # long [R_pad]: the row's window's first pixel (b, c=0, top, left); padding rows: 0
    rshape: torch.Tensor   # long [R_pad]: the row's shape
    rvalid: torch.Tensor   # bool [R_pad]: a real row (not padding)
    dtab: torch.Tensor     # long [shapes, WP]: window coordinate offsets per shape, -1 past the width
    dest: torch.Tensor     # long [B * H * W, C]: where the real rows' results go (channel c at dest + c·H·W)
    R_pad: int
    WP: int
    work: torch.Tensor     # float64 [n_blocks]: a block's product and pair work per training image
    device_meta: dict      # (N, programs) -> (meta with the slices filled in, on the device; most slices)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """[R_pad, WP] fp32: every row's clipped window of the batch x [B, C, H, W], zero past its width and in the
        padding rows (one gather)."""
        flat = torch.cat([x.reshape(-1), x.new_zeros(1)])  # the last element is the zero the padding reads
        cols = self.dtab[self.rshape]  # [R_pad, WP]
        at = torch.where((cols >= 0) & self.rvalid[:, None], self.rowbase[:, None] + cols, x.numel())
        return flat[at]

    def scatter(self, out: torch.Tensor, rows: torch.Tensor) -> None:
        """Write the real rows' results rows [R_pad, >= C] into out [B, C, H, W] (one scatter)."""
        C = self.dest.shape[1]
        out.view(-1)[self.dest] = rows[self.rvalid][:, :C]

    def meta_for(self, N: int, programs: int, BKEY: int) -> tuple[list[tuple[int, torch.Tensor]], int]:
        """Per block size BQ (one launch each), the meta of its blocks with each block's number of key slices (about
        `programs` per launch, in proportion to the blocks' work, at least one and at most one per BKEY keys); and
        the largest number of slices."""
        if (N, programs) not in self.device_meta:
            launches = []
            for bq in sorted(set(self.meta[:, 10].tolist())):
                mine = self.meta[:, 10] == bq
                meta, work = self.meta[mine].clone(), self.work[mine]
                most = (N * meta[:, 15].double() / BKEY).ceil()
                meta[:, 5] = torch.minimum((work * programs / work.sum()).round().clamp_min(1), most).to(torch.int32)
                launches.append((bq, meta))
            splits = max(int(meta[:, 5].max()) for _, meta in launches)
            self.device_meta[(N, programs)] = ([(bq, meta.to(self.roff.device)) for bq, meta in launches], splits)
        return self.device_meta[(N, programs)]


def level_layout(B: int, C: int, H: int, W: int, k: int, block_rows: int | tuple[int, ...], BK: int,
                 device: torch.device, pair_cost: float = 0.0, gather_cost: float = 0.0) -> LevelLayout:
    """The layout with `block_rows` rows per block for every shape (an int) or per shape (a tuple in
    `shape_groups` order)."""
    groups = shape_groups(H, W, k)
    sizes = block_rows if isinstance(block_rows, tuple) else (block_rows,) * len(groups)
    meta, roff, doff, offs, work, tables = [], [], [], [], [], []
    rowbase, rshape, rvalid, dest = [], [], [], []
    row, dpos, WP, CHW = 0, 0, BK, C * H * W
    for s, (g, BQ) in enumerate(zip(groups, sizes)):
        width = C * g.kh * g.kw
        wpad = -(-width // BK) * BK
        WP = max(WP, wpad)
        c, dy, dx = torch.meshgrid(torch.arange(C), torch.arange(g.kh), torch.arange(g.kw), indexing="ij")
        table = (c * H * W + dy * W + dx).reshape(-1)
        tables.append(table)
        doff.append(torch.cat([table, torch.zeros(wpad - width, dtype=torch.long)]))
        # rows of the shape ordered by (offset, b, p)
        off_rows = g.off.repeat(B)  # [B * P]: offset of row b * P + p
        perm = torch.sort(off_rows * (B * g.pixels) + torch.arange(B * g.pixels), stable=True).indices
        b, p = perm // g.pixels, perm % g.pixels
        pad = -(-B * g.pixels // BQ) * BQ - B * g.pixels
        rowbase += [b * CHW + g.tops[p] * W + g.lefts[p], torch.zeros(pad, dtype=torch.long)]
        rshape.append(torch.full((B * g.pixels + pad,), s, dtype=torch.long))
        rvalid += [torch.ones(B * g.pixels, dtype=torch.bool), torch.zeros(pad, dtype=torch.bool)]
        dest.append(b * CHW + g.ys[p] * W + g.xs[p])
        sorted_off = off_rows[perm]
        for r0 in range(0, B * g.pixels, BQ):
            rows_off = sorted_off[r0:r0 + BQ]
            present = sorted(set(rows_off.tolist()))
            meta.append([s, row + r0, len(rows_off), len(present), len(offs), 0,
                         *divisor_magic(g.positions(H, W)), *divisor_magic(W - g.kw + 1), BQ, 0,
                         g.kh, g.kw, W - g.kw + 1, g.positions(H, W), width, wpad, dpos, 0])
            offs += [g.offsets[o] for o in present]
            work.append(block_cost(BQ, g.positions(H, W), wpad, pair_cost, gather_cost))
            local = torch.tensor([present.index(o) for o in rows_off.tolist()] + [-1] * (BQ - len(rows_off)))
            roff.append(local)
        row += -(-B * g.pixels // BQ) * BQ
        dpos += wpad
    doff.append(torch.zeros(BK, dtype=torch.long))
    dtab = torch.full((len(groups), WP), -1, dtype=torch.long)
    for s, table in enumerate(tables):
        dtab[s, :table.numel()] = table
    dest_all = torch.cat(dest)[:, None] + torch.arange(C)[None, :] * (H * W)
    return LevelLayout(torch.tensor(meta, dtype=torch.int32),
                       torch.cat(roff).to(device, torch.int32), torch.tensor(offs, dtype=torch.int32, device=device),
                       torch.cat(doff).to(device, torch.int32), torch.cat(rowbase).to(device),
                       torch.cat(rshape).to(device), torch.cat(rvalid).to(device), dtab.to(device),
                       dest_all.to(device), row, WP, torch.tensor(work, dtype=torch.float64), {})


def divisor_magic(d: int) -> tuple[int, int]:
    """(m, s) with x // d == umulhi(2x, m) >> s (unsigned 32-bit) for every 0 <= x < 2^31, m as int32 bits: the
    kernel divides each key's index by the positions per image and per row in three integer instructions.

    s = ceil(log2 d) and m = ceil(2^(31+s) / d), so m d = 2^(31+s) + e with 0 <= e < d <= 2^s. For x = q d + r
    (0 <= r < d), x m / 2^(31+s) = q + (r + x e / 2^(31+s)) / d, and x e < 2^31 2^s: the fraction stays under
    (r + 1) / d <= 1, so the floor is q. m < 2^32: m = 2^31 when d = 2^s, else d >= 2^(s-1) + 1 and
    2^(31+s) / d <= 2^32 - 1; 2x < 2^32 and s <= 31 fit unsigned 32-bit too."""
    if not 1 <= d < 2**31:
        raise ValueError(f"denoiser.els: the Triton kernel divides by {d:,} window positions; it needs 1 to 2^31 - 1")
    s = (d - 1).bit_length()
    m = -(-(1 << (31 + s)) // d)
    return m - (m >> 31 << 32), s


BLOCK_ROWS = (16, 32, 64, 128)  # the kernel's choices of BQ


def block_cost(BQ: int, positions: int, wpad: int, pair_cost: float, gather_cost: float) -> float:
    """A block's work per training image in tensor-core multiply-adds: its pairs' two products and pair work, and
    the key windows it gathers (wpad coordinates per key, whatever BQ)."""
    return positions * (BQ * (2 * wpad + pair_cost) + gather_cost * wpad)


def pick_blocks(B: int, C: int, H: int, W: int, k: int, pair_cost: float,
                gather_cost: float) -> tuple[tuple[int, ...], int]:
    """(BQ per shape, BK): the coordinates per product step that pad the level's work least (the larger on near
    ties: fewer steps; 64 measured slower than 32 at equal padding), then per shape the rows per block that cost
    least: a large block gathers each key window for more rows, a small one pads a shape of few rows less."""
    groups = shape_groups(H, W, k)

    def shape_cost(g, BQ: int, BK: int) -> float:
        wpad = -(-C * g.kh * g.kw // BK) * BK
        return -(-B * g.pixels // BQ) * block_cost(BQ, g.positions(H, W), wpad, pair_cost, gather_cost)

    costs = {bk: sum(shape_cost(g, 64, bk) for g in groups) for bk in (16, 32)}
    BK = max(bk for bk, c in costs.items() if c <= 1.1 * min(costs.values()))
    return tuple(min(BLOCK_ROWS, key=lambda bq: shape_cost(g, bq, BK)) for g in groups), BK

