"""Smoothed closed-form denoiser (Scarvelis et al., arXiv 2310.12395): the optimal denoiser averaged over
M Gaussian perturbations of its input, x̂0 = (1/M) Σ_j optimal(x_t + σ_s ε_j). Smoothing the empirical
score blurs its attraction to single training points, so samples leave the training set.

The ε_j come from the denoiser's own CPU generator seeded by (seed, t) and are shared by every sample of
a step: the output is a fixed function of (x_t, t), the same at any batch size, and the sampler's noise
stream and torch's global generator are never touched.
"""

from __future__ import annotations

import torch

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.budget import rows_that_fit
from studio.denoisers.common import CHUNK, TEMPERATURE
from studio.denoisers.registry import register
from studio.denoisers.softmax import DataBank, posterior_mean
from studio.params import Param


def smoothing_noise(seed: int, t: int, copies: int, shape: tuple[int, ...]) -> torch.Tensor:
    """ε [copies, *shape] for step t, from a CPU generator seeded by (seed, t)."""
    g = torch.Generator().manual_seed(int(digest("scfdm-noise", seed, t), 16) % 2**63)
    return torch.randn((copies, *shape), generator=g)


@register
class SCFDM(Denoiser):
    name = "scfdm"
    summary = "optimal denoiser averaged over M Gaussian perturbations of x_t (smoothed: generalises)"
    params = (
        Param("copies", int, 10, "M: perturbed copies of x_t averaged per step", low=1, high=10_000),
        Param("smoothing", float, None, "σ_s: std of the perturbations (auto = 1.0 for 28x28 gray, else 0.1)",
              low=0.0, high=100.0, optional=True),
        Param("seed", int, 0, "seed of the perturbations (independent of the sampler's noise)", low=0, high=2**62),
        TEMPERATURE, CHUNK,
    )

    def _fit(self, dataset: Dataset) -> None:
        self.bank = DataBank.from_dataset(dataset, self.device)
        self.shape = dataset.shape
        self.smoothing = self.p["smoothing"]
        if self.smoothing is None:
            self.smoothing = 1.0 if tuple(dataset.shape) == (1, 28, 28) else 0.1

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        B = x_t.shape[0]
        M = self.p["copies"]
        flat = x_t.reshape(B, -1).float()
        eps = smoothing_noise(self.p["seed"], t, M, (flat.shape[1],)).to(flat.device)
        group = rows_that_fit(16 * B * flat.shape[1], 0, flat.device, "denoiser.scfdm: perturbed copies", M)
        x0 = torch.zeros_like(flat)
        ess = torch.zeros(B, device=flat.device)
        for lo in range(0, M, group):
            e = eps[lo:lo + group]
            queries = (flat[None] + self.smoothing * e[:, None, :]).reshape(e.shape[0] * B, -1)
            post = posterior_mean(queries, self.bank, alpha_bar, self.p["temperature"], self.p["chunk_size"], k=1)
            x0 += post.mean.reshape(e.shape[0], B, -1).sum(0)
            ess += post.ess.reshape(e.shape[0], B).sum(0)
        shared = {"smoothing": self.smoothing, "copies": M}
        return Denoised((x0 / M).reshape(x_t.shape), {"ess": ess / M}, shared)
