"""ELS as one fused Triton kernel per noise level: an exact "flash attention" whose queries are the batch's
clipped windows and whose keys are the training windows of the same shape at every position, read straight
from the training images (nothing unfolded in memory).

A program takes a block of BQ query rows of one window shape (BQ chosen per shape: a launch per block size) and a
slice of that shape's N·Q keys. Per block of BKEY keys: the cross terms <q, w> on the tensor cores (fp16 operands,
fp32 accumulation: the query as hi + lo halves, the training pixels exact in fp16 when they are integers over a
common scale λ, as 8-bit images are (255 x) -- else as hi + lo halves too, a third product), the squared norm |w|²
of each key from a float64 summed-area table of Σ_c x², the logits in base 2 and a running max per row; then, on
the tensor cores again, the weights (fp16 hi + lo halves) times the keys' value columns: the training pixels at the
block's offsets (a row's pixel sits at one of up to 4 offsets of its shape) and a column of ones for the
denominator. Each row keeps its own offset's sums. The slices' partial states are merged on the host
(online_softmax.merge_partials). A key's image and position come from its index by multiply-high with constants the
host made for the shape (layout.divisor_magic): a division by a runtime value would cost dozens of instructions per
key and thread.

Rows of one shape are ordered by offset, so a block holds one group of value columns' offsets, except where
windows are as tall or as wide as the image (GROUPED: a pass per group). Launch shape: ELS_TRITON_CONFIG
(tuned for H100/H200; STUDIO_ELS_TRITON_CONFIG, JSON, overrides entries). Checked at small sizes with
TRITON_INTERPRET=1 on the CPU (tests/test_locality_ls.py) and on CUDA against the float64 reference.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import torch
import triton
import triton.language as tl

from studio.denoisers.online_softmax import merge_partials
from studio.denoisers.windows.layout import LevelLayout, Training, level_layout, pick_blocks, pow2_scale
from studio.denoisers.windows.torch_scan import logit_scales

# BQ: query rows per program (None: per shape, the cheapest of 16/32/64/128 -- a launch per size); BKEY: keys per
# step; BK: window coordinates per product step (None: 16 or 32, whichever pads least, 32 on near ties);
# programs_per_sm: the key axis of each launch's blocks is split so that it makes about this many programs per SM,
# heavier blocks in more slices; pair_cost: the exponential and the CUDA-core work around it of one (query, key)
# pair, in tensor-core multiply-adds (H100: 16 exp2/clk/SM against 2048 fp16 MACs/clk/SM); gather_cost: gathering
# one coordinate of a key window, in the same units (a block gathers each of its keys' windows once, whatever its
# rows; fitted to the ms per level of BQ 32 against BQ 128 for every shape); warps, stages.
# Swept on an H200 (3x32x32, N=10,000, batch 8, 10 levels), one call per sweep, ms/step:
# - while the numerators were CUDA-core sums: 4 warps 412 against 449 for 8; 12 programs per SM 400 against 413 for
#   6; BKEY 64 or 256, 3 or 4 stages, pair_cost 100 no better;
# - tensor-core numerators, one BQ per level: 371; BQ 128 for every shape 459 (but 707 against 838 at k=15);
# - BQ per shape: 293; with BK 32: 272, with 24 programs per SM: 282, both: 264 (BK 32 slower only at k=5, where
#   16 pads least); gather_cost 100 or 400: 288, 291; 8 warps, 3 stages, BKEY 64 slower;
# - with those: 261-263; BKEY 64 307, 256 1,143; blocks of 32 rows on 2 warps 281, on 8 warps 328; 16 or 32
#   programs per SM, gather_cost 300 within 1%.
ELS_TRITON_CONFIG = {"BQ": None, "BKEY": 128, "BK": None, "programs_per_sm": 24, "pair_cost": 280,
                     "gather_cost": 200, "warps": 4, "stages": 2}
ELS_TRITON_CONFIG.update(json.loads(os.environ.get("STUDIO_ELS_TRITON_CONFIG", "{}")))
LN2 = math.log(2.0)
COMPILE_THREADS = min(8, os.cpu_count() or 1)  # kernel variants compiled at once (compile_levels)
# The weights p = 2^(logit - reference) reach 2^15 (fp16's largest power of two under 65504) and go to the tensor
# cores as fp16 hi + lo halves, off by at most 2^-22 p + 2^-25 (half a step of fp16's subnormals), i.e. 2^-40 of the
# row's largest weight besides the relative 2^-22. The numerator and the denominator see the same weights, so the
# mean moves by at most Σ|error| / Σ p times the values' range: over the 7.8M keys of a 3x32x32 level of 10,000
# images at k=5, 2^-17 (7.5e-6) if every error had one sign, ~2^-29 for errors of either sign (Σ p >= 1 in units
# of the largest weight), against the tests' 1e-5; the dropped lo x lo products are 2^-22 of each term.
W_BITS = tl.constexpr(15)


@triton.jit
def _reference(top):
    """[BQ]: the rows' exponent reference, top - W_BITS for the block's largest logits top (the weights reach
    2^W_BITS); top itself where fp32 would round top - W_BITS far enough down to overflow fp16 (|top| > 2^24)."""
    ref = top - W_BITS
    return tl.where(top - ref <= W_BITS + 0.5, ref, top)


@triton.jit
def _divide(x, magic, shift):
    """x // d for 0 <= x < 2^31 with (magic, shift) = layout.divisor_magic(d) as uint32: three integer instructions
    where a division by a runtime value takes dozens."""
    twice = (x + x).to(tl.uint32, bitcast=True)
    return (tl.umulhi(twice, magic) >> shift).to(tl.int32, bitcast=True)


@triton.jit
def _key_windows(j, npos, qw, n_magic, n_shift, y_magic, y_shift, H, W, C: tl.constexpr):
    """[BKEY] x 2: for keys j (image n, position pos = qy·qw + qx), the first pixel of the key window in the fp16
    planes [N, C, H, W] and its top-left corner in the summed-area table [N, H+1, W+1]; qx = pos - qy·qw is folded
    in."""
    n = _divide(j, n_magic, n_shift)
    pos = j - n * npos
    qy = _divide(pos, y_magic, y_shift)
    return n * (C * H * W) + qy * (W - qw) + pos, n * ((H + 1) * (W + 1)) + qy * (W + 1 - qw) + pos


@triton.jit
def _value_columns(offs_ptr, first, count, HW, W, C: tl.constexpr, CP: tl.constexpr, NV: tl.constexpr):
    """[NV]: where value column o·CP + c reads (the pixel at the block's offset first + o, channel c < C) relative to
    a key window's first pixel, whether it reads, and what it holds otherwise (1 at c = C: the denominator)."""
    col = tl.arange(0, NV)
    o = col // CP
    c = col % CP
    real = (o < count) & (c < C)
    at = offs_ptr + 2 * (first + o)
    up = tl.load(at, mask=real, other=0)
    left = tl.load(at + 1, mask=real, other=0)
    return c * HW + up * W + left, real, (c == C).to(tl.float16)


@triton.jit
def _fp16_halves(v):
    """v as fp16 hi + lo (22 significant bits), for products on the tensor cores."""
    hi = v.to(tl.float16)
    return hi, (v - hi.to(tl.float32)).to(tl.float16)


@triton.jit
def _value_sums(p_hi, p_lo, khi_ptr, klo_ptr, base, vcol, vreal, vother, EXACT: tl.constexpr):
    """[BQ, NV]: Σ_key p · V over one key block, V [BKEY, NV] the keys' value columns as the fp16 planes hold them."""
    # A fresh accumulator per block (the caller adds it in fp32) and the small products first: the tensor cores'
    # fp32 sums may truncate, a bias of ~2^-23 over one block's few steps, which thousands of blocks would add up.
    at = base[:, None] + vcol[None, :]  # [BKEY, NV]
    v_hi = tl.load(khi_ptr + at, mask=vreal[None, :], other=vother[None, :])
    part = tl.dot(p_lo, v_hi)  # [BQ, NV]
    if not EXACT:
        part = tl.dot(p_hi, tl.load(klo_ptr + at, mask=vreal[None, :], other=0.0), part)
    return tl.dot(p_hi, v_hi, part)


@triton.jit
def _els_kernel(
    qhi_ptr, qlo_ptr, meta_ptr, roff_ptr, offs_ptr, khi_ptr, klo_ptr, sat_ptr, doff_ptr,
    m_ptr, den_ptr, num_ptr,
    N, H, W, R_PAD, WP, a_scale, ns, v_scale,
    C: tl.constexpr, CP: tl.constexpr, NV: tl.constexpr, BQ: tl.constexpr, BKEY: tl.constexpr, BK: tl.constexpr,
    EXACT: tl.constexpr, ONE_STEP: tl.constexpr, GROUPED: tl.constexpr,
):
    NOFF: tl.constexpr = NV // CP  # offsets per group of value columns
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
    n_magic = tl.load(mb + 6).to(tl.uint32, bitcast=True)
    n_shift = tl.load(mb + 7).to(tl.uint32, bitcast=True)
    y_magic = tl.load(mb + 8).to(tl.uint32, bitcast=True)
    y_shift = tl.load(mb + 9).to(tl.uint32, bitcast=True)
    HW = H * W
    s_down = kh * (W + 1)  # the summed-area table's corners below and right of a window's top-left one
    rows = row0 + tl.arange(0, BQ)
    roff = tl.load(roff_ptr + rows)
    total = N * npos  # int32: the host checks that keys and pixels stay under 2^31, as _divide needs
    per = tl.cdiv(tl.cdiv(total, splits), BKEY) * BKEY
    lo = split * per
    hi = tl.minimum(lo + per, total)
    m_run = tl.full((BQ,), float("-inf"), tl.float32)
    num = tl.zeros((BQ, NV), tl.float32)
    kk = tl.arange(0, BK)
    vcol, vreal, vother = _value_columns(offs_ptr, ostart, n_off, HW, W, C, CP, NV)  # [NV]: the block's offsets
    if ONE_STEP:  # every window fits one product step: the query operands and offsets stay in registers
        q_at = rows[:, None] * WP + kk[None, :]
        a_hi1 = tl.load(qhi_ptr + q_at)
        a_lo1 = tl.load(qlo_ptr + q_at)
        doff1 = tl.load(doff_ptr + dstart + kk)
    for j0 in range(lo, hi, BKEY):
        j = j0 + tl.arange(0, BKEY)
        tail = j >= hi  # [BKEY]: past the slice: |w|² = inf below, logit -inf
        j = tl.minimum(j, hi - 1)  # the tail reads the last key again
        base, corner = _key_windows(j, npos, qw, n_magic, n_shift, y_magic, y_shift, H, W, C)  # [BKEY] x 2
        acc = tl.zeros((BQ, BKEY), tl.float32)
        if ONE_STEP:
            src = base[None, :] + doff1[:, None]
            w_hi = tl.load(khi_ptr + src)
            acc = tl.dot(a_hi1, w_hi, acc)
            acc = tl.dot(a_lo1, w_hi, acc)
            if not EXACT:
                acc = tl.dot(a_hi1, tl.load(klo_ptr + src), acc)
        else:
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
        sat = sat_ptr + corner
        s11 = tl.load(sat + s_down + kw, mask=~tail, other=float("inf"))
        s01 = tl.load(sat + kw)
        s10 = tl.load(sat + s_down)
        s00 = tl.load(sat)
        sq = ((s11 - s01) - (s10 - s00)).to(tl.float32)
        logits = acc * a_scale - (sq * ns)[None, :]
        m_new = tl.maximum(m_run, _reference(tl.max(logits, 1)))
        alpha = tl.exp2(m_run - m_new)
        p = tl.exp2(logits - m_new[:, None])  # [BQ, BKEY]: the weights, up to 2^W_BITS
        p_hi, p_lo = _fp16_halves(p)
        if GROUPED:  # more offsets than NOFF: each group of rows gets its offsets' columns
            part = tl.zeros((BQ, NV), tl.float32)
            for g0 in range(0, n_off, NOFF):
                mine = (roff // NOFF == g0 // NOFF)[:, None]
                gcol, greal, gother = _value_columns(offs_ptr, ostart + g0, n_off - g0, HW, W, C, CP, NV)
                part += _value_sums(tl.where(mine, p_hi, 0.0), tl.where(mine, p_lo, 0.0), khi_ptr, klo_ptr, base,
                                    gcol, greal, gother, EXACT)
        else:
            part = _value_sums(p_hi, p_lo, khi_ptr, klo_ptr, base, vcol, vreal, vother, EXACT)
        num = num * alpha[:, None] + part
        m_run = m_new
    at = split * R_PAD + rows
    tl.store(m_ptr + at, m_run)
    own = (tl.arange(0, NV) // CP)[None, :] == (roff % NOFF)[:, None]  # [BQ, NV]: the row's offset's columns
    sums = tl.sum(tl.reshape(tl.where(own, num, 0.0), (BQ, NOFF, CP)), 1)  # [BQ, CP]: C values, the denominator
    cols = tl.arange(0, CP)
    tl.store(den_ptr + at, tl.sum(tl.where((cols == C)[None, :], sums, 0.0), 1))
    tl.store(num_ptr + at[:, None] * CP + cols[None, :], sums / v_scale)


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


@dataclass
class LevelLaunches:
    """One level's kernel launches (grid, arguments, compile-time options) and the arrays they fill."""

    layout: LevelLayout
    calls: list[tuple[tuple[int, int], tuple, dict]]
    m: torch.Tensor    # [splits, R_pad]: each slice's running max (base 2)
    den: torch.Tensor  # [splits, R_pad]
    num: torch.Tensor  # [splits, R_pad, CP]


def level_launches(x: torch.Tensor, train: Training, k: int, ab: float, temperature: float = 1.0,
                   layouts: dict | None = None) -> LevelLaunches:
    """The launches of x [B, C, H, W] at patch size k; the block layout is cached in `layouts` by shape and k."""
    cfg = ELS_TRITON_CONFIG
    B, C, H, W = x.shape
    BKEY = cfg["BKEY"]
    key = (B, C, H, W, k, json.dumps(cfg, sort_keys=True))
    found = layouts.get(key) if layouts is not None else None
    if found is None:
        sizes, BK = pick_blocks(B, C, H, W, k, cfg["pair_cost"], cfg["gather_cost"])
        sizes, BK = cfg["BQ"] or sizes, cfg["BK"] or BK
        found = (BK, level_layout(B, C, H, W, k, sizes, BK, x.device, cfg["pair_cost"], cfg["gather_cost"]))
        if layouts is not None:
            layouts[key] = found
    BK, layout = found
    qs, ns = logit_scales(ab, temperature)
    if max(train.hi.numel(), train.sat.numel()) >= 2**31:
        raise ValueError(f"denoiser.els: {train.hi.shape[0]:,} training images of {C}x{H}x{W} are too many for the "
                         "Triton kernel's 32-bit indices; use kernel=torch")
    q = layout.queries(x.float())
    ry = pow2_scale(float(q.abs().max()))
    q_hi = (q * ry).half()
    q_lo = (q * ry - q_hi.float()).half()
    N = train.hi.shape[0]
    launches, splits = layout.meta_for(N, cfg["programs_per_sm"] * _sm_count(x.device), BKEY)
    CP = triton.next_power_of_2(C + 1)  # the C values and the denominator
    NV = max(16, 4 * CP)  # value columns: 4 offsets (tl.dot wants >= 16)
    m = torch.empty(splits, layout.R_pad, device=x.device)
    den = torch.empty_like(m)
    num = torch.empty(splits, layout.R_pad, CP, device=x.device)
    grouped = int(layout.meta[:, 3].max()) > NV // CP
    calls = []
    for BQ, meta in launches:  # each writes its blocks' rows in every slice (programs past a block's slices: empty)
        args = (q_hi, q_lo, meta, layout.roff, layout.offs, train.hi, train.lo, train.sat, layout.doff,
                m, den, num, N, H, W, layout.R_pad, layout.WP, qs / (ry * train.scale), ns, train.scale)
        options = dict(C=C, CP=CP, NV=NV, BQ=BQ, BKEY=BKEY, BK=BK, EXACT=train.exact, ONE_STEP=layout.WP == BK,
                       GROUPED=grouped, num_warps=cfg["warps"], num_stages=cfg["stages"])
        calls.append(((meta.shape[0], splits), args, options))
    return LevelLaunches(layout, calls, m, den, num)


def els_mean(x: torch.Tensor, train: Training, k: int, ab: float, temperature: float = 1.0,
             layouts: dict | None = None) -> torch.Tensor:
    """x̂0 [B, C, H, W] for x [B, C, H, W] (fp32, on the training data's device)."""
    level = level_launches(x, train, k, ab, temperature, layouts)
    for grid, args, options in level.calls:
        _els_kernel[grid](*args, **options)
    mean = merge_partials((level.m * LN2).unsqueeze(-1), level.den.unsqueeze(-1), level.num)  # [R_pad, CP]
    out = torch.empty(x.shape, device=x.device)
    level.layout.scatter(out, mean)
    return out


def compile_levels(shape: tuple[int, int, int, int], train: Training, ks: Iterable[int], layouts: dict | None = None,
                   threads: int = COMPILE_THREADS) -> int:
    """Compile, without running, the kernel variants that queries of `shape` [B, C, H, W] meet at the patch sizes
    `ks`, each variant once (the first k that needs it), on up to `threads` threads at once: a variant takes 1-2 s
    to compile (H200 host), mostly outside the GIL, so a run that meets several pays about one. The number started."""
    x = torch.ones(shape, device=train.hi.device)  # the queries' values change no variant
    variants: dict[tuple, tuple] = {}
    for k in ks:
        for grid, args, options in level_launches(x, train, k, 0.5, 1.0, layouts).calls:
            variants.setdefault(tuple(sorted(options.items())), (grid, args, options))
    with ThreadPoolExecutor(max(1, min(threads, len(variants)))) as pool:
        list(pool.map(lambda v: _els_kernel.warmup(*v[1], grid=v[0], **v[2]), variants.values()))
    return len(variants)
