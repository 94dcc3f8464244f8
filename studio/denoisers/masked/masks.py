"""Locality masks (Lukoianov et al., arXiv 2509.09672) and the patch masks of the local-score machines.

W_t = U diag(ā λ / (ā λ + 1 - ā)) Uᵀ is the Wiener filter of the data's Gaussian fit at noise level ā.
Its normalised entries P[n, m] = W[n, m] / W[m, m] ("self") or W[n, m] / W[n, n] ("reference", the
published code's choice) are thresholded at θ · max|P| into M[n, m]: input coordinate n takes part in
the softmax of output coordinate m. A mask depends only on (dataset, ā, θ, normalisation), so it is
computed once in float64 and cached under that key.
"""

from __future__ import annotations

import torch

from studio.cache import cached_tensors, digest
from studio.data.dataset import Dataset
from studio.denoisers.budget import require
from studio.denoisers.wiener import gaussian_fit, wiener_gains

NORMALIZATIONS = ("self", "reference")
# A diagonal entry this small relative to the largest one belongs to a (numerically) constant coordinate:
# it is not divided by (its ratio would be round-off over round-off) and its P entries stay ~0.
DEGENERATE = 1e-9


def default_threshold(shape: tuple[int, ...]) -> float:
    """θ of the paper's experiments: 0.005 for 28x28 gray, 0.05 for 32x32 RGB, 0.02 otherwise."""
    if tuple(shape) == (1, 28, 28):
        return 0.005
    if tuple(shape) == (3, 32, 32):
        return 0.05
    return 0.02


def wiener_matrix(fit: dict[str, torch.Tensor], ab: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """W = U diag(gains) Uᵀ in float64 on `device`."""
    u = fit["u"].to(device, torch.float64)
    return (u * wiener_gains(fit["lam"].to(device, torch.float64), ab)) @ u.T


def projection(w: torch.Tensor, normalization: str) -> torch.Tensor:
    """P = W / W[m, m] per column ("self") or W / W[n, n] per row ("reference")."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"denoiser.mask_normalization: {normalization!r} is not allowed; "
                         f"choose one of: {', '.join(NORMALIZATIONS)}")
    diag = w.diagonal()
    safe = torch.where(diag > DEGENERATE * diag.max().clamp_min(1e-300), diag, torch.ones_like(diag))
    return w / safe[None, :] if normalization == "self" else w / safe[:, None]


def threshold(p: torch.Tensor, theta: float) -> torch.Tensor:
    """M = |P| >= θ · max|P| (θ = 0 gives all-ones masks)."""
    a = p.abs()
    return a >= theta * a.max()


def mask_key(dataset: Dataset, ab: float, theta: float, normalization: str) -> str:
    return digest("locality-mask-v2", dataset.fingerprint, float(ab), float(theta), normalization)


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """uint8 [ceil(numel/8)]: the bool mask's entries in row-major order, 8 per byte, first entry in the top bit."""
    flat = mask.reshape(-1)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.reshape(-1, 8).to(torch.uint8) * _BIT_WEIGHTS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The bool mask of `shape` back from `pack_bits` (exact)."""
    n = 1
    for d in shape:
        n *= d
    flat = (bits[:, None] & _BIT_WEIGHTS.to(bits.device)).ne(0).reshape(-1)  # [8 * bytes]
    return flat[:n].reshape(shape)


def compute_mask(fit: dict[str, torch.Tensor], ab: float, theta: float, normalization: str,
                 device: torch.device | str) -> torch.Tensor:
    """The bool mask [D, D] on `device`: W (float64), P and the threshold all computed there."""
    return threshold(projection(wiener_matrix(fit, ab, device), normalization), theta)


def stores_masks(device: torch.device) -> bool:
    """Whether masks are kept on disk (bit-packed, D²/8 bytes) rather than recomputed: on the CPU the float64
    D³ product costs seconds; on a GPU it costs milliseconds, less than reading D²/8 bytes back (measured by
    `python -m studio bench --masks`)."""
    return device.type != "cuda"


def to_host(mask: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a mask: from a GPU through a pinned staging buffer (several times faster than a pageable
    copy: 151 MB at 3x64x64), then into ordinary memory so that kept masks do not hold pinned memory."""
    if mask.device.type != "cuda":
        return mask
    staging = torch.empty(mask.shape, dtype=mask.dtype, pin_memory=True)
    staging.copy_(mask)
    return staging.clone()


def locality_mask(
    dataset: Dataset, ab: float, theta: float, normalization: str = "self", device: torch.device | str = "cpu",
    store: bool | None = None, on_device: bool = False,
) -> torch.Tensor:
    """The bool mask M [D, D] (column m = the inputs of output m), computed in float64 on `device` with the
    Gaussian fit of `device`; stored on disk bit-packed when `store` (default: `stores_masks(device)`). Returned on
    the CPU, or where it was computed when `on_device` (a stored mask is read on the CPU)."""
    device = torch.device(device)
    D = dataset.dim
    require(4 * 8 * D * D, device, "denoiser.pca_locality: the float64 Wiener filter and its mask")
    if normalization not in NORMALIZATIONS:
        projection(torch.ones(1, 1, dtype=torch.float64), normalization)  # the field's error

    def build() -> torch.Tensor:
        return compute_mask(gaussian_fit(dataset, device), ab, theta, normalization, device)

    if not (stores_masks(device) if store is None else store):
        return build() if on_device else to_host(build())

    def packed() -> dict[str, torch.Tensor]:
        return {"bits": pack_bits(build())}

    bits = cached_tensors("locality-masks", mask_key(dataset, ab, theta, normalization), packed)["bits"]
    return unpack_bits(bits, (D, D))  # bits were loaded on the CPU


def patch_mask(shape: tuple[int, ...], k: int) -> torch.Tensor:
    """Bool [D, D]: n feeds m when pixel(n) lies in the k x k window centred at pixel(m), any channels.

    Windows are clipped at the image border (equivalently: both images zero-padded), so a window of
    side >= 2 max(H, W) - 1 covers the whole image for every pixel.
    """
    C, H, W = shape
    h = k // 2
    ys = torch.arange(H).repeat_interleave(W).repeat(C)
    xs = torch.arange(W).repeat(H).repeat(C)
    return ((ys[:, None] - ys[None, :]).abs() <= h) & ((xs[:, None] - xs[None, :]).abs() <= h)
