"""`patches`: natural-image patches cut (seeded) from the photographs the installed packages ship.

Patches are cut at several scales (the photo shrunk by 1, 2 and 4 with an antialiased filter in
integer arithmetic) with random horizontal flips, an equal share per photo and per scale, in shuffled
order; each patch is labelled by its photo. Patches stay 8-bit codes until they are decoded, so a
build is the same bytes everywhere. `build_patch_set` is shared with `textures`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from studio.data.buildcache import cached_builder
from studio.data.imageopts import image_params, select_indices
from studio.data.photos import load_photo, provenance
from studio.data.pixels import decode, resize
from studio.data.registry import Built, DatasetEntry, register
from studio.params import Param

COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
                "immunohistochemistry", "motorcycle", "china", "flower")
SCALES = (1.0, 0.5, 0.25)
MAX_SIDE = 64  # the smallest photo (chelsea, 300 px) still holds a 64 px patch at 1/4 scale


def patch_params(resolution: int, channels: int, size: int, max_size: int) -> tuple[Param, ...]:
    """Shared image options (side, channels, class = source photo) plus the patch count and seed."""
    shared = {p.name: p for p in image_params(resolution, channels, max_resolution=MAX_SIDE)}
    return (
        replace(shared["resolution"], help="patch side in pixels (16; 32 for CIFAR-like work)"),
        shared["channels"],
        Param("size", int, size, "number of patches", low=1, high=max_size),
        Param("seed", int, 0, "seed of the patch positions, flips and order", low=0),
        Param("classes", list, [], "keep patches of these source images only (names or numbers)"),
    )


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` counts differing by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def cut_patch_codes(
    images: Sequence[np.ndarray], counts: Sequence[int], side: int, scales: Sequence[float], g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`counts[k]` seeded crops (uint8 [N, C, side, side], shuffled) of 8-bit image k over `scales`, half mirrored,
    and their image; positions depend only on `g` and the image sizes, so gray and RGB sets hold the same crops."""
    planes = [np.asarray(image)[None] if np.ndim(image) == 2 else np.asarray(image).transpose(2, 0, 1)
              for image in images]
    channels = max(p.shape[0] for p in planes)
    total = sum(counts)
    out = torch.empty(total, channels, side, side, dtype=torch.uint8)
    owner = torch.empty(total, dtype=torch.long)
    order = torch.randperm(total, generator=g)
    offsets = torch.arange(side)
    start = 0
    for k, (full, count) in enumerate(zip(planes, counts)):
        full = np.repeat(full, channels // full.shape[0], axis=0)
        for scale, m in zip(scales, split_evenly(count, len(scales))):
            if m == 0:
                continue
            h, w = round(full.shape[1] * scale), round(full.shape[2] * scale)
            if min(h, w) < side:
                raise ValueError(f"dataset.resolution: {side} px patches do not fit image {k} at scale {scale}")
            shrunk = torch.from_numpy(full if scale == 1 else resize(full[None], h, w, 255)[0])
            top = torch.randint(0, h - side + 1, (m,), generator=g)
            left = torch.randint(0, w - side + 1, (m,), generator=g)
            mirrored = torch.rand(m, generator=g) < 0.5
            rows = (top[:, None] + offsets)[:, :, None]
            cols = left[:, None] + torch.where(mirrored[:, None], offsets.flip(0), offsets)
            slots = order[start:start + m]
            out[slots] = shrunk[:, rows, cols[:, None, :]].transpose(0, 1)
            owner[slots] = k
            start += m
    return out, owner


def cut_patches(
    images: Sequence[np.ndarray], counts: Sequence[int], side: int, channels: int, scales: Sequence[float],
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`cut_patch_codes` decoded: float32 patches [N, channels, side, side] in [-1, 1] and their image."""
    codes, owner = cut_patch_codes(images, counts, side, scales, g)
    return decode(codes, 255, channels), owner


def build_patch_set(
    names: Sequence[str], resolution: int, channels: int, size: int, seed: int, classes: list,
    scales: Sequence[float],
) -> Built:
    """Patches of the named photos (after the class filter), labelled by photo; fingerprinted by their codes."""
    keep = select_indices(len(names), torch.arange(len(names)), list(names), {"classes": classes}).tolist()
    g = torch.Generator().manual_seed(seed)
    photos = [load_photo(names[i]) for i in keep]
    codes, owner = cut_patch_codes(photos, split_evenly(size, len(keep)), resolution, scales, g)
    return Built.from_codes(codes, 255, channels, labels=torch.tensor(keep)[owner], class_names=list(names))


def _make(resolution: int, channels: int, size: int, seed: int, classes: list) -> Built:
    return build_patch_set(COLOR_PHOTOS, resolution, channels, size, seed, classes, SCALES)


_build, _cached = cached_builder("patches", "patches-2", _make)
_source, _license = provenance(
    list(COLOR_PHOTOS),
    "seeded random patches of the photographs bundled with scikit-image and scikit-learn, scales 1, 1/2, 1/4, "
    "horizontal flips",
)

register(DatasetEntry(
    name="patches",
    kind="image",
    summary="natural-image patches (default 20,000 of 16x16 RGB) from 10 bundled photographs, labelled by photo",
    source=_source,
    license=_license,
    params=patch_params(resolution=16, channels=3, size=20_000, max_size=200_000),
    build=_build,
    cached=_cached,
))
