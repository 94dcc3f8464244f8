"""Bayes-optimal denoiser under the empirical prior: the exact posterior mean over ALL N points."""

from __future__ import annotations

import torch

from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.byte_bank import data_bank
from studio.denoisers.common import CHUNK, STORAGE, TEMPERATURE, TOPK
from studio.denoisers.registry import register
from studio.denoisers.softmax import posterior_mean


@register
class Optimal(Denoiser):
    name = "optimal"
    summary = "exact posterior mean under the training set (memorises at low noise)"
    params = (TEMPERATURE, CHUNK, TOPK, STORAGE)

    def _fit(self, dataset: Dataset) -> None:
        self.bank = data_bank(dataset, self.device, self.p["storage"])

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        flat = x_t.reshape(x_t.shape[0], -1).float()
        post = posterior_mean(flat, self.bank, alpha_bar, self.p["temperature"], self.p["chunk_size"], self.p["top_k"])
        extras = {"neighbours": post.top_idx, "weights": post.top_w, "ess": post.ess}
        return Denoised(post.mean.reshape(x_t.shape), extras)
