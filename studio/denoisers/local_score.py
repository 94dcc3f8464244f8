"""Local score machines (Kamb & Ganguli, arXiv 2412.20292): each pixel's x̂0 is a posterior mean over
k x k patches, with k set per noise level by a patch-size schedule.

- `ls`: the patches of every training image at the pixel's own location (locality only).
- `els`: the patches at every location of every training image (locality and translation equivariance).

Border convention (both): only real pixels are compared; nothing is padded in. A pixel's window is the
k x k window centred on it, clipped to the image. LS compares it with the same clipped window of each
training image (identical to zero-padding both images). ELS compares it with every window of the same
clipped shape that lies wholly inside a training image, and averages the training pixel that sits where
the query pixel sits in its window. Interior pixels thus see all (H-k+1)(W-k+1) positions per image; a
corner pixel's quarter window is matched against all quarter-window positions; a window that covers the
whole image (k >= 2 max(H, W) - 1) leaves one candidate per image, so both machines become `optimal`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.budget import rows_that_fit
from studio.denoisers.common import CHUNK, TEMPERATURE
from studio.denoisers.masked.denoiser import KERNEL, MaskedSoftmaxDenoiser
from studio.denoisers.masked.masks import patch_mask
from studio.denoisers.online_softmax import OnlineSoftmax
from studio.denoisers.patch_schedule import PatchSchedule, auto_patch_size, check_patch_size, full_window, load_schedule
from studio.denoisers.registry import register
from studio.denoisers.softmax import DataBank, posterior_mean
from studio.params import Param

PATCH_SIZE = Param("patch_size", int, None, "one odd k for every step (auto = follow patch_schedule)",
                   low=1, optional=True)
PATCH_SCHEDULE = Param("patch_schedule", str, None, "auto (from the data's Wiener-filter masks) or a .yaml/.json "
                       "schedule file, as `python -m studio calibrate` writes", optional=True)


class PatchSizes:
    """Resolves the patch size of a step: the fixed `patch_size`, else the schedule file, else the data default."""

    p: dict
    device: torch.device

    def _fit_sizes(self, dataset: Dataset) -> None:
        self.shape = dataset.shape
        if self.p["patch_size"] is not None:
            check_patch_size(self.p["patch_size"], dataset.shape)
        path = self.p["patch_schedule"]
        self.schedule: PatchSchedule | None = load_schedule(path) if path else None
        self.auto_sizes: dict[float, int] = {}

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        return self.denoise_at(x_t, alpha_bar, self.patch_size(alpha_bar))  # type: ignore[attr-defined]

    def patch_size(self, ab: float) -> int:
        if self.p["patch_size"] is not None:
            return self.p["patch_size"]
        if self.schedule is not None:
            return min(self.schedule.size(ab), full_window(self.shape))
        if ab not in self.auto_sizes:
            self.auto_sizes[ab] = auto_patch_size(self._check_fitted(), ab, self.device)  # type: ignore[attr-defined]
        return self.auto_sizes[ab]


@register
class LocalScore(PatchSizes, MaskedSoftmaxDenoiser):
    name = "ls"
    summary = "local score machine: per-pixel posterior over same-location k x k patches"
    kinds = ("image",)
    params = (PATCH_SIZE, PATCH_SCHEDULE, TEMPERATURE, CHUNK, KERNEL)

    def _fit(self, dataset: Dataset) -> None:
        self._fit_sizes(dataset)
        self._fit_bank(dataset)

    def denoise_at(self, x_t: torch.Tensor, alpha_bar: float, k: int) -> Denoised:
        """Denoise with patch size k, whatever the schedule says (calibration tries several)."""
        self._check_fitted()
        check_patch_size(k, self.shape)
        entry = self._plan(("patch", k), lambda: patch_mask(self.shape, k))
        return Denoised(self._masked_mean(x_t, entry.plan, alpha_bar), {}, {"patch_size": k})


@register
class EquivariantLocalScore(PatchSizes, Denoiser):
    name = "els"
    summary = "equivariant local score machine: per-pixel posterior over k x k patches at every location"
    kinds = ("image",)
    params = (PATCH_SIZE, PATCH_SCHEDULE, TEMPERATURE, CHUNK)

    def _fit(self, dataset: Dataset) -> None:
        self._fit_sizes(dataset)
        self.bank = DataBank.from_flat(dataset.flat(), self.device)
        self.images = self.bank.x.reshape(dataset.x.shape)

    def denoise_at(self, x_t: torch.Tensor, alpha_bar: float, k: int) -> Denoised:
        """Denoise with patch size k, whatever the schedule says (calibration tries several)."""
        self._check_fitted()
        check_patch_size(k, self.shape)
        x = x_t.float()
        if k == full_window(self.shape):
            post = posterior_mean(x.reshape(x.shape[0], -1), self.bank, alpha_bar, self.p["temperature"],
                                  self.p["chunk_size"], k=1)
            x0 = post.mean.reshape(x_t.shape)
        else:
            x0 = els_mean(x, self.images, alpha_bar, k, self.p["temperature"], self.p["chunk_size"])
        return Denoised(x0, {}, {"patch_size": k})


def window_shapes(H: int, W: int, k: int) -> dict[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Clipped window shape (kh, kw) -> the pixels (y, x) having it, with their offsets (up, left) inside it."""
    h = k // 2
    groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    for y in range(H):
        up, down = min(h, y), min(h, H - 1 - y)
        for x in range(W):
            left, right = min(h, x), min(h, W - 1 - x)
            groups[(up + down + 1, left + right + 1)].append((y, x, up, left))
    return groups


def els_mean(
    x_t: torch.Tensor, images: torch.Tensor, ab: float, k: int, temperature: float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """ELS x̂0 [B, C, H, W]: per window shape, one product of query windows with all training windows of that
    shape (logits 2s<q, w> - ā|w|², the query norm dropped as a per-row constant), exact online softmax
    over chunks of training images, numerators gathered per centre offset."""
    B, C, H, W = x_t.shape
    s = math.sqrt(ab)
    inv = 1.0 / (2.0 * (1.0 - ab) * temperature)
    out = torch.empty_like(x_t)
    for (kh, kw), pixels in window_shapes(H, W, k).items():
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
