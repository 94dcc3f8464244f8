"""Triton kernel for the sparse tiles of a ColumnPlan (GPU): one pass over the data, exact online softmax.

One program owns a tile of G output columns, BB queries and a slice of the training points. For each
block of BI points it forms the squared differences (q[n] - s x_i[n])² over the tile's support in fp32,
splits them into two fp16 halves (hi + lo carry 22 significant bits, so the sum is fp32-accurate) and
multiplies them by the tile's 0/1 mask on the tensor cores; the [BB, BI, G] distances then update a
running max / denominator / numerator. Slices are merged on the host with the same log-sum-exp rule.
"""

from __future__ import annotations

import json
import math
import os

import torch
import triton
import triton.language as tl

from studio.denoisers.masked_softmax import ColumnPlan, build_plan
from studio.denoisers.softmax import DataBank, scaled_scores

FP16_ROOM = 2.0**14  # largest scaled squared difference: leaves headroom under fp16's 65504
# Launch shape (support coordinates per MMA step, MMA rows = queries x points, pipeline stages), the tile
# widths G a plan may use, and the cost model that picks one per mask: time per unit of work ~ a + b / G
# (b: forming the squared differences, shared by G columns; a: the MMAs and the softmax), fitted on an H100
# (CIFAR-shaped photo patches, N = 50,000). STUDIO_TRITON_CONFIG (JSON) overrides entries, for other GPUs.
CONFIG = {"BK": 32, "rows": 128, "stages": 2, "tiles": [64, 128, 256], "cost": [56.9, 2890.0]}
CONFIG.update(json.loads(os.environ.get("STUDIO_TRITON_CONFIG", "{}")))


@triton.jit
def _tiles_kernel(
    x_ptr, q_ptr, base_ptr, cols_ptr, kptr_ptr, kidx_ptr, blk_ptr, comp_ptr,
    m_ptr, den_ptr, num_ptr,
    N, D, B, T, rows_per_split, s, inv,
    BB: tl.constexpr, BI: tl.constexpr, BK: tl.constexpr, G: tl.constexpr,
):
    tile = tl.program_id(0)
    bb = tl.program_id(1) * BB + tl.arange(0, BB)
    split = tl.program_id(2)
    bmask = bb < B
    g = tl.arange(0, G)
    cols = tl.load(cols_ptr + tile * G + g)
    cmask = cols < D
    k0 = tl.load(kptr_ptr + tile)
    k1 = tl.load(kptr_ptr + tile + 1)
    comp = tl.load(comp_ptr + tile)
    lo = split * rows_per_split
    m_run = tl.full((BB, G), float("-inf"), tl.float32)
    den = tl.zeros((BB, G), tl.float32)
    num = tl.zeros((BB, G), tl.float32)
    for i0 in range(lo, lo + rows_per_split, BI):
        ii = i0 + tl.arange(0, BI)
        imask = ii < N
        rows = ii.to(tl.int64) * D
        acc = tl.zeros((BB * BI, G), tl.float32)
        for kb in range(k0, k1, BK):
            kk = kb + tl.arange(0, BK)
            nidx = tl.load(kidx_ptr + kk)
            nmask = nidx < D
            xv = tl.load(x_ptr + rows[:, None] + nidx[None, :], mask=imask[:, None] & nmask[None, :], other=0.0)
            qv = tl.load(q_ptr + bb[:, None] * D + nidx[None, :], mask=bmask[:, None] & nmask[None, :], other=0.0)
            diff = qv[:, None, :] - s * xv[None, :, :]
            d = tl.reshape(diff * diff, (BB * BI, BK))
            # hi: d with its mantissa cut to fp16's 10 bits (exact in fp16); lo: the exact remainder.
            d_hi32 = (d.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
            d_hi = d_hi32.to(tl.float16)
            d_lo = (d - d_hi32).to(tl.float16)
            mt = tl.load(blk_ptr + kk.to(tl.int64)[:, None] * G + g[None, :])
            acc = tl.dot(d_hi, mt, acc)
            acc = tl.dot(d_lo, mt, acc)
        dist = tl.reshape(acc, (BB, BI, G))
        if comp != 0:
            base = tl.load(base_ptr + bb[:, None] * N + ii[None, :], mask=bmask[:, None] & imask[None, :], other=0.0)
            dist = base[:, :, None] - dist
        logits = tl.where(imask[None, :, None], -dist * inv, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logits, 1))
        alpha = tl.exp(m_run - m_new)
        p = tl.exp(logits - m_new[:, None, :])
        xo = tl.load(x_ptr + rows[:, None] + cols[None, :], mask=imask[:, None] & cmask[None, :], other=0.0)
        den = den * alpha + tl.sum(p, 1)
        num = num * alpha + tl.sum(p * xo[None, :, :], 1)
        m_run = m_new
    out = ((split * B + bb[:, None]) * T + tile) * G + g[None, :]
    tl.store(m_ptr + out, m_run, mask=bmask[:, None])
    tl.store(den_ptr + out, den, mask=bmask[:, None])
    tl.store(num_ptr + out, num, mask=bmask[:, None])


def _packed(plan: ColumnPlan, device: torch.device, BK: int) -> dict[str, torch.Tensor]:
    """The plan as flat device arrays: supports padded to BK with D, mask rows in fp16 beside them."""
    if ("triton", BK) not in plan.packed:
        G = plan.cols.shape[1]
        idx, blk, ptr = [], [], [0]
        for rows, block in zip(plan.supports, plan.blocks):
            pad = -rows.numel() % BK
            idx.append(torch.cat([rows.cpu(), torch.full((pad,), plan.D, dtype=torch.long)]))
            blk.append(torch.cat([block.cpu(), torch.zeros(pad, G)]))
            ptr.append(ptr[-1] + rows.numel() + pad)
        plan.packed[("triton", BK)] = {
            "cols": plan.cols.to(device, torch.int32).contiguous(),
            "kidx": torch.cat(idx).to(device, torch.int32),
            "blk": torch.cat(blk).to(device, torch.float16).contiguous(),
            "kptr": torch.tensor(ptr, dtype=torch.int32, device=device),
            "comp": plan.complement.to(device, torch.int32),
        }
    return plan.packed[("triton", BK)]


def best_plan(mask: torch.Tensor, shape: tuple[int, ...]) -> ColumnPlan:
    """The plan whose tile width G minimises work x (a + b / G): wide tiles share the squared differences
    over more columns, narrow tiles read less of a local mask."""
    a, b = CONFIG["cost"]
    plans = [build_plan(mask, shape, G) for G in CONFIG["tiles"]]
    return min(plans, key=lambda p: p.work() * (a + b / p.cols.shape[1]))


def tiles_posterior_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float
) -> torch.Tensor:
    """Per-tile softmax means [B, T, G] for queries x [B, D] (fp32, CUDA)."""
    cfg = CONFIG
    B, D = x.shape
    T, G = plan.cols.shape
    BK = cfg["BK"]
    pk = _packed(plan, x.device, BK)
    s = math.sqrt(ab)
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    # Scale by a power of two r so the largest squared difference sits just under FP16_ROOM: fp16 keeps
    # its full precision for the small differences that decide the softmax.
    top = (x.abs().max().item() + s * bank.x.abs().max().item()) ** 2
    r = 2.0 ** math.floor(0.5 * math.log2(FP16_ROOM / max(top, 1e-30)))
    q = (x * r).contiguous()
    base = torch.zeros(1, device=x.device)
    if bool(plan.complement.any()):  # full distance minus the per-query constant ||x||²
        base = (scaled_scores(x, bank, 0, bank.n, s, ab) * (-r * r)).contiguous()
    BB = min(8, triton.next_power_of_2(B))
    BI = max(16, cfg["rows"] // BB)
    nbg = triton.cdiv(B, BB)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    splits = max(1, min(triton.cdiv(bank.n, BI), triton.cdiv(4 * sms, T * nbg)))
    rows_per_split = triton.cdiv(triton.cdiv(bank.n, splits), BI) * BI
    splits = triton.cdiv(bank.n, rows_per_split)
    m = torch.empty(splits, B, T, G, device=x.device)
    den = torch.empty_like(m)
    num = torch.empty_like(m)
    _tiles_kernel[(T, nbg, splits)](
        bank.x, q, base, pk["cols"], pk["kptr"], pk["kidx"], pk["blk"], pk["comp"], m, den, num,
        bank.n, D, B, T, rows_per_split, s * r, inv / (r * r),
        BB=BB, BI=BI, BK=BK, G=G, num_warps=4 if G <= 64 else 8, num_stages=cfg["stages"],
    )
    top_m = m.amax(0)
    w = torch.exp(m - top_m)
    return (w * num).sum(0) / (w * den).sum(0)
