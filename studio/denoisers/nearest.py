"""Nearest neighbour: x̂0 = x_{i*}, i* = argmin_i ||x_t - s x_i||² (the zero-temperature limit of optimal)."""

from __future__ import annotations

import torch

from studio.data.dataset import Dataset
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.byte_bank import bank_rows, data_bank
from studio.denoisers.common import CHUNK, STORAGE, TOPK
from studio.denoisers.registry import register
from studio.denoisers.softmax import nearest_rows


@register
class Nearest(Denoiser):
    name = "nearest"
    summary = "copy the closest training point (pure memorisation)"
    params = (CHUNK, TOPK, STORAGE)

    def _fit(self, dataset: Dataset) -> None:
        self.bank = data_bank(dataset, self.device, self.p["storage"])

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        flat = x_t.reshape(x_t.shape[0], -1).float()
        idx, dist = nearest_rows(flat, self.bank, alpha_bar, self.p["chunk_size"], self.p["top_k"])
        weights = torch.zeros_like(dist)
        weights[:, 0] = 1
        x0 = bank_rows(self.bank, idx[:, 0]).reshape(x_t.shape)
        return Denoised(x0, {"neighbours": idx, "weights": weights, "ess": torch.ones(len(idx), device=x_t.device)})
