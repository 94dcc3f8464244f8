"""Triton kernel for the sparse tiles of a ColumnPlan (GPU): one pass over the data, exact online softmax.

Up to a per-query constant the masked distance of column g is ||x - s x_i||²_S = -2 s T + ā Q with
T = Σ_{n∈S} x[n] x_i[n] and Q = Σ_{n∈S} x_i[n]². Both are matrix products with the tile's signed mask
block, so the tensor cores take them straight from memory: T = X[:, U] · (x[U] ⊙ mask) for all queries
at once, Q = X[:, U]² · mask. Every fp32 operand is stored as two fp16 halves (hi + lo carry 22
significant bits) and hi·hi + hi·lo + lo·hi are summed in fp32, so T and Q are fp32-accurate; the
data's halves are kept coordinates-first, so a support row is one contiguous read. A program owns a
tile of G columns, BB queries and a slice of the training points; per block of BI points the
[BI, BB, G] logits update a running max / denominator / numerator, and slices are merged on the host
with the same log-sum-exp rule. Slices are short, so the programs running at once share their data in L2.
Q does not depend on the queries: it is computed once per plan and kept with it when memory allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from studio.denoisers.budget import memory_budget, require
from studio.denoisers.masked.plan import TRITON_CONFIG, ColumnPlan, padded_supports
from studio.denoisers.online_softmax import merge_partials
from studio.denoisers.softmax import DataBank

FP16_ROOM = 2.0**14  # scale operands to at most this: headroom under fp16's 65504, lo halves stay normal
SQUARES_SHARE = 0.25


@triton.jit
def _support_block(xt_ptr, kidx_ptr, kb, ii, imask, N, D, BK: tl.constexpr):
    """Pointers [BK, BI] into the coordinates-first data for support rows kb.., their mask, and the rows'
    positions in the packed plan (padding rows carry index D and read zeros)."""
    kk = kb + tl.arange(0, BK)
    nidx = tl.load(kidx_ptr + kk)
    src = xt_ptr + nidx.to(tl.int64)[:, None] * N + ii[None, :]
    return src, (nidx < D)[:, None] & imask[None, :], kk.to(tl.int64)[:, None]


@triton.jit(do_not_specialize=["B", "T"])  # one compiled kernel whatever the batch and the level's tile count
def _tiles_kernel(
    xt_ptr, x_ptr, kidx_ptr, kptr_ptr, wh_ptr, wl_ptr, mq_ptr, cols_ptr, sid_ptr, base_ptr,
    qc_ptr, m_ptr, den_ptr, num_ptr, ry_ptr,
    N, D, B, T, W_COLS, rows_per_split, t_base, q_scale, inv,
    BB: tl.constexpr, BI: tl.constexpr, BK: tl.constexpr, G: tl.constexpr, CACHED_Q: tl.constexpr,
):
    tile = tl.program_id(0)
    group = tl.program_id(1)
    split = tl.program_id(2)
    t_scale = t_base / tl.load(ry_ptr)  # the queries' scale stays on the device: no host synchronisation
    bb = group * BB + tl.arange(0, BB)
    bmask = bb < B
    g = tl.arange(0, G)
    wcol = group * (BB * G) + tl.arange(0, BB * G)
    cols = tl.load(cols_ptr + tile * G + g)
    cmask = cols < D
    k0 = tl.load(kptr_ptr + tile)
    k1 = tl.load(kptr_ptr + tile + 1)
    sid = tl.load(sid_ptr + tile)
    lo = split * rows_per_split
    plane = D.to(tl.int64) * N
    m_run = tl.full((BB, G), float("-inf"), tl.float32)
    den = tl.zeros((BB, G), tl.float32)
    num = tl.zeros((BB, G), tl.float32)
    for i0 in range(lo, lo + rows_per_split, BI):
        ii = i0 + tl.arange(0, BI)
        imask = ii < N
        acc_t = tl.zeros((BI, BB * G), tl.float32)
        acc_q = tl.zeros((BI, G), tl.float32)
        for kb in range(k0, k1, BK):
            src, lmask, krow = _support_block(xt_ptr, kidx_ptr, kb, ii, imask, N, D, BK)
            a_hi = tl.load(src, mask=lmask, other=0.0)
            a_lo = tl.load(src + plane, mask=lmask, other=0.0)
            w_hi = tl.load(wh_ptr + krow * W_COLS + wcol[None, :])
            w_lo = tl.load(wl_ptr + krow * W_COLS + wcol[None, :])
            acc_t = tl.dot(tl.trans(a_hi), w_hi, acc_t)
            acc_t = tl.dot(tl.trans(a_hi), w_lo, acc_t)
            acc_t = tl.dot(tl.trans(a_lo), w_hi, acc_t)
            if not CACHED_Q:
                acc_q = _masked_squares(src, plane, lmask, mq_ptr, krow, g, acc_q, G)
        if CACHED_Q:
            acc_q = tl.load(qc_ptr + (ii.to(tl.int64)[:, None] * T + tile) * G + g[None, :], mask=imask[:, None],
                            other=0.0)
        base = tl.load(base_ptr + (sid * B + bb[None, :]).to(tl.int64) * N + ii[:, None],
                       mask=imask[:, None] & bmask[None, :], other=0.0)
        logits = tl.reshape(acc_t, (BI, BB, G)) * t_scale - (acc_q * q_scale)[:, None, :] + (base * inv)[:, :, None]
        logits = tl.where(imask[:, None, None], logits, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logits, 0))
        alpha = tl.exp(m_run - m_new)
        p = tl.exp(logits - m_new[None, :, :])
        xo = tl.load(x_ptr + ii.to(tl.int64)[:, None] * D + cols[None, :], mask=imask[:, None] & cmask[None, :],
                     other=0.0)
        den = den * alpha + tl.sum(p, 0)
        num = num * alpha + tl.sum(p * xo[:, None, :], 0)
        m_run = m_new
    out = ((split * B + bb[:, None]) * T + tile) * G + g[None, :]
    tl.store(m_ptr + out, m_run, mask=bmask[:, None])
    tl.store(den_ptr + out, den, mask=bmask[:, None])
    tl.store(num_ptr + out, num, mask=bmask[:, None])


@triton.jit
def _masked_squares(src, plane, lmask, mq_ptr, krow, g, acc, G: tl.constexpr):
    """acc += (x² rq)ᵀ · mask over one block of support rows, from the hi/lo planes 2 and 3."""
    q_hi = tl.load(src + 2 * plane, mask=lmask, other=0.0)
    q_lo = tl.load(src + 3 * plane, mask=lmask, other=0.0)
    mq = tl.load(mq_ptr + krow * G + g[None, :])
    acc = tl.dot(tl.trans(q_hi), mq, acc)
    return tl.dot(tl.trans(q_lo), mq, acc)


@triton.jit(do_not_specialize=["T"])
def _squares_kernel(xt_ptr, kidx_ptr, kptr_ptr, mq_ptr, qc_ptr, N, D, T,
                    BI: tl.constexpr, BK: tl.constexpr, G: tl.constexpr):
    """Q [N, T, G] = (x² rq) · mask per tile: the query-free half of the distances, cached per plan."""
    tile = tl.program_id(0)
    ii = tl.program_id(1) * BI + tl.arange(0, BI)
    imask = ii < N
    g = tl.arange(0, G)
    k0 = tl.load(kptr_ptr + tile)
    k1 = tl.load(kptr_ptr + tile + 1)
    plane = D.to(tl.int64) * N
    acc = tl.zeros((BI, G), tl.float32)
    for kb in range(k0, k1, BK):
        src, lmask, krow = _support_block(xt_ptr, kidx_ptr, kb, ii, imask, N, D, BK)
        acc = _masked_squares(src, plane, lmask, mq_ptr, krow, g, acc, G)
    tl.store(qc_ptr + (ii.to(tl.int64)[:, None] * T + tile) * G + g[None, :], acc, mask=imask[:, None])


@dataclass
class PackedPlan:
    """A ColumnPlan as flat device arrays for the kernels: supports padded to BK with D, signed mask rows
    beside them, and which subset of channel distances (row of `subsets`) each tile starts from."""

    cols: torch.Tensor     # int32 [n_tiles, G]
    kidx: torch.Tensor     # int32 [R]: support rows of all tiles, each tile padded to a multiple of BK
    gather: torch.Tensor   # long [R]: kidx with padding clamped to a real coordinate
    real: torch.Tensor     # float32 [R]: 1 for a real support row, 0 for padding
    blk: torch.Tensor      # float32 [R, G]: signed mask rows
    mask16: torch.Tensor   # float16 [R, G]: the same, for the tensor cores
    kptr: torch.Tensor     # int32 [n_tiles + 1]: where each tile's rows start in kidx
    sid: torch.Tensor      # int32 [n_tiles]: the row of `subsets` a tile starts from
    subsets: torch.Tensor  # float32 [S, C]: distinct sets of channels whose full distance tiles start from


def _packed(plan: ColumnPlan, device: torch.device, BK: int) -> PackedPlan:
    """The plan packed for the kernels, built on first use and kept with the plan (plan.padded_supports)."""
    if ("triton", BK) not in plan.packed:
        kidx, blk, ptr = padded_supports(plan, BK, device)
        subsets, sid = plan.based.to(device).unique(dim=0, return_inverse=True)
        plan.packed[("triton", BK)] = PackedPlan(
            cols=plan.cols.to(device, torch.int32).contiguous(),
            kidx=kidx.to(torch.int32),
            gather=kidx.clamp(max=plan.D - 1),
            real=(kidx < plan.D).to(torch.float32),
            blk=blk,
            mask16=blk.to(torch.float16),
            kptr=torch.tensor(ptr, dtype=torch.int32, device=device),
            sid=sid.to(device, torch.int32),
            subsets=subsets.to(device, torch.float32),
        )
    return plan.packed[("triton", BK)]


def _pow2_scale(top: float) -> float:
    """The power of two that brings `top` just under FP16_ROOM (full fp16 precision, no overflow)."""
    return 2.0 ** math.floor(math.log2(FP16_ROOM / max(top, 1e-30)))


def _pow2_scale_on_device(v: torch.Tensor) -> torch.Tensor:
    """[1] fp32: the power of two that brings max|v| under FP16_ROOM, computed where v is (no host sync)."""
    top = v.abs().amax().clamp_min(1e-30).float()
    return (FP16_ROOM / top).log2().floor().exp2().reshape(1)


def _halves(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi = v.half()
    return hi, (v - hi.float()).half()


def data_halves(bank: DataBank, rx: float, rq: float) -> torch.Tensor:
    """[4, D, N] fp16: x rx and x² rq as hi/lo halves, coordinates first (built once per bank)."""

    def make() -> torch.Tensor:
        require(8 * bank.x.numel(), bank.x.device, "denoiser: the Triton kernel's fp16 copies of the training data")
        out = torch.empty(4, bank.x.shape[1], bank.n, dtype=torch.float16, device=bank.x.device)
        for lo in range(0, bank.n, 8192):
            xt = bank.x[lo:lo + 8192].T
            out[0, :, lo:lo + 8192], out[1, :, lo:lo + 8192] = _halves(xt * rx)
            out[2, :, lo:lo + 8192], out[3, :, lo:lo + 8192] = _halves(xt * xt * rq)
        return out

    return bank.derive(("triton-halves", rx, rq), make)


def bank_halves(bank: DataBank) -> tuple[torch.Tensor, float, float]:
    """The bank's fp16 halves (data_halves) with their scales rx, rq: made once per bank."""
    top_x = bank.derive("abs-max-host", lambda: bank.x.abs().max().cpu()).item()  # read on the host once
    rx, rq = _pow2_scale(top_x), _pow2_scale(top_x**2)
    return data_halves(bank, rx, rq), rx, rq


def prepare_plan(plan: ColumnPlan, bank: DataBank) -> None:
    """What the kernel reads of a plan (its packed layout, and Q where it fits), made with the plan's other per-level
    setup instead of in its first call."""
    cfg = TRITON_CONFIG
    pk = _packed(plan, bank.x.device, cfg["BK"])
    cached_squares(plan, bank, bank_halves(bank)[0], pk, cfg["BI"], cfg["BK"])


def cached_squares(plan: ColumnPlan, bank: DataBank, halves: torch.Tensor, pk: PackedPlan, BI: int,
                   BK: int) -> torch.Tensor | None:
    """The plan's Q [N, T, G], computed on first use and kept with the plan while it takes at most
    SQUARES_SHARE of the memory budget; None (the kernel forms Q itself) when it does not fit."""
    key = ("triton-squares", BI, BK)
    if key not in plan.packed:
        T, G = plan.cols.shape
        size = 4 * bank.n * T * G
        if size > SQUARES_SHARE * memory_budget(bank.x.device):
            return None
        q = torch.empty(bank.n, T, G, device=bank.x.device)
        _squares_kernel[(T, triton.cdiv(bank.n, BI))](halves, pk.kidx, pk.kptr, pk.mask16, q, bank.n,
                                                       plan.D, T, BI=BI, BK=BK, G=G, num_warps=4)
        plan.packed[key] = q
    return plan.packed[key]


def channel_bases(x: torch.Tensor, bank: DataBank, subsets: torch.Tensor, K: int, s: float, ab: float) -> torch.Tensor:
    """[S, B, N]: for each subset of channels, Σ_k (2 s <x_k, x_i,k> - ā ||x_i,k||²), the full distances
    of those channels up to per-query constants (fp32 GEMMs, as the `optimal` denoiser's scores)."""
    B, D = x.shape
    if not bool(subsets.any()):
        return torch.zeros(subsets.shape[0], B, bank.n, device=x.device)
    span = D // K
    sq = bank.channel_sq_norms(K)
    parts = []
    for k in range(K):
        sl = slice(k * span, (k + 1) * span)
        parts.append(torch.addmm(sq[k].unsqueeze(0), x[:, sl], bank.x[:, sl].T, beta=-ab, alpha=2 * s))
    return torch.einsum("sk,kbn->sbn", subsets, torch.stack(parts)).contiguous()


def tiles_posterior_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float
) -> torch.Tensor:
    """Per-tile softmax means [B, T, G] for queries x [B, D] (fp32, CUDA)."""
    cfg = TRITON_CONFIG
    B, D = x.shape
    T, G = plan.cols.shape
    BK, BI = cfg["BK"], cfg["BI"]
    pk = _packed(plan, x.device, BK)
    s = math.sqrt(ab)
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    BB = min(triton.next_power_of_2(B), max(1, cfg["cols"] // G))
    groups = triton.cdiv(B, BB)
    halves, rx, rq = bank_halves(bank)
    ry = _pow2_scale_on_device(x)
    # W[k, b, g] = x_b[support k] * signed mask[k, g] for whole groups of queries, as fp16 halves
    rows = pk.kidx.numel()
    require(8 * rows * groups * BB * G, x.device, "denoiser: the Triton kernel's query operand")
    q = torch.zeros(groups * BB, D, device=x.device)
    q[:B] = x * ry
    w = ((q[:, pk.gather] * pk.real).T[:, :, None] * pk.blk[:, None, :]).reshape(rows, groups * BB * G)
    w_hi, w_lo = _halves(w)
    del w
    base = channel_bases(x, bank, pk.subsets, plan.channels, s, ab)
    squares = cached_squares(plan, bank, halves, pk, BI, BK)
    rows_per_split = triton.cdiv(cfg["split_rows"], BI) * BI
    splits = triton.cdiv(bank.n, rows_per_split)
    m = torch.empty(splits, B, T, G, device=x.device)
    den = torch.empty_like(m)
    num = torch.empty_like(m)
    _tiles_kernel[(T, groups, splits)](
        halves, bank.x, pk.kidx, pk.kptr, w_hi, w_lo, pk.mask16, pk.cols, pk.sid, base,
        squares if squares is not None else m, m, den, num, ry, bank.n, D, B, T, groups * BB * G, rows_per_split,
        2 * s * inv / rx, ab * inv / rq, inv,
        BB=BB, BI=BI, BK=BK, G=G, CACHED_Q=squares is not None, num_warps=cfg["warps"], num_stages=cfg["stages"],
    )
    return merge_partials(m, den, num)
