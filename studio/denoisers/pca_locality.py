"""pca_locality (Lukoianov et al., arXiv 2509.09672): the posterior mean computed per output coordinate,
each from the distances over the inputs its Wiener-filter mask selects. Local masks at low noise let it
compose new images from parts of many training images, as trained networks do."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.budget import require
from studio.denoisers.common import CHUNK, TEMPERATURE
from studio.denoisers.masked_softmax import KERNELS, ColumnPlan, masked_posterior_mean, plan_for
from studio.denoisers.masks import NORMALIZATIONS, default_threshold, locality_mask
from studio.denoisers.registry import register
from studio.denoisers.softmax import DataBank
from studio.params import Param

KERNEL = Param("kernel", str, "auto", "masked-softmax implementation: auto = Triton on CUDA when installed, else torch",
               choices=KERNELS)
PLANS_KEPT = 64


@dataclass
class MaskEntry:
    """A step's bool mask [D, D] (CPU), its plan (on the device) and the fraction of ones."""

    mask: torch.Tensor
    plan: ColumnPlan
    density: float


class MaskedSoftmaxDenoiser(Denoiser):
    """Shared machinery of the masked-softmax denoisers: the resident data, and one plan per mask kept in
    memory (least recently used dropped), so a step only looks its plan up."""

    def _fit_bank(self, dataset: Dataset) -> None:
        D = dataset.dim
        require(4 * D * D * 2 + 8 * dataset.n * D, self.device, f"denoiser.{self.name}: masks and training data")
        self.bank = DataBank.from_flat(dataset.flat(), self.device)
        self.plans: OrderedDict[Any, MaskEntry] = OrderedDict()

    def _plan(self, key: Any, make_mask: Callable[[], torch.Tensor]) -> MaskEntry:
        if key in self.plans:
            self.plans.move_to_end(key)
            return self.plans[key]
        mask = make_mask()
        plan = plan_for(mask, self.dataset_shape, self.device, self.p["kernel"])
        entry = MaskEntry(mask, plan, float(mask.float().mean()))
        self.plans[key] = entry
        while len(self.plans) > PLANS_KEPT:
            self.plans.popitem(last=False)
        return entry

    def _masked_mean(self, x_t: torch.Tensor, plan: ColumnPlan, ab: float) -> torch.Tensor:
        flat = x_t.reshape(x_t.shape[0], -1).float()
        out = masked_posterior_mean(flat, self.bank, plan, ab, self.p["temperature"], self.p["chunk_size"],
                                    self.p["kernel"])
        return out.reshape(x_t.shape)


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
        self.dataset_shape = dataset.shape
        self.theta = self.p["mask_threshold"]
        if self.theta is None:
            self.theta = default_threshold(dataset.shape)

    def mask(self, ab: float) -> MaskEntry:
        """The bool mask [D, D] at ā (cached on disk) with its plan (kept in memory)."""
        dataset = self._check_fitted()
        norm = self.p["mask_normalization"]
        return self._plan(float(ab), lambda: locality_mask(dataset, ab, self.theta, norm, self.device))

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        entry = self.mask(alpha_bar)
        shared = {
            "mask": entry.mask,
            "mask_density": entry.density,
            "mask_threshold": self.theta,
            "mask_normalization": self.p["mask_normalization"],
        }
        return Denoised(self._masked_mean(x_t, entry.plan, alpha_bar), {}, shared)
