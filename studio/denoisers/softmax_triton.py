"""Triton kernels for the softmax denoisers over 8-bit training data (byte_bank.ByteBank), GPU.

The codes are read once per pass as uint8 and fed to the tensor cores as they are: c ^ 0x80, read as int8,
is c - 128 (two's complement), so no conversion is spent on them. Two kernels:

- code_dots: <x_b, c_i - 128> for all N points and B queries, exactly. Each query is rounded to a 27-bit
  fixed-point integer relative to its largest coordinate and split into four signed base-128 digits (int8);
  int8 x int8 products summed in int32 are exact (|digit| <= 64, |c - 128| <= 128, D <= 2^18 terms), and the
  digits are recombined exactly in int64 in the kernel, which writes the [B, N] float64 dots (the host's
  strided passes over [N, 4 BB] int32 had cost 2 ms a step at ImageNet size). The logits are then exact for the
  rounded query, whose rounding (2^-28 of the row's largest coordinate) is below float32's own for the
  coordinates that matter: more accurate than an fp32 GEMM, whose rounding grows with D and is amplified by
  1/(1-ā).
- weighted_code_sums: Σ_i w_bi (c_i - 128) for softmax weights w, a split-K product over the points merged on
  the host. The weights span many decades, so they go in as fp16 hi + lo halves (22 significant bits, scaled
  by 2^15: fp16's normal range then reaches down to weights of 2^-29) against c - 128 in fp16 (exact:
  0x6400 | c is the fp16 number 1024 + c, minus 1152). The tensor cores sum one block of LIVE points from
  zero (their fp32 accumulation truncates, so a long running sum inside them would drift by up to an ulp per
  instruction); the blocks' sums are added with TwoSum, so the running sum carries ~48 bits. Blocks of points
  whose weights are all zero in fp16 (below the exp floor for every query) are skipped unread, so at low noise
  this pass reads almost nothing.

A single fused pass (the flash-attention pattern) would need the numerator [B, D] of every program on chip:
at D = 12,288 that is 393 KB per program, more than an SM holds, so the logits and the weighted sum are two
passes and the [B, N] logits go through memory between them (82 MB in float64 at ImageNet size).
"""

from __future__ import annotations

import json
import os

import torch
import triton
import triton.language as tl

DIGITS = 4           # base-128 int8 digits of each query's fixed-point form
FIXED_BITS = 27      # |query| * 2^e < 2^27: four balanced base-128 digits, the top one within int8
MAX_DIM = 2**18      # D terms of |digit (c - 128)| <= 2^13 stay below 2^31 in int32
W_SCALE = 2.0**15    # weights (<= 1) scaled by this: fp16's normal range then reaches down to 2^-29
LIVE = 64            # points per block of the weighted sum (a block is skipped when all its weights are zero)
SPLITS = 32          # programs along the points in the weighted sum, per column block
MIN_QUERIES = 8      # queries are padded to a power of two >= 8: tl.dot's dimensions are >= 16
MAX_QUERIES = 32     # queries per launch (more go in groups, each reading the codes once): bounds the accumulators

# Candidate launch configurations, tried once per shape with STUDIO_BYTES_TRITON=autotune. STUDIO_BYTES_TRITON (JSON,
# e.g. {"dots": {"BN": 128, "BK": 128, "warps": 4, "stages": 4}, "sums": {"BD": 128, "warps": 4, "stages": 3}})
# pins one of each instead.
DOTS_CONFIGS = [
    {"BN": 128, "BK": 128, "warps": 4, "stages": 4},
    {"BN": 128, "BK": 256, "warps": 8, "stages": 3},
    {"BN": 256, "BK": 128, "warps": 8, "stages": 3},
    {"BN": 64, "BK": 256, "warps": 4, "stages": 4},
    {"BN": 256, "BK": 64, "warps": 8, "stages": 4},
    {"BN": 128, "BK": 64, "warps": 4, "stages": 5},
]
SUMS_CONFIGS = [
    {"BD": 128, "warps": 4, "stages": 3},
    {"BD": 256, "warps": 4, "stages": 3},
    {"BD": 256, "warps": 8, "stages": 4},
    {"BD": 64, "warps": 4, "stages": 4},
    {"BD": 128, "warps": 8, "stages": 4},
]
INTERPRETER_CONFIG = {"dots": {"BN": 32, "BK": 32}, "sums": {"BD": 32}}  # small tiles for TRITON_INTERPRET=1
ZERO_CODE: tl.constexpr = tl.constexpr(128)  # what masked loads read: it decodes to 0


@triton.jit
def _centred_fp16(c):
    """uint8 codes -> fp16 c - 128, exactly, with integer ops and one fp16 subtraction."""
    h = (c.to(tl.uint16) | 0x6400).to(tl.float16, bitcast=True)  # 1024 + c
    return h - 1152.0


@triton.jit
def _dots_kernel(codes_ptr, q_ptr, out_ptr, N, D, B, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                 DIGITS: tl.constexpr):
    """out[j, i] = Σ_d (c[i, d] - 128) y[j, d] for a block of BN points and the B queries (j < B), where the
    queries' integer forms y are given as DIGITS base-128 digit rows q [DIGITS BB, D]: the digit sums are exact
    in int32, recombined exactly in int64 (|total| < 2^50) and stored as float64, coalesced along the points."""
    QN: tl.constexpr = DIGITS * BB
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    qr = tl.arange(0, QN)
    src = codes_ptr + rows.to(tl.int64)[:, None] * D
    acc = tl.zeros((BN, QN), dtype=tl.int32)
    for k0 in range(0, D, BK):
        kk = k0 + tl.arange(0, BK)
        kmask = kk < D
        c = tl.load(src + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=ZERO_CODE)
        q = tl.load(q_ptr + qr[:, None] * D + kk[None, :], mask=kmask[None, :], other=0)  # int8 [QN, BK]
        acc = tl.dot((c ^ 0x80).to(tl.int8, bitcast=True), tl.trans(q), acc, out_dtype=tl.int32)  # K-major operands
    digit = tl.arange(0, DIGITS)
    weight = tl.full((DIGITS,), 1, tl.int64) << (7 * digit).to(tl.int64)  # 128^k
    total = tl.sum(tl.reshape(acc.to(tl.int64), (BN, DIGITS, BB)) * weight[None, :, None], axis=1)  # [BN, BB]
    j = tl.arange(0, BB)
    at = j.to(tl.int64)[None, :] * N + rows[:, None]
    tl.store(out_ptr + at, total.to(tl.float64), mask=rmask[:, None] & (j < B)[None, :])


@triton.jit
def _sums_kernel(codes_ptr, w_ptr, live_ptr, count_ptr, out_ptr, N, D,
                 QN: tl.constexpr, LIVE_ROWS: tl.constexpr, BD: tl.constexpr):
    """out[split, d, j] = Σ_i (c[i, d] - 128) w[i, j] over this split's share of the live blocks of points."""
    cols = tl.program_id(0) * BD + tl.arange(0, BD)
    cmask = cols < D
    split = tl.program_id(1)
    splits = tl.num_programs(1)
    qc = tl.arange(0, QN)
    n_live = tl.load(count_ptr)
    per = (n_live + splits - 1) // splits
    first = split * per
    last = tl.minimum(first + per, n_live)
    acc = tl.zeros((BD, QN), dtype=tl.float32)
    comp = tl.zeros((BD, QN), dtype=tl.float32)
    for j in range(first, last):
        ii = tl.load(live_ptr + j).to(tl.int64) * LIVE_ROWS + tl.arange(0, LIVE_ROWS)
        c = tl.load(codes_ptr + ii[:, None] * D + cols[None, :], mask=(ii < N)[:, None] & cmask[None, :],
                    other=ZERO_CODE)
        w = tl.load(w_ptr + ii[:, None] * QN + qc[None, :])  # padded to whole blocks with zeros: no mask
        part = tl.dot(tl.trans(_centred_fp16(c)), w)  # one block, from zero: the MMA's rounding stays local
        total = acc + part  # TwoSum: acc + comp carries the running sum beyond fp32
        back = total - acc
        comp += (acc - (total - back)) + (part - back)
        acc = total
    out = (split * D + cols.to(tl.int64))[:, None] * QN + qc[None, :]
    tl.store(out_ptr + out, acc + comp, mask=cmask[:, None])


# What autotuning chose on an H200 (`bench --scale`, 1.28 M x 3x64x64 and 100,000 x 3x64x64): used unless
# STUDIO_BYTES_TRITON pins others or is "autotune" (which tries DOTS_CONFIGS/SUMS_CONFIGS: ~5 s on a first call).
MEASURED = {"dots": {"BN": 128, "BK": 128, "warps": 4, "stages": 4}, "sums": {"BD": 64, "warps": 4, "stages": 4}}


def pinned_launch() -> dict:
    """The launch configuration of each kernel: MEASURED, entries overridden by STUDIO_BYTES_TRITON (JSON), or
    none at all when it says "autotune"."""
    text = os.environ.get("STUDIO_BYTES_TRITON", "").strip()
    if text == "autotune":
        return {}
    return {**MEASURED, **(json.loads(text) if text else {})}


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _tuned(kernel, configs: list[dict], key: list[str]):
    return triton.autotune(
        [triton.Config({k: v for k, v in c.items() if k not in ("warps", "stages")}, num_warps=c["warps"],
                       num_stages=c["stages"]) for c in configs], key=key)(kernel)


_DOTS = _tuned(_dots_kernel, DOTS_CONFIGS, ["D", "BB"])
_SUMS = _tuned(_sums_kernel, SUMS_CONFIGS, ["D", "QN"])


def _launch(tuned, kernel, which: str, grid, *args, **const) -> None:
    """Run the autotuned kernel, or one pinned configuration (STUDIO_BYTES_TRITON), or the interpreter's."""
    pinned = pinned_launch().get(which)
    if _interpreted():
        pinned = INTERPRETER_CONFIG[which]
    if pinned is None:
        tuned[grid](*args, **const)
        return
    meta = {k: v for k, v in pinned.items() if k not in ("warps", "stages")}
    opts = {} if _interpreted() else {"num_warps": pinned.get("warps", 4), "num_stages": pinned.get("stages", 3)}
    kernel[grid(meta)](*args, **const, **meta, **opts)


def padded_queries(b: int) -> int:
    """Queries padded to a power of two >= 8."""
    return max(MIN_QUERIES, triton.next_power_of_2(b))


def step_bytes(n: int, d: int, b: int, sums: bool = True) -> int:
    """Device bytes one step allocates beside the codes: float64 [B, N] dots, logits and weights, and for the
    weighted sum the fp16 weight halves [N, 2 BB] and partial sums."""
    bb = padded_queries(min(b, MAX_QUERIES))
    dots = 4 * 8 * n * b
    return dots + (2 * (n + LIVE) * 2 * bb + 4 * SPLITS * d * 2 * bb + 4 * n * b if sums else 0)


def query_digits(x: torch.Tensor, bb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries x [B, D] as int8 digits [4 bb, D] (digit k of query b in row k bb + b) with x ≈ Σ_k digit_k 128^k
    / 2^e, and the powers 2^e [B] (float64): each row rounded to a 27-bit fixed-point integer."""
    B, D = x.shape
    top = x.abs().amax(1).double()
    exp = torch.floor(torch.log2((2.0**FIXED_BITS - 1) / top.clamp_min(1e-300))).clamp(-1000, 1000)
    power = torch.where(top > 0, torch.exp2(exp), torch.ones_like(top))
    y = torch.round(x.double() * power[:, None]).long()  # |y| < 2^27
    q = torch.zeros(DIGITS * bb, D, dtype=torch.int8, device=x.device)
    for k in range(DIGITS - 1):
        digit = torch.remainder(y + 64, 128) - 64  # balanced: -64..63
        q[k * bb:k * bb + B] = digit.to(torch.int8)
        y = (y - digit) // 128
    q[(DIGITS - 1) * bb:(DIGITS - 1) * bb + B] = y.to(torch.int8)  # the top digit: |y| <= 64
    return q, power


def code_dots(codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B, N] float64: <x_b, c_i - 128> for codes [N, D] uint8 and queries x [B, D] (same device), exact for
    the queries rounded to 27 bits relative to their largest coordinate."""
    D = codes.shape[1]
    if D > MAX_DIM:
        raise ValueError(f"the 8-bit kernels take at most {MAX_DIM:,} coordinates per point, got {D:,}")
    if x.shape[0] > MAX_QUERIES:
        return torch.cat([_code_dots(codes, x[lo:lo + MAX_QUERIES]) for lo in range(0, x.shape[0], MAX_QUERIES)])
    return _code_dots(codes, x)


def _code_dots(codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    N, D = codes.shape
    B = x.shape[0]
    bb = padded_queries(B)
    q, power = query_digits(x, bb)
    dots = torch.empty(B, N, dtype=torch.float64, device=x.device)
    _launch(_DOTS, _dots_kernel, "dots", lambda meta: (triton.cdiv(N, meta["BN"]),), codes, q, dots, N, D, B,
            BB=bb, DIGITS=DIGITS)
    return dots.div_(power[:, None])


def _halves(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi = v.half()
    return hi, (v - hi.float()).half()


def weighted_code_sums(codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[B, D] float64: Σ_i w_bi (c_i - 128) for codes [N, D] uint8 and weights w [B, N] in [0, 1]."""
    if w.shape[0] > MAX_QUERIES:
        return torch.cat([_weighted_code_sums(codes, w[lo:lo + MAX_QUERIES])
                          for lo in range(0, w.shape[0], MAX_QUERIES)])
    return _weighted_code_sums(codes, w)


def _weighted_code_sums(codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    N, D = codes.shape
    B = w.shape[0]
    bb = padded_queries(B)
    qn = 2 * bb
    blocks = triton.cdiv(N, LIVE)
    hi, lo = _halves(w.float() * W_SCALE)
    wq = torch.zeros(blocks * LIVE, qn, dtype=torch.float16, device=w.device)
    wq[:N, :B] = hi.T
    wq[:N, bb:bb + B] = lo.T
    live = wq.view(blocks, LIVE * qn).ne(0).any(1)
    order = torch.sort((~live).to(torch.uint8), stable=True).indices.to(torch.int32)  # live blocks first, in order
    count = live.sum().to(torch.int32).reshape(1)
    splits = max(1, min(SPLITS, blocks))
    out = torch.empty(splits, D, qn, dtype=torch.float32, device=w.device)
    _launch(_SUMS, _sums_kernel, "sums", lambda meta: (triton.cdiv(D, meta["BD"]), splits),
            codes, wq, order, count, out, N, D, QN=qn, LIVE_ROWS=LIVE)
    total = out.sum(0, dtype=torch.float64)  # [D, QN]
    return (total[:, :B] + total[:, bb:bb + B]).T.div_(W_SCALE)
