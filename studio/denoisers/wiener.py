"""Wiener filter: the posterior mean under a Gaussian fit N(μ, Σ) of the data (a linear denoiser)."""

from __future__ import annotations


import torch

from studio.cache import Recent, cached_tensors, digest, entry_path
from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.budget import memory_budget, require
from studio.denoisers.registry import register
from studio.denoisers.softmax import flat_on


_FITS = Recent(keep=2)  # fits in memory, by (cache file, device)


def centred_covariance(x: torch.Tensor, device: torch.device, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """μ [D] and the population covariance Σ = (x - μ)ᵀ(x - μ) / N [D, D], float64 on `device`, from x [N, D] fp32.

    The data travel to `device` once in their own dtype; each block of `rows` rows is widened to float64 there and
    added into Σ with one matrix product (a single block when the budget allows): no float64 copy of all the data."""
    N, D = x.shape
    if rows is None:  # Σ, eigh's workspace and (on another device) the data, then float64 blocks in what is left
        fixed = 8 * D * D * 3 + (x.element_size() * N * D if x.device != device else 0)
        if device.type == "cuda":
            require(fixed + 16 * D * min(N, 256), device, "the Gaussian fit (float64 covariance and eigh)")
        rows = int(min(N, max(256, (memory_budget(device) - fixed) // (16 * D))))
    xd = x.to(device)  # [N, D] in the data's own dtype
    mu = torch.zeros(D, dtype=torch.float64, device=device)
    for lo in range(0, N, rows):
        mu += xd[lo:lo + rows].double().sum(0)
    mu /= N
    cov = torch.zeros(D, D, dtype=torch.float64, device=device)
    for lo in range(0, N, rows):
        xc = xd[lo:lo + rows].double() - mu  # [rows, D] float64
        cov.addmm_(xc.T, xc)
    return mu, cov.div_(N)


def fit_gaussian(x: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """μ [D], λ [D] (ascending, clamped at 0) and U [D, D] with Σ = U diag(λ) Uᵀ, all float64 on `device`."""
    mu, cov = centred_covariance(x, device)
    lam, u = torch.linalg.eigh(cov)  # float64 on `device` (cuSOLVER on a GPU)
    return {"mu": mu, "lam": lam.clamp_min(0), "u": u}


def gaussian_fit(dataset: Dataset, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """μ, and Σ = U diag(λ) Uᵀ (population covariance, float64 eigh on `device`: the GPU in a GPU run), cached on
    disk by fingerprint and kept in memory on `device` for the process (the two most recent fits)."""
    device = torch.device(device)
    name = digest("v1", dataset.fingerprint)
    key = (str(entry_path("gaussian-fit", name)), str(device))

    def load() -> dict[str, torch.Tensor]:
        build = lambda: fit_gaussian(flat_on(dataset, device), device)  # noqa: E731  (8-bit data decoded there)
        return {k: v.to(device) for k, v in cached_tensors("gaussian-fit", name, build, in_background=True).items()}

    return _FITS.get_or_make(key, load)


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
