"""ELS with torch operations (the CPU, and CUDA without Triton): per window shape, logits are one product of the
batch's windows with a tile of training windows, folded into an exact online softmax.

In base 2 throughout (exp2 is the cheaper exponential): ℓ = log2(e) (2 s <q, w> - ā |w|²) / (2 (1-ā) τ)
+ log2(count), and the product gives it already shifted by the row's running max m (the keys carry |w|², log2
count and 1 as extra columns, the queries -ns, 1 and -m). Per tile of keys: the tile's max, weights 2^(ℓ - m)
floored at EXP_FLOOR (as shifted_exp), and one product of the averaged pixels (plus a row of ones: the
denominator) with the weights.

The keys of a shape are cut into parts of a fixed size; each part is folded into its own state, and the parts'
states are merged in order at the end, so the result does not depend on how many threads ran them. On the CPU
the parts go to `torch.get_num_threads()` worker threads that each run single-threaded operations (or run in the
calling thread, single-threaded, when there is one): no parallel region waits on a core that another process
holds, as torch's own threading would at every operation (10-80x slower on a shared 2-core machine).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from studio.denoisers.budget import memory_budget
from studio.denoisers.cpu_threads import one_thread, run_parts
from studio.denoisers.online_softmax import EXP_FLOOR
from studio.denoisers.windows.geometry import KeyBanks, Keys, ShapeGroup, query_windows

LOG2E = 1.0 / math.log(2.0)
FLOOR2 = EXP_FLOOR * LOG2E  # the same floor as shifted_exp, in base 2
SLACK = 64.0  # a row's shift moves when a logit exceeds it by more than this (base 2; fp32 overflows at 128)
CPU_TILE = 1 << 20  # logits per tile on the CPU (fewer, larger operations win over cache-sized ones)
GPU_TILE = 1 << 26
TILE_KEYS = {"cpu": 1024, "cuda": 8192}  # at most this many keys per tile: the fp32 sums of one product stay short
# (their rounding error grows with their length; the tiles' sums are then added one by one)
PART_LOGITS = 1 << 23  # logits per part of the keys of a kept bank (the unit of work of a thread)
ROW_BLOCK = 2048  # query rows per block (bounds a tile's rows, so it keeps enough keys)
CHUNK_SHARE = 8  # streamed keys: a part takes at most 1/CHUNK_SHARE of the memory budget

def logit_scales(ab: float, temperature: float) -> tuple[float, float]:
    """(query scale, norm scale): ℓ = <qs q, w> - ns |w|² (+ log2 count), base 2."""
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    return 2.0 * math.sqrt(ab) * inv * LOG2E, ab * inv * LOG2E


def els_mean(x: torch.Tensor, banks: KeyBanks, ab: float, temperature: float = 1.0,
             chunk: int | None = None, tile: int | None = None, threads: int | None = None) -> torch.Tensor:
    """x̂0 [B, C, H, W] for x [B, C, H, W] (fp32, on the banks' device). `chunk`: training images per part (None:
    from PART_LOGITS, or the memory budget when the keys are streamed); `tile`: logits per tile; `threads`:
    CPU worker threads (None: torch.get_num_threads())."""
    B, C, H, W = x.shape
    qs, ns = logit_scales(ab, temperature)
    tile = tile or (CPU_TILE if x.device.type == "cpu" else GPU_TILE)
    queries, jobs = [], []
    for i, g in enumerate(banks.groups):
        win = query_windows(x, g)  # [B * P, width]
        R, width = win.shape
        q = torch.empty(R, width + 3, device=x.device)
        torch.mul(win, qs, out=q[:, :width])
        q[:, width], q[:, width + 1], q[:, width + 2] = -ns, 1.0, 0.0
        queries.append(q)
        Q = g.positions(H, W)
        per_part = chunk * Q if chunk else max(1, PART_LOGITS // R) if x.device.type == "cpu" else None
        for make in banks.parts(i, per_part, chunk or _images_per_part(banks, g, x.device)):
            jobs.append((i, make))
    n_vals = [len(g.offsets) * C + 1 for g in banks.groups]
    run = lambda job: fold_part(queries[job[0]], job[1], n_vals[job[0]], tile)  # noqa: E731
    if x.device.type != "cpu":
        states = [run(job) for job in jobs]
    else:
        with one_thread() as available:
            states = run_parts(run, jobs, threads or available)
    out = torch.empty_like(x)
    for i, g in enumerate(banks.groups):
        m, num = merge([s for (j, _), s in zip(jobs, states) if j == i])
        _scatter(out, num[:-1] / num[-1], g)
    return out


def _images_per_part(banks: KeyBanks, g: ShapeGroup, device: torch.device) -> int:
    n, C, H, W = banks.images.shape
    per_image = 4 * g.positions(H, W) * (2 * C * g.kh * g.kw + len(g.offsets) * C + 8)
    return max(1, min(n, memory_budget(device) // CHUNK_SHARE // per_image))


def fold_part(q: torch.Tensor, make: Callable[[], Keys], n_vals: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(m [R], num [V, R]) of one part of the keys for all query rows q [R, width + 3]."""
    keys = make()
    R = q.shape[0]
    m = torch.empty(R, device=q.device)
    num = torch.zeros(n_vals, R, device=q.device)
    for lo in range(0, R, ROW_BLOCK):
        hi = min(lo + ROW_BLOCK, R)
        fold(q[lo:hi].clone(), keys, m[lo:hi], num[:, lo:hi], tile)
    return m, num


def fold(q: torch.Tensor, keys: Keys, m: torch.Tensor, num: torch.Tensor, tile: int) -> None:
    """Fold keys into the shift m [R] and sums num [V, R] of query rows q [R, width + 3] (its last column is
    overwritten with -m), a tile of keys at a time. The shift of a row is the max of its first tile; later tiles
    come out of the product already shifted, and the shift moves only where a logit exceeds it by more than
    SLACK (on the CPU a tile where none does skips that pass). Weights are thus below 2^SLACK (no overflow), and
    every weight the exact running max keeps above the floor is kept (the floor drops weights under
    2^(EXP_FLOOR/ln 2) of the maximum)."""
    R = q.shape[0]
    rows, values_t = keys.rows, keys.values_t
    step = max(16, min(TILE_KEYS.get(q.device.type, 1024), tile // max(R, 1)))
    buf = torch.empty(R * min(step, rows.shape[0]), device=q.device)
    lazy = q.device.type == "cpu"  # asking whether any shift moves would synchronise a GPU
    q[:, -1] = 0.0
    for lo in range(0, rows.shape[0], step):
        hi = min(lo + step, rows.shape[0])
        logits = torch.mm(q, rows[lo:hi].T, out=buf[:R * (hi - lo)].view(R, hi - lo))  # ℓ - m
        if lo == 0:
            torch.amax(logits, 1, out=m)
            logits.sub_(m.unsqueeze(1))
            q[:, -1] = -m
        elif not lazy or logits.max().item() > SLACK:
            top = logits.amax(1)
            grow = torch.where(top > SLACK, top, 0.0)
            logits.sub_(grow.unsqueeze(1))
            m.add_(grow)
            num.mul_(torch.exp2(-grow))
            q[:, -1] = -m
        logits.clamp_min_(FLOOR2)
        torch.exp2(logits, out=logits)
        num.addmm_(values_t[:, lo:hi], logits.T)


def merge(states: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One (m, num) from the states of several parts, in their order (base 2)."""
    m = states[0][0]
    for s, _ in states[1:]:
        m = torch.maximum(m, s)
    num = sum(n * torch.exp2(s - m) for s, n in states)
    return m, num


def _scatter(out: torch.Tensor, mean: torch.Tensor, g: ShapeGroup) -> None:
    """Write each pixel's mean at its own offset: mean [n_off * C, B * P] -> out[:, :, ys, xs]."""
    B, C = out.shape[:2]
    P = g.pixels
    dev = out.device
    mean = mean.reshape(len(g.offsets), C, B, P)
    picked = mean[g.off.to(dev), :, :, torch.arange(P, device=dev)]  # [P, C, B]
    out[:, :, g.ys.to(dev), g.xs.to(dev)] = picked.permute(2, 1, 0)
