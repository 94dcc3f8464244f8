"""Clipped windows grouped by shape, the batch's windows as query rows, and the training windows as keys.

A pixel's window is the k x k window centred on it, clipped to the image: shape (kh, kw), and the pixel sits at
offset (up, left) inside it. ELS compares it with every window of that shape lying wholly inside a training
image and averages the training pixel at the same offset. So all pixels of one shape share their candidates
(the keys); only the offset of the averaged pixel differs (top or bottom border, left or right: at most 4
offsets per shape, unless the window is as tall or as wide as the image, when every row or column has its own).
Identical training windows are one key with a multiplicity: log2(count) joins its logit, which is exact
(count · e^ℓ = e^(ℓ + ln count)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class ShapeGroup:
    """The pixels whose clipped window has shape (kh, kw)."""

    kh: int
    kw: int
    ys: torch.Tensor       # long [P]: pixel rows
    xs: torch.Tensor       # long [P]: pixel columns
    tops: torch.Tensor     # long [P]: the window's first row (y - up)
    lefts: torch.Tensor    # long [P]: the window's first column (x - left)
    off: torch.Tensor      # long [P]: index of the pixel's (up, left) in `offsets`
    offsets: tuple[tuple[int, int], ...]  # distinct (up, left) of the group

    @property
    def pixels(self) -> int:
        return self.ys.numel()

    def positions(self, H: int, W: int) -> int:
        """Q: windows of this shape inside one image."""
        return (H - self.kh + 1) * (W - self.kw + 1)

    def value_columns(self, C: int) -> torch.Tensor:
        """long [n_off * C]: the columns of a flattened window [C, kh, kw] holding the pixel at each offset,
        offset-major."""
        return torch.tensor([c * self.kh * self.kw + up * self.kw + left
                             for up, left in self.offsets for c in range(C)], dtype=torch.long)


@functools.lru_cache(maxsize=64)
def shape_groups(H: int, W: int, k: int) -> tuple[ShapeGroup, ...]:
    """The pixels of an H x W image grouped by the shape of their clipped k x k window (CPU tensors)."""
    h = k // 2
    found: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for y in range(H):
        up, down = min(h, y), min(h, H - 1 - y)
        for x in range(W):
            left, right = min(h, x), min(h, W - 1 - x)
            found.setdefault((up + down + 1, left + right + 1), []).append((y, x, up, left))
    groups = []
    for (kh, kw), pix in found.items():
        offsets = tuple(sorted({(u, l) for _, _, u, l in pix}))
        t = torch.tensor(pix, dtype=torch.long)
        off = torch.tensor([offsets.index((u, l)) for _, _, u, l in pix], dtype=torch.long)
        groups.append(ShapeGroup(kh, kw, t[:, 0], t[:, 1], t[:, 0] - t[:, 2], t[:, 1] - t[:, 3], off, offsets))
    return tuple(groups)


def query_windows(x: torch.Tensor, g: ShapeGroup) -> torch.Tensor:
    """[B * P, C * kh * kw]: each pixel's clipped window, batch-major (row b * P + p)."""
    B, C = x.shape[:2]
    win = x.unfold(2, g.kh, 1).unfold(3, g.kw, 1)  # [B, C, qy, qx, kh, kw]
    dev = x.device
    win = win[:, :, g.tops.to(dev), g.lefts.to(dev)]  # [B, C, P, kh, kw]
    return win.permute(0, 2, 1, 3, 4).reshape(B * g.pixels, C * g.kh * g.kw)


def image_windows(images: torch.Tensor, g: ShapeGroup) -> torch.Tensor:
    """[n * Q, C * kh * kw]: every window of the group's shape inside each image (image-major)."""
    n, C = images.shape[:2]
    win = images.unfold(2, g.kh, 1).unfold(3, g.kw, 1)  # [n, C, qy, qx, kh, kw]
    return win.permute(0, 2, 3, 1, 4, 5).reshape(n * g.positions(*images.shape[2:]), C * g.kh * g.kw)


@dataclass
class Keys:
    """Training windows of one shape as keys: rows [M, width + 3] = (window, |w|², log2 multiplicity, 1), so one
    product with a query row (qs q, -ns, 1, -m) gives its logit minus a shift m; and the averaged pixels
    transposed [n_off * C + 1, M], offset-major, with a last row of ones (the denominator comes out of the same
    product as the numerators)."""

    rows: torch.Tensor
    values_t: torch.Tensor

    @property
    def n(self) -> int:
        return self.rows.shape[0]

    def nbytes(self) -> int:
        return 4 * (self.rows.numel() + self.values_t.numel())

    def slice(self, lo: int, hi: int) -> "Keys":
        return Keys(self.rows[lo:hi], self.values_t[:, lo:hi])

    @classmethod
    def build(cls, windows: torch.Tensor, g: ShapeGroup, C: int, dedup: bool) -> "Keys":
        M, width = windows.shape
        counts = None
        if dedup:
            windows, counts = distinct_rows(windows)
            M = windows.shape[0]
        rows = torch.empty(M, width + 3, device=windows.device)
        rows[:, :width] = windows
        step = max(1, _HASH_BLOCK // max(width, 1))
        for lo in range(0, M, step):  # |w|² summed in float64 a block of rows at a time
            rows[lo:lo + step, width] = (windows[lo:lo + step].double() ** 2).sum(1).float()
        rows[:, width + 1] = torch.log2(counts.float()) if counts is not None else 0.0
        rows[:, width + 2] = 1.0
        cols = g.value_columns(C).to(windows.device)
        values_t = torch.cat([windows[:, cols].T, torch.ones(1, M, device=windows.device)]).contiguous()
        return cls(rows, values_t)


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of x [M, D] and how often each occurs. Rows are sorted by a hash of their bits and equal
    neighbours merged (only equal rows merge; a hash collision merely leaves a duplicate unmerged). Much
    faster than torch.unique(dim=0), which sorts the rows lexicographically."""
    M, D = x.shape
    x = x + 0.0  # -0.0 becomes +0.0: equal values, equal bits
    mult = torch.randint(1, 1 << 20, (D,), generator=torch.Generator().manual_seed(D)).to(x.device)
    h = torch.zeros(M, dtype=torch.long, device=x.device)
    rows = max(1, _HASH_BLOCK // max(D, 1))
    for r0 in range(0, M, rows):
        bits = x[r0:r0 + rows].view(torch.int32).long() & 0xFFFFFFFF  # each < 2^32
        for lo in range(0, D, 1024):  # < 2^52 per product, < 2^62 per block of 1024 columns: no overflow
            h[r0:r0 + rows] = (h[r0:r0 + rows] + (bits[:, lo:lo + 1024] * mult[lo:lo + 1024]).sum(1)) % _PRIME
    order = torch.sort(h, stable=True).indices
    x = x[order]
    first = torch.ones(M, dtype=torch.bool, device=x.device)
    first[1:] = (x[1:] != x[:-1]).any(1)
    starts = first.nonzero().squeeze(1)
    counts = torch.diff(starts, append=torch.tensor([M], device=x.device))
    return x[starts], counts


_PRIME = (1 << 61) - 1
_HASH_BLOCK = 1 << 22  # coordinates hashed at once (bounds the int64 temporaries)


def key_bytes(images: torch.Tensor, k: int) -> int:
    """Bytes the keys of every shape of patch size k take before deduplication."""
    n, C, H, W = images.shape
    total = 0
    for g in shape_groups(H, W, k):
        width = C * g.kh * g.kw
        total += 4 * n * g.positions(H, W) * (width + 4 + len(g.offsets) * C)
    return total


class KeyBanks:
    """The keys of every shape of one patch size: built once (deduplicated) when they fit `budget` bytes, else
    cut from the images chunk by chunk at every call (nothing kept)."""

    def __init__(self, images: torch.Tensor, k: int, budget: int) -> None:
        self.images = images
        self.k = k
        self.groups = shape_groups(images.shape[2], images.shape[3], k)
        self.kept: dict[int, Keys] | None = None
        if key_bytes(images, k) <= budget:
            C = images.shape[1]
            self.kept = {i: Keys.build(image_windows(images, g), g, C, dedup=True) for i, g in enumerate(self.groups)}

    def nbytes(self) -> int:
        return sum(k.nbytes() for k in self.kept.values()) if self.kept else 0

    def parts(self, i: int, keys_per_part: int | None, images_per_part: int) -> list[Callable[[], Keys]]:
        """The keys of shape group i in parts, each made when called: slices of the kept keys (`keys_per_part`
        rows each; None: one part), or the windows of `images_per_part` images cut at the call."""
        g = self.groups[i]
        if self.kept is not None:
            keys = self.kept[i]
            step = max(1, keys_per_part or keys.n)
            return [functools.partial(keys.slice, lo, min(lo + step, keys.n)) for lo in range(0, keys.n, step)]
        n, C = self.images.shape[:2]
        step = max(1, images_per_part)
        return [functools.partial(lambda lo: Keys.build(image_windows(self.images[lo:lo + step], g), g, C, False), lo)
                for lo in range(0, n, step)]
