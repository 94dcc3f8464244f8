"""pca_locality (Lukoianov et al., arXiv 2509.09672): the posterior mean computed per output coordinate,
each from the distances over the inputs its Wiener-filter mask selects. Local masks at low noise let it
compose new images from parts of many training images, as trained networks do."""

from __future__ import annotations

from typing import Callable

import torch

from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised
from studio.denoisers.common import CHUNK, TEMPERATURE
from studio.denoisers.masked.denoiser import KERNEL, MaskedSoftmaxDenoiser, MaskEntry
from studio.denoisers.masked.masks import NORMALIZATIONS, default_threshold, locality_mask
from studio.denoisers.registry import register
from studio.params import Param

@register
class PCALocality(MaskedSoftmaxDenoiser):
    name = "pca_locality"
    summary = "per-pixel posterior mean over the Wiener filter's local mask (generalises like a trained net)"
    params = (
        Param("mask_threshold", float, None, "θ: keep |P| >= θ max|P| (auto = 0.005 for 28x28 gray, 0.05 for "
              "32x32 RGB, 0.02 otherwise; 0 = all-ones masks = optimal)", low=0.0, high=1.0, optional=True),
        Param("mask_normalization", str, "self", "P = W / W[m, m] (self) or W / W[n, n] (reference: the "
              "published code's choice, for comparison)", choices=NORMALIZATIONS),
        TEMPERATURE, CHUNK, KERNEL,
    )

    def _fit(self, dataset: Dataset) -> None:
        self._fit_bank(dataset)
        self.theta = self.p["mask_threshold"]
        if self.theta is None:
            self.theta = default_threshold(dataset.shape)

    def mask(self, ab: float) -> MaskEntry:
        """The plan of the mask at ā (kept in memory), with the mask's density."""
        return self._plan(ab, *self.level(ab))

    def level(self, ab: float) -> tuple[float, Callable[[], torch.Tensor]]:
        return float(ab), lambda: self.level_mask(ab)

    def level_mask(self, ab: float) -> torch.Tensor:
        """The bool mask [D, D] at ā on the run's device (recomputed on a GPU, stored bit-packed on the CPU)."""
        dataset = self._check_fitted()
        return locality_mask(dataset, ab, self.theta, self.p["mask_normalization"], self.device, on_device=True)

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        entry = self.mask(alpha_bar)
        shared = {
            "mask_density": entry.density,
            "mask_threshold": self.theta,
            "mask_normalization": self.p["mask_normalization"],
        }
        return Denoised(self._masked_mean(x_t, entry.plan, alpha_bar), {}, shared)
