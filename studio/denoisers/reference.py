"""Naive float64 references, written straight from the formulas: the yardstick for tests and benchmarks; and the
first release's fp32 ELS (els_unfold_fp32), which `bench` times the current one against."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from studio.denoisers.budget import rows_that_fit
from studio.denoisers.online_softmax import OnlineSoftmax

_ROWS = 2048


def sq_dists(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """||x_t - s x_i||² in float64 by explicit differences (row chunks keep memory bounded)."""
    x = x_t.reshape(x_t.shape[0], -1).double()
    d = data.reshape(data.shape[0], -1).double()
    parts = [((x[:, None, :] - ab**0.5 * d[None, lo:lo + _ROWS]) ** 2).sum(-1) for lo in range(0, len(d), _ROWS)]
    return torch.cat(parts, 1)


def nearest_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """x_{i*}, i* = argmin_i ||x_t - s x_i||²."""
    idx = sq_dists(x_t, data, ab).argmin(1)
    return data.double()[idx].reshape(x_t.shape)


def optimal_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, temperature: float = 1.0) -> torch.Tensor:
    """Σ_i w_i x_i with w ∝ exp(-||x_t - s x_i||² / (2(1-ā)τ)), all in float64."""
    w = torch.softmax(-sq_dists(x_t, data, ab) / (2 * (1 - ab) * temperature), dim=1)
    return (w @ data.reshape(data.shape[0], -1).double()).reshape(x_t.shape)


def wiener_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float) -> torch.Tensor:
    """μ + ā Σ (ā Σ + (1-ā) I)⁻¹ (x_t/s - μ) with the dense float64 covariance and a linear solve."""
    d = data.reshape(data.shape[0], -1).double()
    mu = d.mean(0)
    cov = (d - mu).T @ (d - mu) / d.shape[0]
    y = x_t.reshape(x_t.shape[0], -1).double() / ab**0.5 - mu
    a = ab * cov + (1 - ab) * torch.eye(cov.shape[0], dtype=torch.float64, device=cov.device)
    return (mu + (ab * cov @ torch.linalg.solve(a, y.T)).T).reshape(x_t.shape)


def locality_mask_ref(data: torch.Tensor, ab: float, theta: float, normalization: str = "self") -> torch.Tensor:
    """M = |P| >= θ max|P| with W = ā Σ (ā Σ + (1-ā) I)⁻¹ from the dense covariance (no eigendecomposition)."""
    d = data.reshape(data.shape[0], -1).double()
    cov = (d - d.mean(0)).T @ (d - d.mean(0)) / d.shape[0]
    eye = torch.eye(cov.shape[0], dtype=torch.float64, device=cov.device)
    w = torch.linalg.solve(ab * cov + (1 - ab) * eye, ab * cov).T
    diag = w.diagonal()
    diag = torch.where(diag > 1e-9 * diag.max(), diag, torch.ones_like(diag))
    p = w / diag[None, :] if normalization == "self" else w / diag[:, None]
    return p.abs() >= theta * p.abs().max()


def masked_softmax_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, mask: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """x̂0[m] = Σ_i softmax_i(-Σ_n M[n, m] (x_t[n] - s x_i[n])² / (2(1-ā)τ)) x_i[m]: dense mask, float64."""
    x = x_t.reshape(x_t.shape[0], -1).double()
    d = data.reshape(data.shape[0], -1).double()
    m = mask.to(device=d.device, dtype=torch.float64)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        dist = ((x[b] - ab**0.5 * d) ** 2) @ m
        w = torch.softmax(-dist / (2 * (1 - ab) * temperature), dim=0)
        out[b] = (w * d).sum(0)
    return out.reshape(x_t.shape)


def pca_locality_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, theta: float,
                     normalization: str = "self", temperature: float = 1.0) -> torch.Tensor:
    """pca_locality from scratch: dense float64 mask (linear solve) and one global softmax per coordinate."""
    return masked_softmax_ref(x_t, data, ab, locality_mask_ref(data, ab, theta, normalization), temperature)


def scfdm_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, eps: torch.Tensor, smoothing: float,
              temperature: float = 1.0) -> torch.Tensor:
    """(1/M) Σ_j optimal(x_t + σ_s ε_j) for given smoothing noise eps [M, *item shape]."""
    outs = [optimal_ref(x_t + smoothing * e.to(x_t.device), data, ab, temperature) for e in eps]
    return torch.stack(outs).mean(0)


def ls_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, k: int, temperature: float = 1.0) -> torch.Tensor:
    """Local score machine, pixel by pixel: softmax over training images of the distance between the k x k
    windows at the same location (clipped at the border), averaging the training images' centre pixels."""
    B, C, H, W = x_t.shape
    x, d = x_t.double(), data.double()
    h = k // 2
    out = torch.empty_like(x)
    for y in range(H):
        for xx in range(W):
            rows, cols = slice(max(0, y - h), y + h + 1), slice(max(0, xx - h), xx + h + 1)
            diff = x[:, None, :, rows, cols] - ab**0.5 * d[None, :, :, rows, cols]
            w = torch.softmax(-(diff**2).sum((2, 3, 4)) / (2 * (1 - ab) * temperature), dim=1)
            out[:, :, y, xx] = w @ d[:, :, y, xx]
    return out


def els_ref(x_t: torch.Tensor, data: torch.Tensor, ab: float, k: int, temperature: float = 1.0) -> torch.Tensor:
    """Equivariant local score machine in float64. A query window is the k x k window at pixel p clipped to
    the image; its candidates are all same-shaped windows lying inside a training image, at every location.
    Windows of one shape are compared at once through one float64 product (data chunked, exact log-sum-exp)."""
    B, C, H, W = x_t.shape
    x, d = x_t.double(), data.double()
    h = k // 2
    s = ab**0.5
    inv = 1.0 / (2 * (1 - ab) * temperature)
    out = torch.empty_like(x)
    shapes: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    for y in range(H):
        for xx in range(W):
            shapes.setdefault((min(h, y), min(h, H - 1 - y), min(h, xx), min(h, W - 1 - xx)), []).append((y, xx))
    for (up, down, left, right), pixels in shapes.items():
        kh, kw = up + down + 1, left + right + 1
        ys = torch.tensor([p[0] for p in pixels])
        xs = torch.tensor([p[1] for p in pixels])
        queries = x.unfold(2, kh, 1).unfold(3, kw, 1)[:, :, ys - up, xs - left]  # [B, C, P, kh, kw]
        queries = queries.permute(0, 2, 1, 3, 4).reshape(B * len(pixels), -1)
        lse, num = None, None
        step = max(1, int(2e7 // (queries.shape[0] * (H - kh + 1) * (W - kw + 1))))
        for lo in range(0, d.shape[0], step):
            win = d[lo:lo + step].unfold(2, kh, 1).unfold(3, kw, 1)  # [n, C, qy, qx, kh, kw]
            centres = win[..., up, left].permute(0, 2, 3, 1).reshape(-1, C)
            win = win.permute(0, 2, 3, 1, 4, 5).reshape(centres.shape[0], -1)
            logits = (2 * s * queries @ win.T - ab * (win**2).sum(1) - (queries**2).sum(1, keepdim=True)) * inv
            part = torch.logsumexp(logits, 1, keepdim=True)
            mean = torch.softmax(logits, 1) @ centres
            if lse is None:
                lse, num = part, mean
            else:
                new = torch.logaddexp(lse, part)
                num = num * torch.exp(lse - new) + mean * torch.exp(part - new)
                lse = new
        out[:, :, ys, xs] = num.reshape(B, len(pixels), C).permute(0, 2, 1)
    return out


def _window_shapes(H: int, W: int, k: int) -> dict[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Clipped window shape (kh, kw) -> the pixels (y, x) having it, with their offsets (up, left) inside it."""
    h = k // 2
    groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    for y in range(H):
        up, down = min(h, y), min(h, H - 1 - y)
        for x in range(W):
            left, right = min(h, x), min(h, W - 1 - x)
            groups[(up + down + 1, left + right + 1)].append((y, x, up, left))
    return groups


def els_unfold_fp32(
    x_t: torch.Tensor, images: torch.Tensor, ab: float, k: int, temperature: float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """The fp32 ELS of the first release, kept as the yardstick `bench` times the window machinery against: per
    window shape, one product of query windows with all training windows of that shape unfolded chunk by
    chunk (logits 2s<q, w> - ā|w|², the query norm dropped), an exact online softmax over the chunks, and the
    numerators gathered per centre offset."""
    B, C, H, W = x_t.shape
    s = math.sqrt(ab)
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    out = torch.empty_like(x_t)
    for (kh, kw), pixels in _window_shapes(H, W, k).items():
        pix = torch.tensor(pixels, device=x_t.device)
        P, Q, width = len(pixels), (H - kh + 1) * (W - kw + 1), C * kh * kw
        queries = x_t.unfold(2, kh, 1).unfold(3, kw, 1)[:, :, pix[:, 0] - pix[:, 2], pix[:, 1] - pix[:, 3]]
        queries = queries.permute(0, 2, 1, 3, 4).reshape(B * P, width) * (2 * s * inv)
        offsets = defaultdict(list)
        for j, (_, _, up, left) in enumerate(pixels):
            offsets[(up, left)].append(j)
        offsets = {o: torch.tensor(j, device=x_t.device) for o, j in offsets.items()}
        per_image = 4 * Q * (width + C + 3 * B * P)
        step = rows_that_fit(per_image, 4 * B * P * (width + C + 3), x_t.device, "denoiser.els: patch chunk",
                             chunk or images.shape[0])
        acc = OnlineSoftmax((B, P), (C,), x_t.device)
        for lo in range(0, images.shape[0], step):
            win = images[lo:lo + step].unfold(2, kh, 1).unfold(3, kw, 1)  # [n, C, qy, qx, kh, kw]
            n = win.shape[0]
            flat = win.permute(0, 2, 3, 1, 4, 5).reshape(n * Q, width)
            logits = torch.addmm((flat * flat).sum(1)[None, :], queries, flat.T, beta=-ab * inv).reshape(B, P, n * Q)

            def weigh(w: torch.Tensor) -> torch.Tensor:  # Σ over windows of w · the window's centre pixel
                out_num = torch.zeros(B, P, C, device=x_t.device)
                for (up, left), j in offsets.items():
                    centres = win[:, :, :, :, up, left].permute(0, 2, 3, 1).reshape(n * Q, C)
                    out_num[:, j] = w[:, j] @ centres
                return out_num

            acc.add(logits, weigh)
        out[:, :, pix[:, 0], pix[:, 1]] = acc.mean().permute(0, 2, 1)
    return out
