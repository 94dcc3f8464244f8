"""Denoisers: one module each, registered by name; see base.Denoiser for the contract."""

from studio.denoisers import nearest, optimal, unet, wiener  # noqa: F401  (registration)
from studio.denoisers import local_score, pca_locality, scfdm  # noqa: F401  (registration)
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.registry import denoiser_class, denoiser_names, make_denoiser

__all__ = ["Denoised", "Denoiser", "denoiser_class", "denoiser_names", "make_denoiser"]
