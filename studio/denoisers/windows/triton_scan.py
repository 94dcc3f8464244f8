"""ELS as one fused Triton kernel per noise level: an exact "flash attention" whose queries are the batch's
clipped windows and whose keys are the training windows of the same shape at every position, read straight
from the training images (nothing unfolded in memory).

A program takes a block of BQ query rows of one window shape and a slice of that shape's N·Q keys. Per block
of BKEY keys: the cross terms <q, w> on the tensor cores (fp16 operands, fp32 accumulation: the query as hi +
lo halves, the training pixels exact in fp16 when they are integers over a common scale λ, as 8-bit images are
(255 x) -- else as hi + lo halves too, a third product), the squared norm |w|² of each key from a float64
summed-area table of Σ_c x², the logits in base 2, then a running max, denominator and numerators (the training
pixel at the offset of the row's pixel, up to 4 offsets per shape) per row. The slices' partial states are
merged on the host (online_softmax.merge_partials).

Rows of one shape are ordered by offset, so most blocks hold one offset. Launch shape: ELS_TRITON_CONFIG
(tuned for H100/H200; STUDIO_ELS_TRITON_CONFIG, JSON, overrides entries). Checked at small sizes with
TRITON_INTERPRET=1 on the CPU (tests/test_locality_ls.py) and on CUDA against the float64 reference.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from studio.denoisers.online_softmax import merge_partials
from studio.denoisers.windows.geometry import query_windows, shape_groups
from studio.denoisers.windows.torch_scan import logit_scales

# BQ: query rows per program (None: the cheapest of 16/32/64/128 for the level's shapes); BKEY: keys per step;
# BK: window coordinates per product step (None: the cheapest of 16/32/64); programs_per_sm: the key axis of each
# block is split so that the level makes about this many programs per SM, heavier blocks in more slices;
# pair_cost: the exponential and the sums of one (query, key) pair, in tensor-core multiply-adds (H100: 16
# exp2/clk/SM against 2048 fp16 MACs/clk/SM); warps (None: 4 for tiles up to 64 x 128, else 8), stages.
ELS_TRITON_CONFIG = {"BQ": None, "BKEY": 128, "BK": None, "programs_per_sm": 6, "pair_cost": 280, "warps": None,
                     "stages": 2}
ELS_TRITON_CONFIG.update(json.loads(os.environ.get("STUDIO_ELS_TRITON_CONFIG", "{}")))
FP16_ROOM = 2.0**14  # queries are scaled to at most this (headroom under fp16's 65504; lo halves stay normal)
EXACT_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 255.0, 256.0, 510.0, 512.0, 1020.0, 1024.0)
META = 20  # int32 fields per block (see LevelLayout)
LN2 = math.log(2.0)


@triton.jit
def _els_kernel(
    qhi_ptr, qlo_ptr, meta_ptr, roff_ptr, offs_ptr, khi_ptr, klo_ptr, sat_ptr, x_ptr, doff_ptr,
    m_ptr, den_ptr, num_ptr,
    N, H, W, R_PAD, WP, a_scale, ns,
    C: tl.constexpr, CP: tl.constexpr, BQ: tl.constexpr, BKEY: tl.constexpr, BK: tl.constexpr,
    EXACT: tl.constexpr,
):
    blk = tl.program_id(0)
    split = tl.program_id(1)
    mb = meta_ptr + blk * 20
    row0 = tl.load(mb + 1)
    n_off = tl.load(mb + 3)
    ostart = tl.load(mb + 4)
    splits = tl.load(mb + 5)  # this block's share of the key axis: programs split >= splits have no keys
    kh = tl.load(mb + 12)
    kw = tl.load(mb + 13)
    qw = tl.load(mb + 14)
    npos = tl.load(mb + 15)
    wpad = tl.load(mb + 17)
    dstart = tl.load(mb + 18)
    HW = H * W
    CHW = C * HW
    rows = row0 + tl.arange(0, BQ)
    roff = tl.load(roff_ptr + rows)
    cols = tl.arange(0, CP)
    total = N * npos  # int32: the host checks that keys and pixels stay under 2^31
    per = tl.cdiv(tl.cdiv(total, splits), BKEY) * BKEY
    lo = split * per
    hi = tl.minimum(lo + per, total)
    m_run = tl.full((BQ,), float("-inf"), tl.float32)
    den = tl.zeros((BQ,), tl.float32)
    num = tl.zeros((BQ, CP), tl.float32)
    kk = tl.arange(0, BK)
    for j0 in range(lo, hi, BKEY):
        j = j0 + tl.arange(0, BKEY)
        jmask = j < hi
        j = tl.minimum(j, hi - 1)  # the tail reads the last key again; its logits are masked below
        n = j // npos
        pos = j - n * npos
        qy = pos // qw
        qx = pos - qy * qw
        base = n * CHW + qy * W + qx  # [BKEY]: the key window's first pixel
        acc = tl.zeros((BQ, BKEY), tl.float32)
        for k0 in range(0, wpad, BK):
            doff = tl.load(doff_ptr + dstart + k0 + kk)  # [BK]; padding points at the window's first pixel
            src = base[None, :] + doff[:, None]
            w_hi = tl.load(khi_ptr + src)  # [BK, BKEY] fp16
            q_at = rows[:, None] * WP + (k0 + kk)[None, :]
            a_hi = tl.load(qhi_ptr + q_at)  # [BQ, BK] fp16, zero in the padding columns
            a_lo = tl.load(qlo_ptr + q_at)
            acc = tl.dot(a_hi, w_hi, acc)
            acc = tl.dot(a_lo, w_hi, acc)
            if not EXACT:
                w_lo = tl.load(klo_ptr + src)
                acc = tl.dot(a_hi, w_lo, acc)
        # |w|² from the summed-area table [N, H+1, W+1] (float64)
        sat = sat_ptr + n * ((H + 1) * (W + 1))
        y0 = qy * (W + 1)
        y1 = (qy + kh) * (W + 1)
        s11 = tl.load(sat + y1 + qx + kw)
        s01 = tl.load(sat + y0 + qx + kw)
        s10 = tl.load(sat + y1 + qx)
        s00 = tl.load(sat + y0 + qx)
        sq = ((s11 - s01) - (s10 - s00)).to(tl.float32)
        logits = acc * a_scale - (sq * ns)[None, :]
        logits = tl.where(jmask[None, :], logits, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logits, 1))
        alpha = tl.exp2(m_run - m_new)
        p = tl.exp2(logits - m_new[:, None])
        den = den * alpha + tl.sum(p, 1)
        num = num * alpha[:, None]
        for o in range(0, n_off):
            up = tl.load(offs_ptr + 2 * (ostart + o))
            left = tl.load(offs_ptr + 2 * (ostart + o) + 1)
            mine = roff == o
            for c in tl.static_range(C):
                v = tl.load(x_ptr + base + c * HW + up * W + left)  # [BKEY] fp32
                part = tl.sum(p * v[None, :], 1)
                num += tl.where(mine[:, None] & (cols == c)[None, :], part[:, None], 0.0)
        m_run = m_new
    at = split * R_PAD + rows
    tl.store(m_ptr + at, m_run)
    tl.store(den_ptr + at, den)
    tl.store(num_ptr + at[:, None] * CP + cols[None, :], num)


@dataclass
class Training:
    """The training images as the kernel reads them: fp16 planes (exact integers λ x, or hi + lo halves of x rx),
    the float64 summed-area table of Σ_c x², and the fp32 images for the averaged pixels."""

    hi: torch.Tensor   # fp16 [N, C, H, W]
    lo: torch.Tensor   # fp16 [N, C, H, W] (a 1-element dummy when exact)
    sat: torch.Tensor  # float64 [N, H+1, W+1]
    x: torch.Tensor    # fp32 [N, C, H, W] contiguous
    scale: float       # hi (+ lo) = scale · x
    exact: bool

    @classmethod
    def build(cls, images: torch.Tensor) -> "Training":
        x = images.float().contiguous()
        scale = exact_scale(x)
        exact = scale is not None
        if exact:
            hi, lo = torch.round(x * scale).half(), torch.zeros(1, dtype=torch.float16, device=x.device)
        else:
            scale = _pow2_scale(float(x.abs().max()))
            hi = (x * scale).half()
            lo = (x * scale - hi.float()).half()
        sq = (x.double() ** 2).sum(1)  # [N, H, W]
        sat = torch.zeros(x.shape[0], x.shape[2] + 1, x.shape[3] + 1, dtype=torch.float64, device=x.device)
        sat[:, 1:, 1:] = sq.cumsum(1).cumsum(2)
        return cls(hi.contiguous(), lo.contiguous(), sat, x, float(scale), exact)


def exact_scale(x: torch.Tensor) -> float | None:
    """The first λ of EXACT_SCALES with λ x integers of at most 2048 in magnitude (exact in fp16) whose fp32
    quotient by λ gives back x exactly; None when there is none."""
    top = float(x.abs().max())
    for lam in EXACT_SCALES:
        if lam * top > 2048:
            break
        ints = torch.round(x * lam)
        if bool(((ints / lam) == x).all()):
            return lam
    return None


def _pow2_scale(top: float) -> float:
    return 2.0 ** math.floor(math.log2(FP16_ROOM / max(top, 1e-30)))


@dataclass
class LevelLayout:
    """The blocks of one (H, W, k, batch, BQ): per block META int32 fields (0 shape, 1 first row, 2 rows,
    3 distinct offsets, 4 where they start in `offs`, 12 kh, 13 kw, 14 positions per row, 15 positions, 16 width,
    17 padded width, 18 start of the shape's coordinate offsets in `doff`); per row the index of its offset
    among its block's; the blocks' (up, left) offsets; the window coordinate offsets per shape (c·H·W + dy·W +
    dx; the padding repeats 0, which zero query columns cancel); and where each row's result goes."""

    meta: torch.Tensor     # int32 [n_blocks, META] (field 5, the block's key slices, set per training set)
    roff: torch.Tensor     # int32 [R_pad]
    offs: torch.Tensor     # int32 [Σ distinct offsets per block, 2]
    doff: torch.Tensor     # int32 [Σ padded widths + BK]
    starts: list[int]      # first row of each shape in the query buffer
    order: list[torch.Tensor]  # per shape: long [B * P], the shape's rows (b * P + p) in buffer order
    R_pad: int
    WP: int
    work: torch.Tensor     # float64 [n_blocks]: a block's product and pair work per training image
    device_meta: dict      # (N, programs) -> (meta with the slices filled in, on the device; most slices)

    def meta_for(self, N: int, programs: int, BKEY: int) -> tuple[torch.Tensor, int]:
        """The meta with each block's number of key slices (about `programs` in all, in proportion to the blocks'
        work, at least one and at most one per BKEY keys), and the largest number of slices."""
        if (N, programs) not in self.device_meta:
            meta = self.meta.clone()
            share = self.work * N / (self.work.sum() * N / programs)
            most = (N * meta[:, 15].double() / BKEY).ceil()
            meta[:, 5] = torch.minimum(share.round().clamp_min(1), most).to(torch.int32)
            self.device_meta[(N, programs)] = (meta.to(self.roff.device), int(meta[:, 5].max()))
        return self.device_meta[(N, programs)]


def level_layout(B: int, C: int, H: int, W: int, k: int, BQ: int, BK: int, device: torch.device,
                 pair_cost: float = 0.0) -> LevelLayout:
    groups = shape_groups(H, W, k)
    meta, roff, doff, starts, order, offs, work = [], [], [], [], [], [], []
    row, dpos, WP = 0, 0, BK
    for s, g in enumerate(groups):
        width = C * g.kh * g.kw
        wpad = -(-width // BK) * BK
        WP = max(WP, wpad)
        c, dy, dx = torch.meshgrid(torch.arange(C), torch.arange(g.kh), torch.arange(g.kw), indexing="ij")
        table = (c * H * W + dy * W + dx).reshape(-1)
        doff.append(torch.cat([table, torch.zeros(wpad - width, dtype=torch.long)]))
        # rows of the shape ordered by (offset, b, p)
        off_rows = g.off.repeat(B)  # [B * P]: offset of row b * P + p
        perm = torch.sort(off_rows * (B * g.pixels) + torch.arange(B * g.pixels), stable=True).indices
        order.append(perm)
        starts.append(row)
        sorted_off = off_rows[perm]
        for r0 in range(0, B * g.pixels, BQ):
            rows_off = sorted_off[r0:r0 + BQ]
            present = sorted(set(rows_off.tolist()))
            meta.append([s, row + r0, len(rows_off), len(present), len(offs)] + [0] * 7
                        + [g.kh, g.kw, W - g.kw + 1, g.positions(H, W), width, wpad, dpos, 0])
            offs += [g.offsets[o] for o in present]
            work.append(g.positions(H, W) * BQ * (2 * wpad + pair_cost))
            local = torch.tensor([present.index(o) for o in rows_off.tolist()] + [-1] * (BQ - len(rows_off)))
            roff.append(local)
        row += -(-B * g.pixels // BQ) * BQ
        dpos += wpad
    doff.append(torch.zeros(BK, dtype=torch.long))
    return LevelLayout(torch.tensor(meta, dtype=torch.int32),
                       torch.cat(roff).to(device, torch.int32), torch.tensor(offs, dtype=torch.int32, device=device),
                       torch.cat(doff).to(device, torch.int32),
                       starts, [o.to(device) for o in order], row, WP, torch.tensor(work, dtype=torch.float64), {})


def pick_blocks(B: int, C: int, H: int, W: int, k: int, pair_cost: float) -> tuple[int, int]:
    """(BQ, BK): the rows per program and coordinates per product step that pad the level's work least (the
    larger on near ties: fewer programs, fewer steps)."""
    groups = shape_groups(H, W, k)

    def cost(BQ: int, BK: int) -> float:
        return sum(-(-B * g.pixels // BQ) * BQ * g.positions(H, W) * (2 * -(-C * g.kh * g.kw // BK) * BK + pair_cost)
                   for g in groups)

    bks = [bk for bk in (16, 32, 64) if cost(64, bk) <= 1.1 * min(cost(64, b) for b in (16, 32, 64))]
    BK = max(bks)
    costs = {bq: cost(bq, BK) for bq in (16, 32, 64, 128)}
    return max(bq for bq, c in costs.items() if c <= 1.15 * min(costs.values())), BK


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def els_mean(x: torch.Tensor, train: Training, k: int, ab: float, temperature: float = 1.0,
             layouts: dict | None = None) -> torch.Tensor:
    """x̂0 [B, C, H, W] for x [B, C, H, W] (fp32, on the training data's device)."""
    cfg = ELS_TRITON_CONFIG
    B, C, H, W = x.shape
    BKEY = cfg["BKEY"]
    BQ, BK = pick_blocks(B, C, H, W, k, cfg["pair_cost"])
    BQ, BK = cfg["BQ"] or BQ, cfg["BK"] or BK
    key = (B, C, H, W, k, BQ, BK)
    layout = layouts.get(key) if layouts is not None else None
    if layout is None:
        layout = level_layout(B, C, H, W, k, BQ, BK, x.device, cfg["pair_cost"])
        if layouts is not None:
            layouts[key] = layout
    qs, ns = logit_scales(ab, temperature)
    groups = shape_groups(H, W, k)
    if train.x.numel() >= 2**31 or train.x.shape[0] * H * W >= 2**31:
        raise ValueError(f"denoiser.els: {train.x.shape[0]:,} training images of {C}x{H}x{W} are too many for the "
                         "Triton kernel's 32-bit indices; use kernel=torch")
    q = torch.zeros(layout.R_pad, layout.WP, device=x.device)
    for s, g in enumerate(groups):
        win = query_windows(x.float(), g)  # [B * P, width]
        q[layout.starts[s]:layout.starts[s] + win.shape[0], :win.shape[1]] = win[layout.order[s]]
    ry = _pow2_scale(float(q.abs().max()))
    q_hi = (q * ry).half()
    q_lo = (q * ry - q_hi.float()).half()
    N = train.x.shape[0]
    meta, splits = layout.meta_for(N, cfg["programs_per_sm"] * _sm_count(x.device), BKEY)
    n_blocks = meta.shape[0]
    CP = max(2, triton.next_power_of_2(C))
    m = torch.empty(splits, layout.R_pad, device=x.device)
    den = torch.empty_like(m)
    num = torch.empty(splits, layout.R_pad, CP, device=x.device)
    warps = cfg["warps"] or (4 if BQ * BKEY <= 64 * 128 else 8)
    _els_kernel[(n_blocks, splits)](
        q_hi, q_lo, meta, layout.roff, layout.offs, train.hi, train.lo, train.sat, train.x, layout.doff,
        m, den, num, N, H, W, layout.R_pad, layout.WP, qs / (ry * train.scale), ns,
        C=C, CP=CP, BQ=BQ, BKEY=BKEY, BK=BK, EXACT=train.exact, num_warps=warps, num_stages=cfg["stages"],
    )
    mean = merge_partials((m * LN2).unsqueeze(-1), den.unsqueeze(-1), num)  # [R_pad, CP]
    out = torch.empty_like(x, dtype=torch.float32)
    for s, g in enumerate(groups):
        rows = mean[layout.starts[s]:layout.starts[s] + B * g.pixels, :C]  # buffer order
        flat = torch.empty(B * g.pixels, C, device=x.device)
        flat[layout.order[s]] = rows  # row b * P + p
        flat = flat.reshape(B, g.pixels, C)
        out[:, :, g.ys.to(x.device), g.xs.to(x.device)] = flat.permute(0, 2, 1)
    return out
