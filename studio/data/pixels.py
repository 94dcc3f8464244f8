"""Deterministic pixels for the bundled datasets: integer codes 0..levels through crop and antialiased resize
(14-bit fixed point), so no CPU, thread count or library version can change a bit of a build."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from studio.data.imageopts import center_square, select_indices

BITS = 14  # fixed-point precision of the resampling weights
LUMA_PERMILLE = (299, 587, 114)  # ITU-R BT.601, the same weights as imageopts.LUMA, as exact integers


def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and float64 weights [n_out, T] (rows sum to 1) of antialiased bilinear resampling: the
    triangle filter widened by the shrink factor, as in PIL's and torch's antialiased bilinear resize."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    rows = []
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        weights = [max(0.0, 1.0 - abs((j + 0.5 - centre) / support)) for j in range(lo, hi)]
        total = sum(weights)
        rows.append((lo, [w / total for w in weights]))
    width = max(len(w) for _, w in rows)
    index = np.zeros((n_out, width), dtype=np.int64)
    weight = np.zeros((n_out, width))
    for i, (lo, w) in enumerate(rows):
        index[i, :len(w)] = np.arange(lo, lo + len(w))
        weight[i, :len(w)] = w
    return index, weight


def _fixed(weight: np.ndarray) -> np.ndarray:
    """Weights as integers summing exactly to 2**BITS per row (the largest tap absorbs the rounding)."""
    q = np.rint(weight * (1 << BITS)).astype(np.int64)
    q[np.arange(len(q)), q.argmax(1)] += (1 << BITS) - q.sum(1)
    return q


def _along(x: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Apply per-output taps along `axis` in a fixed order (exact for integers, fixed-order for floats)."""
    axis %= x.ndim
    shape = [1] * x.ndim
    shape[axis] = len(index)
    acc = np.zeros(x.shape[:axis] + (len(index),) + x.shape[axis + 1:], dtype=weight.dtype)
    for t in range(index.shape[1]):
        acc += np.take(x, index[:, t], axis=axis) * weight[:, t].reshape(shape)
    return acc


def resize(planes: np.ndarray, height: int, width: int, levels: int | None) -> np.ndarray:
    """[N, C, H, W] -> [N, C, height, width]: codes 0..levels become 8-bit codes (rounded half up);
    floats (levels None) stay float64."""
    (iy, wy), (ix, wx) = taps(planes.shape[-2], height), taps(planes.shape[-1], width)
    if levels is None:
        return _along(_along(planes.astype(np.float64), -2, iy, wy), -1, ix, wx)
    acc = _along(_along(planes.astype(np.int64), -2, iy, _fixed(wy)), -1, ix, _fixed(wx))
    scale = levels << (2 * BITS)  # acc / scale is the filtered value in [0, 1]
    return ((2 * 255 * acc + scale) // (2 * scale)).astype(np.uint8)


def crop_resize(planes: np.ndarray, resolution: int, levels: int | None) -> tuple[np.ndarray, int | None]:
    """Centre-crop to a square, then resize to resolution x resolution; returns the planes and their levels."""
    top, left, side = center_square(*planes.shape[-2:])
    planes = planes[..., top:top + side, left:left + side]
    if side == resolution:
        return np.ascontiguousarray(planes), levels
    return resize(planes, resolution, resolution, levels), None if levels is None else 255


def _table(denominator: int) -> torch.Tensor:
    """float32 of 2 n / denominator - 1 for n = 0..denominator (and on to 255, so any uint8 code indexes it), each
    step correctly rounded in float64."""
    n = np.arange(max(denominator + 1, 256), dtype=np.float64)
    return torch.from_numpy((n * 2 / denominator - 1).astype(np.float32))


def code_table(levels: int) -> torch.Tensor:
    """float32 [256]: the value `decode` gives each code 0..levels (ImageCodes.table of the bundled datasets)."""
    return _table(levels)[:256]


def decode(codes: torch.Tensor, levels: int, channels: int) -> torch.Tensor:
    """uint8 codes [N, 1 or 3, H, W] -> float32 [N, channels, H, W] in [-1, 1]; RGB to gray is the exact
    integer BT.601 sum, decoded once, and gray to RGB repeats the plane."""
    if codes.shape[1] == 3 and channels == 1:
        c = codes.to(torch.int32)
        n = c[:, 0] * LUMA_PERMILLE[0] + c[:, 1] * LUMA_PERMILLE[1] + c[:, 2] * LUMA_PERMILLE[2]
        return _table(1000 * levels)[n][:, None]
    x = _table(levels)[codes.to(torch.int32)]
    return x.repeat(1, channels, 1, 1) if x.shape[1] == 1 and channels == 3 else x


def from_unit(planes: np.ndarray) -> torch.Tensor:
    """float planes in [0, 1] -> float32 in [-1, 1] (rounded to float32 first, as every image source is)."""
    x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))
    return x.clamp_(0, 1).mul_(2).sub_(1)


def select_and_fit(
    images: np.ndarray, levels: int | None, labels: np.ndarray | None, class_names: Sequence[str] | None,
    opts: Mapping[str, Any],
) -> tuple[np.ndarray, int | None, torch.Tensor | None]:
    """`apply_image_options` for bundled images ([N, H, W(, 3)] codes 0..levels, or floats in [0, 1] if levels
    is None): class filter, subset, crop, resize; returns planes [N, C, R, R], their levels, the kept labels."""
    label_t = None if labels is None else torch.as_tensor(np.asarray(labels)).long()
    index = select_indices(len(images), label_t, class_names, opts).numpy()
    planes = images[index]
    planes = planes[:, None] if planes.ndim == 3 else planes.transpose(0, 3, 1, 2)
    planes, levels = crop_resize(planes, int(opts["resolution"]), levels)
    return planes, levels, None if label_t is None else label_t[torch.from_numpy(index)]
