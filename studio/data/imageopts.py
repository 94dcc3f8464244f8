"""Options every image dataset shares, declared once and applied by one function.

Builders declare `image_params(...)` (resolution, channels, size, subset, subset_seed, classes and
split where the source has splits) and pass their raw images through `apply_image_options`, so
every image dataset crops, resizes, converts and subsets the same way.

Accepted images: one array (numpy or torch) of shape [N, H, W] or [N, H, W, C] (channels last,
C in 1..4; alpha is dropped), or a sequence of per-image arrays [H, W] / [H, W, C] or PIL images
that may differ in size. uint8 means 0..255, uint16 0..65535, floats must lie in [0, 1].
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from studio.params import Param

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses: gray data look the same either way.
LUMA = (0.299, 0.587, 0.114)
_CHUNK = 1024  # images converted at once: bounds the float copy of a large uint8 source


def image_params(
    resolution: int,
    channels: int,
    splits: Sequence[str] | None = None,
    max_size: int | None = None,
    max_resolution: int = 256,
    labelled: bool = True,
) -> tuple[Param, ...]:
    """The shared option declarations, defaulting to the source's natural resolution and channels.

    `splits` adds a `split` choice (first one is the default); `labelled=False` leaves out `classes`.
    """
    params = [
        Param("resolution", int, resolution, "side of the square images in pixels (center crop, antialiased resize)",
              low=4, high=max(max_resolution, resolution)),
        Param("channels", int, channels, "1 = gray, 3 = RGB", choices=(1, 3)),
        Param("size", int, None, "keep at most this many images (auto = all)", low=1, high=max_size, optional=True),
        Param("subset", str, "first", "which images `size` keeps: the first ones or a seeded random choice",
              choices=("first", "random")),
        Param("subset_seed", int, 0, "seed of the random subset", low=0),
    ]
    if labelled:
        params.append(Param("classes", list, [], "keep only these classes (names or label numbers), e.g. 0,1,7"))
    if splits:
        params.append(Param("split", str, splits[0], "which split of the source", choices=tuple(splits)))
    return tuple(params)


def select_indices(
    n: int, labels: torch.Tensor | None, class_names: Sequence[str] | None, opts: Mapping[str, Any]
) -> torch.Tensor:
    """Indices kept by the class filter then the subset, in source order; call it to decode only those."""
    index = torch.arange(n)
    wanted = opts.get("classes") or []
    if wanted:
        if labels is None:
            raise ValueError("dataset.classes: this dataset has no class labels, so it cannot be filtered by class")
        ids = [_class_id(c, labels, class_names) for c in wanted]
        index = index[torch.isin(labels, torch.tensor(ids, dtype=labels.dtype))]
        if index.numel() == 0:
            raise ValueError(f"dataset.classes: no images left after keeping classes {list(wanted)}")
    size = opts.get("size")
    if size is not None and size < index.numel():
        if opts.get("subset", "first") == "random":
            g = torch.Generator().manual_seed(int(opts.get("subset_seed", 0)))
            index = index[torch.randperm(index.numel(), generator=g)[:size].sort().values]
        else:
            index = index[:size]
    return index


def apply_image_options(
    images: Any,
    labels: Any | None,
    class_names: Sequence[str] | None,
    opts: Mapping[str, Any],
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Filter classes, subset, center-crop, resize and convert channels: x float32 [N, C, R, R] in [-1, 1].

    `opts` holds resolved `image_params` values; missing ones mean: all images, no class filter.
    Labels keep their source ids, so `class_names` is returned unchanged.
    """
    label_t = None if labels is None else torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if label_t is not None and label_t.numel() != len(images):
        raise ValueError(f"dataset: {label_t.numel()} labels for {len(images)} images")
    index = select_indices(len(images), label_t, class_names, opts)
    resolution, channels = int(opts["resolution"]), int(opts["channels"])
    out = torch.empty(index.numel(), channels, resolution, resolution, dtype=torch.float32)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = np.asarray(images)
        if batch.ndim not in (3, 4):
            raise ValueError(f"dataset: expected images [N, H, W] or [N, H, W, C], got shape {batch.shape}")
        for start in range(0, index.numel(), _CHUNK):
            part = index[start:start + _CHUNK].numpy()
            out[start:start + len(part)] = _fit(_to_unit(batch[part], batched=True), resolution, channels)
    else:
        for row, i in enumerate(index.tolist()):
            out[row] = _fit(_to_unit(_from_pil(images[i]), batched=False), resolution, channels)[0]
    out.mul_(2).sub_(1).clamp_(-1, 1)
    return out, None if label_t is None else label_t[index], None if class_names is None else list(class_names)


def _class_id(wanted: Any, labels: torch.Tensor, class_names: Sequence[str] | None) -> int:
    """A requested class by name first, else by label number; unknown ones name the choices."""
    text = str(wanted).strip()
    if class_names is not None:
        if text in class_names:
            return list(class_names).index(text)
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
            return int(text)
        shown = ", ".join(class_names[:30]) + (", ..." if len(class_names) > 30 else "")
        raise ValueError(f"dataset.classes: unknown class {text!r}; choose from: {shown}")
    present = sorted(set(labels.tolist()))
    if text.lstrip("-").isdigit() and int(text) in present:
        return int(text)
    raise ValueError(f"dataset.classes: unknown class {text!r}; labels present: {', '.join(map(str, present[:30]))}")


def _from_pil(image: Any) -> Any:
    """PIL images become arrays with a known value range; arrays pass through."""
    if not hasattr(image, "mode") or not hasattr(image, "convert"):
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def _to_unit(array: Any, batched: bool) -> torch.Tensor:
    """Channels-last integer/float data -> float32 [N, C, H, W] in [0, 1] with C in {1, 3}."""
    a = np.asarray(array)
    if a.ndim == (3 if batched else 2):
        a = a[..., None]
    if a.ndim != (4 if batched else 3) or a.shape[-1] not in (1, 2, 3, 4):
        want = "[N, H, W] or [N, H, W, C]" if batched else "[H, W] or [H, W, C]"
        raise ValueError(f"dataset: expected images {want} with C in 1..4, got shape {a.shape}")
    a = a[..., :3] if a.shape[-1] == 4 else a[..., :1] if a.shape[-1] == 2 else a
    if a.dtype == np.uint8:
        scale = 255.0
    elif a.dtype == np.uint16:
        scale = 65535.0
    elif a.dtype == np.bool_:
        scale = 1.0
    elif np.issubdtype(a.dtype, np.floating):
        scale = 1.0
        if a.size and (np.nanmin(a) < -1e-3 or np.nanmax(a) > 1 + 1e-3 or np.isnan(a).any()):
            raise ValueError(f"dataset: float images must lie in [0, 1], got [{np.nanmin(a):g}, {np.nanmax(a):g}]")
    elif np.issubdtype(a.dtype, np.integer) and (not a.size or (a.min() >= 0 and a.max() <= 255)):
        scale = 255.0
    else:
        raise ValueError(f"dataset: unsupported image dtype {a.dtype}; use uint8, uint16 or floats in [0, 1]")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    x = x.permute(0, 3, 1, 2) if batched else x.permute(2, 0, 1)[None]
    return (x / scale).clamp_(0, 1)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, 1 or 3, H, W] -> [N, channels, H, W]: RGB to gray by BT.601 luma, gray to RGB by repetition."""
    if channels == 1 and x.shape[1] == 3:
        return torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA, dtype=x.dtype))[:, None]
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    return x


def _fit(x: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """Center-crop to a square, resize with an antialiased bilinear filter, convert channels.

    Both steps are linear, so reducing channels first and expanding them last gives the same
    result while resizing as few planes as possible.
    """
    if channels == 1:
        x = convert_channels(x, 1)
    top, left, side = center_square(*x.shape[-2:])
    x = x[..., top:top + side, left:left + side]
    if side != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return convert_channels(x, channels)


def center_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centered square crop every image dataset takes."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def fit_codes(image: Any, resolution: int, channels: int) -> torch.Tensor | None:
    """uint8 [1, channels, R, R]: one 8-bit image (PIL or channels-last array) fitted on its codes where that is
    exact (center crop, gray repeated to RGB), so `unit_table()[codes]` is `apply_image_options`'s result bit
    for bit; None where fitting resamples (side != resolution), reduces RGB to gray, or the pixels are not 8-bit."""
    a = np.asarray(_from_pil(image))
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        return None
    a = a[..., None] if a.ndim == 2 else a[..., :3] if a.shape[-1] == 4 else a[..., :1] if a.shape[-1] == 2 else a
    top, left, side = center_square(*a.shape[:2])
    if side != resolution or a.shape[-1] not in (1, 3) or (channels == 1 and a.shape[-1] == 3):
        return None
    codes = torch.from_numpy(np.array(a[top:top + side, left:left + side].transpose(2, 0, 1)))[None]  # a copy
    return codes.expand(-1, channels, -1, -1).contiguous()  # [1, channels, R, R]


def unit_table() -> torch.Tensor:
    """float32 [256]: the value `apply_image_options` gives each 8-bit code when nothing is resampled (code / 255
    in float32, then 2 v - 1), computed by that very function."""
    codes = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    return apply_image_options(codes, None, None, {"resolution": 16, "channels": 1})[0].reshape(256)
