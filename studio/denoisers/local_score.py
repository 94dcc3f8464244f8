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

import time
from typing import Callable, Sequence

import torch

from studio.data.dataset import Dataset
from studio.cache import Recent
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.budget import memory_budget
from studio.denoisers.common import CHUNK, TEMPERATURE
from studio.denoisers.masked.denoiser import KERNEL, MaskedSoftmaxDenoiser
from studio.denoisers.masked.masks import patch_mask
from studio.denoisers.kernels import use_triton
from studio.denoisers.patch_schedule import PatchSchedule, auto_patch_size, check_patch_size, full_window, load_schedule
from studio.denoisers.registry import register
from studio.denoisers.softmax import DataBank, posterior_mean
from studio.denoisers.windows import torch_scan
from studio.denoisers.windows.geometry import KeyBanks
from studio.denoisers.windows.layout import Training
from studio.params import Param

PATCH_SIZE = Param("patch_size", int, None, "one odd k for every step (auto = follow patch_schedule)",
                   low=1, optional=True)
WINDOW_BANKS_KEPT = 4  # patch sizes whose training windows stay in memory
WINDOW_SHARE = 4  # ... within 1/WINDOW_SHARE of the device's memory budget
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

    def level(self, ab: float) -> tuple[tuple[str, int], Callable[[], torch.Tensor]]:
        return self._patch_level(self.patch_size(ab))

    def _patch_level(self, k: int) -> tuple[tuple[str, int], Callable[[], torch.Tensor]]:
        return ("patch", k), lambda: patch_mask(self.shape, k)

    def denoise_at(self, x_t: torch.Tensor, alpha_bar: float, k: int) -> Denoised:
        """Denoise with patch size k, whatever the schedule says (calibration tries several)."""
        self._check_fitted()
        check_patch_size(k, self.shape)
        entry = self._plan(alpha_bar, *self._patch_level(k))
        return Denoised(self._masked_mean(x_t, entry.plan, alpha_bar), {}, {"patch_size": k})


@register
class EquivariantLocalScore(PatchSizes, Denoiser):
    name = "els"
    summary = "equivariant local score machine: per-pixel posterior over k x k patches at every location"
    kinds = ("image",)
    params = (PATCH_SIZE, PATCH_SCHEDULE, TEMPERATURE, CHUNK, KERNEL)

    def _fit(self, dataset: Dataset) -> None:
        self._fit_sizes(dataset)
        self.bank = DataBank.from_dataset(dataset, self.device)
        self.images = self.bank.x.reshape(dataset.n, *dataset.shape)
        self.windows = Recent(keep=WINDOW_BANKS_KEPT, size=lambda b: b.nbytes(), max_bytes=self._window_budget)
        self.layouts: dict = {}  # Triton block layouts by (batch, shape, k, launch)
        self.upcoming: list[float] = []  # the levels of a run whose kernel variants are not compiled yet
        use_triton(self.device, self.p["kernel"])  # a clear error now for a kernel that cannot run here

    def _window_budget(self) -> int:
        return memory_budget(self.device) // WINDOW_SHARE

    def prepare(self, alpha_bars: Sequence[float]) -> None:
        """A run's levels: the Triton kernel variants they need are compiled together at its first call."""
        self._check_fitted()
        self.upcoming = list(alpha_bars)

    def _compile_levels(self, shape: tuple[int, ...], train: Training) -> None:
        """Compile at once the kernel variants of every upcoming level's patch size for queries of `shape` (in
        parallel: about the time of one instead of one per new variant; counted as setup)."""
        from studio.denoisers.windows import triton_scan

        t0 = time.perf_counter()
        full = full_window(self.shape)
        ks = [k for k in dict.fromkeys(self.patch_size(ab) for ab in self.upcoming) if k != full]
        self.upcoming = []
        triton_scan.compile_levels(shape, train, ks, self.layouts)
        self.setup_s += time.perf_counter() - t0

    def key_banks(self, k: int) -> KeyBanks:
        """The training windows of patch size k, kept (deduplicated) while they fit the budget."""
        def make() -> KeyBanks:
            t0 = time.perf_counter()
            banks = KeyBanks(self.images, k, self._window_budget())
            self.setup_s += time.perf_counter() - t0
            return banks

        return self.windows.get_or_make(k, make)

    def denoise_at(self, x_t: torch.Tensor, alpha_bar: float, k: int) -> Denoised:
        """Denoise with patch size k, whatever the schedule says (calibration tries several)."""
        self._check_fitted()
        check_patch_size(k, self.shape)
        x = x_t.float()
        tau = self.p["temperature"]
        if k == full_window(self.shape):
            post = posterior_mean(x.reshape(x.shape[0], -1), self.bank, alpha_bar, tau, self.p["chunk_size"], k=1)
            x0 = post.mean.reshape(x_t.shape)
        elif use_triton(x.device, self.p["kernel"]):
            from studio.denoisers.windows import triton_scan  # imports triton: only where it runs

            train = self.bank.derive("els-triton", lambda: Training.build(self.images))
            if self.upcoming:
                self._compile_levels(tuple(x.shape), train)
            x0 = triton_scan.els_mean(x, train, k, alpha_bar, tau, self.layouts)
        else:
            x0 = torch_scan.els_mean(x, self.key_banks(k), alpha_bar, tau, self.p["chunk_size"])
        return Denoised(x0, {}, {"patch_size": k})
