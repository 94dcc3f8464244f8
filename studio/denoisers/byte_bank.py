"""Training data that came from 8-bit images, kept as their 8-bit codes on the device (a quarter of float32).

Such data take at most 256 values per coordinate, an affine map of the code: v = a (c - 128) + b with
c in 0..255 (for codes/127.5 - 1: a = 2/255, b = 1/255). Every sum the softmax denoisers need folds the map
in, so the codes are never decoded as a whole:

    <x, v_i>  = a <x, c_i - 128> + b Σ_d x_d
    ||v_i||²  = a² Σ (c_i - 128)² + 2ab Σ (c_i - 128) + D b²      (exact integer sums, then float64)
    Σ w_i v_i = a Σ w_i (c_i - 128) + b Σ w_i

On a GPU the Triton kernels of softmax_triton read the codes as they are (c - 128 is exact in int8 and
fp16): the dot products <x, c_i - 128> exactly, in integers, the weighted sum in fp32-accurate fp16 halves.
Elsewhere (CPU, no Triton) chunks are decoded to float64 for the same GEMMs as DataBank. Either way the
logits are accumulated beyond float32 (float64 from there on, squared norms included), so 8-bit storage
is closer to the float64 reference than float32 storage is: the exact map differs from each stored float32
value by at most half a unit in the last place, less than the rounding of an fp32 GEMM over D coordinates.
Rows handed back as data (the nearest neighbour, its distance) are looked up in the 256 values the data
actually hold, so they equal the float32 data bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from studio.data.codes import host_fits
from studio.data.dataset import Dataset
from studio.denoisers.budget import gib, require
from studio.denoisers.kernels import use_triton
from studio.denoisers.online_softmax import OnlineSoftmax, RunningTopK, shifted_exp
from studio.denoisers.softmax import _CHUNK_BYTES, DataBank, Posterior, weighted_rows

STORAGES = ("auto", "float32", "uint8")
ZERO = 128  # the code subtracted before every product: c - 128 in -128..127 is exact in int8 and fp16
_BLOCK_BYTES = 64 * 2**20  # float32 bytes of data converted or summed at once (never a copy of all of it)
_VALUE_TOL = 4e-7  # how far a float32 value may lie from the exact map: rounding of 2c/255 - 1, with room


@dataclass
class ByteBank:
    """Training data on the device as uint8 codes [N, D] decoding to a (c - 128) + b, with squared norms."""

    codes: torch.Tensor     # uint8 [N, D]
    scale: float            # a
    offset: float           # b
    table: torch.Tensor     # float32 [256]: the value of each code as the data hold it (rows decode through it)
    sq_norms: torch.Tensor  # float64 [N]: ||v_i||² of the exact map, from integer sums
    kernel: str = "auto"    # auto: Triton on CUDA where it imports, else chunked torch; or force either

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: float, offset: float, device: torch.device,
                   table: torch.Tensor | None = None) -> "ByteBank":
        """Codes [N, D] (uint8, anywhere) moved to `device` with their squared norms; refused up front (a
        ValueError naming the size) when they do not fit the device's memory budget."""
        device = torch.device(device)
        N, D = codes.shape
        if codes.device != device:
            require_codes(N, D, device)
        codes = codes.to(device=device, dtype=torch.uint8).contiguous()
        if table is None:
            table = exact_table(scale, offset)
        return cls(codes, scale, offset, table.to(device, torch.float32), code_sq_norms(codes, scale, offset))

    @classmethod
    def from_values(cls, x: torch.Tensor, device: torch.device, levels: int = 255) -> "ByteBank | None":
        """The float data [N, D] as codes when every value is float32 of 2c/levels - 1 for a whole c in
        0..levels (within rounding, one value per code, checked block by block on `device`), else None."""
        device = torch.device(device)
        N, D = x.shape
        scale = 2.0 / levels
        offset = ZERO * scale - 1.0
        rows = max(1, _BLOCK_BYTES // (4 * D))
        first = _encode_block(x[:rows], device, scale, offset, levels)  # a quick refusal before allocating
        if first is None:
            return None
        require_codes(N, D, device)
        codes = torch.empty(N, D, dtype=torch.uint8, device=device)
        low = torch.full((256,), math.inf, device=device)
        high = torch.full((256,), -math.inf, device=device)
        for lo in range(0, N, rows):
            got = first if lo == 0 else _encode_block(x[lo:lo + rows], device, scale, offset, levels)
            if got is None:
                return None
            c, v = got
            codes[lo:lo + rows] = c
            idx = c.reshape(-1).long()
            low.scatter_reduce_(0, idx, v.reshape(-1), "amin")
            high.scatter_reduce_(0, idx, v.reshape(-1), "amax")
        seen = torch.isfinite(low)
        if not torch.equal(low[seen], high[seen]):
            return None  # one code would stand for two different values
        table = torch.where(seen, low, exact_table(scale, offset).to(device))
        return cls(codes, scale, offset, table, code_sq_norms(codes, scale, offset))

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The data rows at `idx` (any shape) as float32 [*idx.shape, D], equal to the stored values."""
        return self.table[self.codes[idx].long()]

    def centred(self, lo: int, hi: int) -> torch.Tensor:
        """Rows lo:hi as float64 c - 128 [hi - lo, D]."""
        return self.codes[lo:hi].to(torch.float64).sub_(ZERO)

    def uses_triton(self) -> bool:
        return use_triton(self.device, self.kernel)

    def posterior_mean(self, x: torch.Tensor, ab: float, temperature: float = 1.0, chunk: int | None = None,
                       k: int = 8) -> Posterior:
        """Σ_i softmax_i(ℓ) v_i over all N points for each row of x [B, D] (softmax.posterior_mean's contract)."""
        if self.uses_triton():
            return _triton_posterior(self, x, ab, temperature, k)
        return _torch_posterior(self, x, ab, temperature, chunk, k)

    def nearest_rows(self, x: torch.Tensor, ab: float, chunk: int | None = None,
                     k: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices and squared distances ||x - s v_i||² of the k closest rows, best first."""
        s = ab**0.5
        if self.uses_triton():
            idx = _triton_nearest(self, x, ab, k)
        else:
            B = x.shape[0]
            step = chunk_rows(B, x.shape[1], self.n, chunk)
            top = RunningTopK(B, min(k, self.n), x.device)
            x64 = x.double()
            xsum = x64.sum(1, keepdim=True)
            for lo in range(0, self.n, step):
                hi = min(lo + step, self.n)
                top.add(scores(x64, xsum, self, lo, hi, self.centred(lo, hi), s, ab), lo)
            idx = top.index
        dist = ((x.unsqueeze(1) - s * self.rows(idx)) ** 2).sum(-1)
        return idx, dist


def require_codes(N: int, D: int, device: torch.device) -> None:
    """Refuse (ValueError naming the size) codes [N, D] that would not fit beside their norms and work blocks."""
    if device.type == "cpu":
        return  # the CPU budget bounds working memory, not the data the process already holds
    require(N * D + 8 * N + 4 * _BLOCK_BYTES, device,
            f"the training data resident on {device.type} as 8-bit codes ({N:,} points x {D:,} coordinates as "
            f"uint8 = {gib(N * D)})")


def exact_table(scale: float, offset: float) -> torch.Tensor:
    """float32 of a (c - 128) + b for c = 0..255, each correctly rounded from float64."""
    return (torch.arange(256, dtype=torch.float64).sub(ZERO).mul(scale).add(offset)).float()


def _encode_block(x: torch.Tensor, device: torch.device, scale: float, offset: float,
                  levels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(uint8 codes, float32 values) of one block on `device`, or None where a value is not a code's."""
    v = x.to(device=device, dtype=torch.float32)
    c = torch.round((v - offset) / scale + ZERO)
    ok = bool(((c >= 0) & (c <= levels)).all()) and float(((c - ZERO) * scale + offset - v).abs().max()) <= _VALUE_TOL
    return (c.to(torch.uint8), v) if ok else None


def code_sq_norms(codes: torch.Tensor, scale: float, offset: float) -> torch.Tensor:
    """float64 [N]: ||a (c_i - 128) + b||² from the exact integer sums Σ(c - 128)² and Σ(c - 128), in blocks."""
    N, D = codes.shape
    rows = max(1, _BLOCK_BYTES // (4 * D))
    out = torch.empty(N, dtype=torch.float64, device=codes.device)
    for lo in range(0, N, rows):
        c = codes[lo:lo + rows].to(torch.int32).sub_(ZERO)  # [rows, D]
        s1 = c.sum(1, dtype=torch.int64).double()
        s2 = (c * c).sum(1, dtype=torch.int64).double()
        out[lo:lo + rows] = scale * scale * s2 + 2 * scale * offset * s1 + D * offset * offset
    return out


def chunk_rows(batch: int, dim: int, n: int, chunk: int | None) -> int:
    """Rows per chunk of the torch path: the caller's choice, else what keeps the decoded chunk [rows, D] and
    the [B, rows] temporaries (float64) under budget."""
    if chunk:
        return max(1, min(chunk, n))
    return max(1, min(n, _CHUNK_BYTES // (8 * dim + 24 * max(batch, 1))))


def scores(x: torch.Tensor, xsum: torch.Tensor, bank: ByteBank, lo: int, hi: int, c: torch.Tensor,
           s: float, ab: float) -> torch.Tensor:
    """2 s <x, v_i> - ā ||v_i||² [B, hi - lo] float64 for the rows lo:hi, their codes c - 128 given as float64,
    x [B, D] float64 and xsum = Σ_d x [B, 1]."""
    base = (2 * s * bank.offset) * xsum - ab * bank.sq_norms[lo:hi].unsqueeze(0)  # [B, n]
    return torch.addmm(base, x, c.T, alpha=2 * s * bank.scale)


def _torch_posterior(bank: ByteBank, x: torch.Tensor, ab: float, temperature: float, chunk: int | None,
                     k: int) -> Posterior:
    """Chunks decoded to float64 c - 128, one GEMM each (float64 logits, rounded to float32 for the exact online
    softmax of softmax.posterior_mean)."""
    B, D = x.shape
    s = ab**0.5
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    step = chunk_rows(B, D, bank.n, chunk)
    acc = OnlineSoftmax((B,), (D,), x.device, squares=True)
    top = RunningTopK(B, min(k, bank.n), x.device)
    x64 = x.double()
    xsum = x64.sum(1, keepdim=True)
    for lo in range(0, bank.n, step):
        hi = min(lo + step, bank.n)
        c = bank.centred(lo, hi)
        logits = (scores(x64, xsum, bank, lo, hi, c, s, ab) * inv).float()
        acc.add(logits, lambda w: weighted_rows(w.double(), c).float())
        top.add(logits, lo)
    lse = acc.log_normaliser()
    mean = (acc.num.double() / acc.den.double()[:, None] * bank.scale + bank.offset).float()
    return Posterior(mean, torch.exp(top.values - lse[:, None]), top.index, acc.effective_count())


def _triton_scores(bank: ByteBank, x: torch.Tensor, ab: float) -> torch.Tensor:
    """2 s <x, v_i> - ā ||v_i||² [B, N] float64 from one pass of the Triton dot kernel over the codes."""
    from studio.denoisers import softmax_triton  # imports triton: only where it runs

    s = ab**0.5
    dots = softmax_triton.code_dots(bank.codes, x)  # [B, N] float64: <x, c_i - 128>
    base = (2 * s * bank.offset) * x.double().sum(1, keepdim=True)  # [B, 1]
    return dots.mul_(2 * s * bank.scale).add_(base).sub_(bank.sq_norms.unsqueeze(0), alpha=ab)


def _triton_posterior(bank: ByteBank, x: torch.Tensor, ab: float, temperature: float, k: int) -> Posterior:
    """Two passes over the codes: the logits of all N points (one kernel, exact dot products), then
    Σ w_i (c_i - 128) over the blocks of points whose weight is not below the exp floor for every query (a
    second kernel); max, denominator, Σw² and top-k come from the [B, N] float64 logits in between."""
    from studio.denoisers import softmax_triton

    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    require(softmax_triton.step_bytes(bank.n, bank.codes.shape[1], x.shape[0]), bank.device,
            f"denoiser: the 8-bit kernels' per-step arrays ({bank.n:,} points x {x.shape[0]} queries)")
    logits = _triton_scores(bank, x, ab).mul_(inv)  # [B, N] float64
    m = logits.amax(1, keepdim=True)
    w = shifted_exp(logits, m)
    den = w.sum(1)
    sq = (w * w).sum(1)
    num = softmax_triton.weighted_code_sums(bank.codes, w)  # [B, D]: Σ w_i (c_i - 128)
    mean = (num.double() / den[:, None] * bank.scale + bank.offset).float()
    top_v, top_i = logits.topk(min(k, bank.n), dim=1)
    lse = m[:, 0] + torch.log(den)
    return Posterior(mean, torch.exp(top_v - lse[:, None]).float(), top_i, (den**2 / sq).float())


def _triton_nearest(bank: ByteBank, x: torch.Tensor, ab: float, k: int) -> torch.Tensor:
    """The k best scores' indices [B, k], best first; among equal best scores the lowest index comes first."""
    from studio.denoisers import softmax_triton

    require(softmax_triton.step_bytes(bank.n, bank.codes.shape[1], x.shape[0], sums=False), bank.device,
            f"denoiser: the 8-bit kernels' per-step arrays ({bank.n:,} points x {x.shape[0]} queries)")
    sc = _triton_scores(bank, x, ab)  # [B, N] float64
    top_v, top_i = sc.topk(min(k, bank.n), dim=1)
    top_i, order = top_i.sort(dim=1)  # within the top k: by score, then by index
    top_v = top_v.gather(1, order)
    top_v, order = top_v.sort(dim=1, descending=True, stable=True)
    top_i = top_i.gather(1, order)
    top_i[:, 0] = (sc == top_v[:, :1]).to(torch.int32).argmax(1)  # the first of all rows with the best score
    return top_i


# auto keeps 8-bit data as codes on a GPU from this float32 size up: below it cuBLAS on float32 is faster (H200,
# 3x32x32 N=50,000 = 0.6 GB: optimal 0.75 ms/step float32, 2.47 uint8), above it the codes are (3x64x64
# N=100,000 = 4.9 GB: 3.92 ms float32, 2.38 uint8), and they are a quarter of the memory.
AUTO_UINT8_MIN_BYTES = 2 * 2**30


def data_bank(dataset: Dataset, device: torch.device, storage: str = "auto") -> DataBank | ByteBank:
    """The training data [N, D] on `device` as the softmax denoisers keep them: 8-bit codes (ByteBank) when
    `storage` is uint8, or auto on a GPU for data from 8-bit images of at least AUTO_UINT8_MIN_BYTES as float32
    (or anywhere when their float32 view would not fit the host); else float32 (DataBank). A dataset that
    carries its codes goes to the device as codes: no float32 copy of it is made, on the host or the device."""
    if storage not in STORAGES:
        raise ValueError(f"denoiser.storage: {storage!r} is not allowed; choose one of: {', '.join(STORAGES)}")
    device = torch.device(device)
    codes = dataset.codes
    if storage == "auto" and not _auto_uint8(dataset, device):
        storage = "float32"
    if storage == "float32":
        return DataBank.from_dataset(dataset, device)
    if codes is not None:
        flat = codes.codes.reshape(dataset.n, -1)  # [N, D] uint8: a view unless gray codes stand for RGB
        offset = (2 * ZERO - codes.levels) / codes.levels  # a (c - 128) + b = 2c/levels - 1
        return ByteBank.from_codes(flat, codes.scale, offset, device, table=codes.table)
    bank = ByteBank.from_values(dataset.flat(), device)
    if bank is not None:
        return bank
    if storage == "uint8":
        raise ValueError("denoiser.storage: uint8 keeps data that came from 8-bit images (every value float32 of "
                         "c/127.5 - 1 for a whole c in 0..255), and these data are not; choose auto or float32")
    return DataBank.from_dataset(dataset, device)


def _auto_uint8(dataset: Dataset, device: torch.device) -> bool:
    """Whether auto storage tries 8-bit codes: on a GPU from AUTO_UINT8_MIN_BYTES of float32 (sized from the codes
    where the dataset has them), and anywhere for codes whose float32 view would not fit the host."""
    float_bytes = 4 * dataset.n * dataset.dim
    if dataset.codes is not None and not host_fits(float_bytes):
        return True
    return device.type == "cuda" and float_bytes >= AUTO_UINT8_MIN_BYTES


def bank_rows(bank: DataBank | ByteBank, idx: torch.Tensor) -> torch.Tensor:
    """Data rows at `idx` as float32, from either kind of bank."""
    return bank.rows(idx) if isinstance(bank, ByteBank) else bank.x[idx]
