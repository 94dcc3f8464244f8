"""Wiener filter: the posterior mean under a Gaussian fit N(μ, Σ) of the data (a linear denoiser)."""

from __future__ import annotations

import torch

from studio.cache import cached_tensors, digest
from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.registry import register


def gaussian_fit(dataset: Dataset, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """μ, and Σ = U diag(λ) Uᵀ (population covariance, float64 eigh on `device`), cached by fingerprint."""

    def build() -> dict[str, torch.Tensor]:
        x = dataset.flat().to(device).double()
        mu = x.mean(0)
        xc = x - mu
        lam, u = torch.linalg.eigh(xc.T @ xc / x.shape[0])
        return {"mu": mu, "lam": lam.clamp_min(0), "u": u}

    return cached_tensors("gaussian-fit", digest("v1", dataset.fingerprint), build)


def wiener_gains(lam: torch.Tensor, ab: float) -> torch.Tensor:
    """Per-eigendirection shrinkage ā λ / (ā λ + 1 - ā)."""
    return ab * lam / (ab * lam + (1 - ab))


@register
class Wiener(Denoiser):
    name = "wiener"
    summary = "linear Gaussian posterior mean (blurs: keeps only the data's principal directions)"

    def _fit(self, dataset: Dataset) -> None:
        fit = gaussian_fit(dataset, self.device)
        self.mu = fit["mu"].to(self.device, torch.float32)
        self.u = fit["u"].to(self.device, torch.float32).contiguous()
        self.lam = fit["lam"].to(self.device)

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        flat = x_t.reshape(x_t.shape[0], -1).float()
        coeff = (flat / alpha_bar**0.5 - self.mu) @ self.u
        coeff = coeff * wiener_gains(self.lam, alpha_bar).float()
        return Denoised(torch.addmm(self.mu, coeff, self.u.T).reshape(x_t.shape))
