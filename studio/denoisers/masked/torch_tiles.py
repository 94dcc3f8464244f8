"""The sparse tiles of a ColumnPlan with plain torch ops (CPU, and GPU without Triton).

For output coordinate m: x̂0[m] = Σ_i softmax_i(-Σ_n M[n, m] (x[n] - s x_i[n])² / (2(1-ā)τ)) x_i[m].
Up to a per-query constant the masked distance of column g is -2 s T[g, i] + ā Q[g, i] with
T = Σ_n M[n, g] x[n] x_i[n] and Q = Σ_n M[n, g] x_i[n]² (the expansion the `optimal` denoiser and the
Triton tiles use, in fp32), so both are matrix products with the mask: for all B queries at once a tile's
T is one GEMM [B·G, |S|] x [|S|, n] of the queries times its signed mask block against its support rows S
of the training data, kept coordinates-first. A tile whose support is most of the inputs multiplies by its
whole mask column block instead (no gather; consecutive such tiles share one GEMM). Q does not depend on
the queries: one GEMM of the squared data with the mask columns, made with the plan (the level's setup)
and kept while small (bounded, least recently used dropped). Tiles are run in
groups of GROUP columns whose logits share one buffer, so each step of the softmax is one op per group;
chunks of training points merge through an exact online log-sum-exp (in base 2: exp2 is the fast exp).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from studio.cache import Recent
from studio.denoisers.budget import memory_budget, rows_that_fit
from studio.denoisers.cpu_threads import one_thread, run_parts
from studio.denoisers.masked.plan import ColumnPlan
from studio.denoisers.online_softmax import EXP_FLOOR
from studio.denoisers.softmax import CPU_PARTS, DataBank, cols_first, even_cuts

GROUP = 64  # columns whose logits share one buffer [GROUP/G, B, G, n]
GROUP_BYTES = 16 * 2**20  # a group's logits on the CPU: the whole data in one chunk when they fit
SQUARES_BYTES = 64 * 2**20  # a plan's Q [n_tiles, G, N] is kept (for its next calls) up to this size,
SQUARES_KEPT_BYTES = 256 * 2**20  # and all plans' Q together up to this size, least recently used dropped
# Cost model of the layout, per training point (measured on this 2-core class of CPU, per core): a GEMM with
# M output rows runs at the GEMM_RATES rate of M (FLOP per ns), and gathering an input row costs GATHER_NS.
GEMM_RATES = ((8, 25.0), (64, 60.0), (128, 65.0), (256, 70.0))  # (up to M rows, FLOP/ns)
GEMM_TALL_RATE = 80.0  # above
GATHER_NS = 0.35
COST_BATCH = 8  # queries the layout is chosen for
LOG2E = 1.0 / math.log(2.0)
_SQUARES = Recent(size=lambda q: q.nbytes, max_bytes=lambda: SQUARES_KEPT_BYTES)  # Q by (plan token, N)


@dataclass
class Run:
    """Consecutive tiles of a group that share one GEMM: every input (rows None), or the gathered support of one
    tile or of several merged into one (the union of their inputs, channels based as for one tile)."""

    first: int                  # tile index within the group
    count: int                  # tiles
    rows: torch.Tensor | None   # long [S]: the inputs read
    block: torch.Tensor         # [count·G, S] float32 mask rows of each column, signed where based; or
                                # [count·G, D] bool, the mask columns themselves (rows None)


@dataclass
class Group:
    """GROUP consecutive columns of a plan (tiles first .. first + n - 1), as the torch path runs them."""

    first: int
    n: int
    cols: torch.Tensor          # long [n·G]: output columns, padding clamped to a real one (its result is dropped)
    mask_t: torch.Tensor        # bool [n·G, D]: the mask columns, for Q
    runs: list[Run]
    based: torch.Tensor | None  # float32 [n, C]: channels whose full products gathered tiles add, or None
    q_by_run: bool = False      # Q from the runs' own blocks and rows (cheaper than from all the mask columns)


def _gemm_ns(rows_out: int, k: int, gathered: bool) -> float:
    """Modelled ns per training point of a GEMM with rows_out output rows over k inputs (plus their gather)."""
    rate = next((r for m, r in GEMM_RATES if rows_out <= m), GEMM_TALL_RATE)
    return k * (2.0 * rows_out / rate + (GATHER_NS if gathered else 0.0))


def _merged(columns: torch.Tensor, real: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile of all these mask columns [M, D]: its support rows, signed block [M, S] and based channels [C], as
    build_plan chooses them (per channel, start from its full distance when fewer inputs are skipped than read)."""
    M, D = columns.shape
    readers = columns.sum(0, dtype=torch.int32)
    read = (readers > 0).view(C, -1)
    skip = (readers < real.sum(dtype=torch.int32)).view(C, -1)
    based = skip.sum(1) < read.sum(1)
    rows = torch.where(based[:, None], skip, read).view(D).nonzero().squeeze(1)
    based_rows = based.repeat_interleave(D // C)[rows]
    block = columns[:, rows].float().sub_((based_rows[None, :] & real[:, None]).float())
    return rows, block, based


def _group_layout(plan: ColumnPlan, first: int, n: int, mask_t: torch.Tensor, counts: list[int]) -> Group:
    """The cheaper (by the cost model) of: the group's tiles one by one (each gathered, or by its whole mask
    block where that costs less; consecutive whole blocks share a GEMM), or all of them merged into one tile."""
    T, G = plan.cols.shape
    D, C = plan.D, plan.channels
    B = COST_BATCH
    dev = plan.cols.device
    runs: list[Run] = []
    based = torch.zeros(n, C, device=dev)
    for k in range(n):
        t = first + k
        if _gemm_ns(B * G, counts[t], True) >= _gemm_ns(B * GROUP, D, False) / max(1, GROUP // G):
            if runs and runs[-1].rows is None and runs[-1].first + runs[-1].count == k:
                runs[-1].count += 1
            else:
                runs.append(Run(k, 1, None, mask_t[t]))
        else:
            runs.append(Run(k, 1, plan.supports[t], plan.blocks[t].T))
            based[k] = plan.based[t].float()
    cost = sum(_gemm_ns(B * G * r.count, D if r.rows is None else r.rows.numel(), r.rows is not None) for r in runs)
    columns = mask_t[first:first + n].reshape(n * G, D)
    if n > 1 and any(r.rows is not None for r in runs):
        real = plan.cols[first:first + n].reshape(-1) < D
        rows, block, channels = _merged(columns, real, C)
        if _gemm_ns(B * G * n, rows.numel(), True) < cost:
            runs = [Run(0, n, rows, block)]
            based = channels.float().expand(n, C).contiguous()
    for r in runs:
        if r.rows is None:
            r.block = columns[r.first * G:(r.first + r.count) * G]
    q_runs = sum(_gemm_ns(G * r.count, D if r.rows is None else r.rows.numel(), r.rows is not None) for r in runs)
    q_whole = D * 2.0 * n * G / GEMM_TALL_RATE  # with the other groups' columns: one tall GEMM
    return Group(first, n, plan.cols[first:first + n].reshape(-1).clamp(max=D - 1), columns, runs,
                 based if bool(based.any()) else None, q_runs < q_whole)


def torch_layout(plan: ColumnPlan) -> list[Group]:
    """The plan's tiles grouped for the torch path, built on first use and kept with the plan."""
    key = ("torch", GROUP, GATHER_NS, GEMM_RATES, GEMM_TALL_RATE)
    if key in plan.packed:
        return plan.packed[key]
    D, C = plan.D, plan.channels
    span = D // C
    T, G = plan.cols.shape
    dev = plan.cols.device
    counts = [rows.numel() for rows in plan.supports]  # host ints
    mask_t = plan.packed.get("columns")  # bool [T, G, D], from build_plan
    if mask_t is None:  # rebuilt: based channels whole (real columns), then the signed rows added
        real = (plan.cols < D).float()
        mask_t = (plan.based.float()[:, None, :, None] * real[:, :, None, None]).expand(T, G, C, span).reshape(T, G, D)
        if sum(counts):
            tile = torch.repeat_interleave(torch.arange(T, device=dev), torch.tensor(counts, device=dev))
            mask_t = _add_rows(mask_t, tile, torch.cat(plan.supports), torch.cat(plan.blocks))
        mask_t = mask_t > 0
    per = max(1, GROUP // G)
    groups = [_group_layout(plan, first, min(per, T - first), mask_t, counts) for first in range(0, T, per)]
    plan.packed[key] = groups
    return groups


def _add_rows(mask_t: torch.Tensor, tile: torch.Tensor, rows: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """mask_t [T, G, D] with blocks [R, G] added at (tile[r], :, rows[r])."""
    T, G, D = mask_t.shape
    flat = mask_t.permute(0, 2, 1).reshape(T * D, G)  # [(t, n), g]
    flat.index_add_(0, tile * D + rows, blocks)
    return flat.view(T, D, G).permute(0, 2, 1)


def chunk_cols_first(bank: DataBank, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points lo:hi coordinates-first [D, n] and their squares: slices of copies kept with the
    bank when they are small, else made for this chunk."""
    xt = cols_first(bank)
    if xt is not None:
        return xt[:, lo:hi], bank.derive("cols-first-squares", lambda: xt * xt)[:, lo:hi]
    xt = bank.x[lo:hi].T.contiguous()
    return xt, xt * xt


def group_squares(grp: Group, xt2: torch.Tensor, channel_sq: torch.Tensor) -> torch.Tensor:
    """Q [n, G, chunk] of a group's tiles from the chunk's squares [D, chunk] (and per-channel sums [C, chunk]):
    one GEMM with all the mask columns, or (q_by_run) one per run with its block on its gathered rows plus the
    sums of the channels its tiles start from."""
    D, n_pts = xt2.shape
    G = grp.cols.numel() // grp.n
    if not grp.q_by_run:
        return torch.mm(grp.mask_t.to(xt2.dtype), xt2).view(grp.n, G, n_pts)
    out = torch.empty(grp.n, G, n_pts, device=xt2.device)
    for run in grp.runs:
        dst = out[run.first:run.first + run.count].view(-1, n_pts)
        block = run.block.to(xt2.dtype)
        torch.mm(block, xt2 if run.rows is None else xt2.index_select(0, run.rows), out=dst)
    if grp.based is not None:
        out.add_(torch.mm(grp.based, channel_sq)[:, None, :])
    return out


def plan_squares(groups: list[Group], xt2: torch.Tensor, channel_sq: torch.Tensor) -> torch.Tensor:
    """Q [n_tiles, G, chunk] of a whole plan: the groups that take it from all their mask columns in one GEMM
    together (a tall GEMM runs faster than one per group), the others run by run."""
    D, n_pts = xt2.shape
    G = groups[0].cols.numel() // groups[0].n
    out = torch.empty(groups[-1].first + groups[-1].n, G, n_pts, device=xt2.device)
    whole = [grp for grp in groups if not grp.q_by_run]
    if whole:
        q = torch.mm(torch.cat([grp.mask_t for grp in whole]).to(xt2.dtype), xt2)
        at = 0
        for grp in whole:
            out[grp.first:grp.first + grp.n] = q[at:at + grp.n * G].view(grp.n, G, n_pts)
            at += grp.n * G
    for grp in groups:
        if grp.q_by_run:
            out[grp.first:grp.first + grp.n] = group_squares(grp, xt2, channel_sq)
    return out


def kept_squares(plan: ColumnPlan, bank: DataBank, threads: int = 1) -> torch.Tensor | None:
    """The plan's Q [n_tiles, G, N] over all the data, made on first use and kept (bounded, least recently used
    dropped) while it takes at most SQUARES_BYTES; None when it is larger (each chunk then forms its own). On the
    CPU made as CPU_PARTS slices of the data on up to `threads` workers (the same numbers: slices of columns)."""
    T, G = plan.cols.shape
    if not T or 4 * T * G * bank.n > min(SQUARES_BYTES, memory_budget(bank.x.device) // 8):
        return None

    def make() -> torch.Tensor:
        groups, xt2 = torch_layout(plan), chunk_cols_first(bank, 0, bank.n)[1]  # [D, N] squares
        sums = bank.channel_sq_norms(plan.channels)  # [C, N]
        cuts = even_cuts(bank.n, CPU_PARTS if bank.x.device.type == "cpu" else 1)
        parts = run_parts(lambda c: plan_squares(groups, xt2[:, c[0]:c[1]], sums[:, c[0]:c[1]]), cuts, threads)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 2)

    key = (plan.packed.setdefault("torch-token", object()), bank.n)  # the token lives as long as the plan
    return _SQUARES.get_or_make(key, make)


def prepare(plan: ColumnPlan, bank: DataBank) -> None:
    """Build what a plan's calls share (the grouped layout, and Q when it is kept) ahead of the first call, so
    that a run counts it as the noise level's setup."""
    if bank.x.device.type != "cpu":
        torch_layout(plan)
        kept_squares(plan, bank)
        return
    with one_thread() as threads:
        torch_layout(plan)
        kept_squares(plan, bank, threads)


def tiles_posterior_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float, chunk: int | None
) -> torch.Tensor:
    """Per-tile softmax means [B, n_tiles, G] with plain torch ops, chunked over the training points. On the CPU
    the groups of a chunk go to single-threaded workers (cpu_threads), as many as torch's thread count."""
    if x.device.type != "cpu":
        return _tiles_mean(x, bank, plan, ab, temperature, chunk, 1)
    with one_thread() as threads:
        return _tiles_mean(x, bank, plan, ab, temperature, chunk, threads)


def _tiles_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float, chunk: int | None,
    threads: int,
) -> torch.Tensor:
    B, D = x.shape
    n_tiles, G = plan.cols.shape
    N = bank.n
    C = plan.channels
    span = D // C
    s = math.sqrt(ab)
    inv = LOG2E / (2.0 * (1.0 - ab) * temperature)
    a, q = 2.0 * s * inv, ab * inv  # base-2 logit = a T - q Q
    groups = torch_layout(plan)
    width = max(g.n for g in groups) * G
    per_row = 4 * (2 * B * width + 2 * width + 2 * D)  # logits, Q and values of a group, the chunk's columns
    if chunk is None and x.device.type == "cpu":
        chunk = max(256, GROUP_BYTES // (4 * B * width))
    step = rows_that_fit(per_row, 0, x.device, "denoiser: masked softmax chunk", chunk or N)
    squares = kept_squares(plan, bank, threads)
    xa = x * a
    any_based = any(g.based is not None for g in groups)
    m = torch.empty(n_tiles, B, G, device=x.device)
    den = torch.empty_like(m)
    num = torch.empty_like(m)
    floor = EXP_FLOOR * LOG2E
    buffers: dict[int, torch.Tensor] = {}  # one per worker thread, for all its groups: fresh pages cost
    for lo in range(0, N, step):
        hi = min(lo + step, N)
        xt, xt2 = chunk_cols_first(bank, lo, hi)
        own_q = squares is None and 4 * n_tiles * G * (hi - lo) > GROUP_BYTES  # each group forms its Q here
        if squares is None and not own_q:  # this chunk's Q of the whole plan
            chunk_sq = plan_squares(groups, xt2, bank.channel_sq_norms(C)[:, lo:hi])
        if any_based:  # a Σ_k <x_c, x_i,c> per channel c: [C, B·n]
            bases = torch.empty(C, B, hi - lo, device=x.device)
            run_parts(lambda c: torch.mm(xa[:, c * span:(c + 1) * span], xt[c * span:(c + 1) * span], out=bases[c]),
                      range(C), threads)
            bases = bases.view(C, -1)

        def fold(grp: Group) -> None:
            """Add the chunk's training points to the group's running max, denominators and numerators."""
            t0, t1 = grp.first, grp.first + grp.n
            buffer = buffers.get(threading.get_ident())
            if buffer is None:
                buffer = buffers[threading.get_ident()] = torch.empty(width * B * min(step, N), device=x.device)
            logits = buffer[:grp.n * B * G * (hi - lo)].view(grp.n, B, G, hi - lo)
            flat = logits.view(grp.n * B * G, hi - lo)
            sq = torch.empty(grp.n, G, hi - lo, device=x.device) if own_q and grp.q_by_run else None
            for run in grp.runs:
                out = flat[run.first * B * G:(run.first + run.count) * B * G]
                q_out = None if sq is None else sq[run.first:run.first + run.count].view(-1, hi - lo)
                if run.rows is None:  # [count, B, G, D] weights, whole inputs
                    w = xa[None, :, None, :] * run.block.view(run.count, 1, G, D)  # bool block: 0 or x
                    torch.mm(w.reshape(-1, D), xt, out=out)
                    if q_out is not None:
                        torch.mm(run.block.to(xt2.dtype), xt2, out=q_out)
                else:  # weights [count, B, G, S] on the gathered rows
                    rows_t = xt.index_select(0, run.rows)
                    w = xa[:, run.rows][None, :, None, :] * run.block.view(run.count, 1, G, -1)
                    torch.mm(w.reshape(run.count * B * G, -1), rows_t, out=out)
                    if q_out is not None:  # Q from the rows just gathered, squared
                        torch.mm(run.block, rows_t.square_(), out=q_out)
            if squares is not None:
                sq = squares[t0:t1, :, lo:hi]
            elif not own_q:
                sq = chunk_sq[t0:t1]
            elif sq is None:
                sq = group_squares(grp, xt2, bank.channel_sq_norms(C)[:, lo:hi])
            elif grp.based is not None:
                sq.add_(torch.mm(grp.based, bank.channel_sq_norms(C)[:, lo:hi])[:, None, :])
            logits.sub_(sq[:, None], alpha=q)
            if grp.based is not None:
                logits.add_(torch.mm(grp.based, bases).view(grp.n, B, 1, hi - lo))
            top = flat.amax(1)
            if lo:
                top = torch.maximum(top, m[t0:t1].reshape(-1))
            flat.sub_(top[:, None]).clamp_min_(floor).exp2_()
            part_den = flat.sum(1)
            logits.mul_(xt.index_select(0, grp.cols).view(grp.n, 1, G, hi - lo))
            part_num = flat.sum(1)
            if lo:
                scale = torch.exp2(m[t0:t1].reshape(-1) - top)
                part_den = den[t0:t1].reshape(-1) * scale + part_den
                part_num = num[t0:t1].reshape(-1) * scale + part_num
            m[t0:t1] = top.view(grp.n, B, G)
            den[t0:t1] = part_den.view(grp.n, B, G)
            num[t0:t1] = part_num.view(grp.n, B, G)

        run_parts(fold, groups, threads)
    return (num / den).transpose(0, 1)
