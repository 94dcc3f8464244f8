"""Nearest training neighbours, the one search of the studio: exact by matrix products on the device (the same
top-k as the `nearest` denoiser, studio.denoisers.softmax.nearest_rows) while the data (N·D floats) fits
`EXACT_MAX_BYTES`; above it a faiss IVF index (GPU when faiss has GPU support) whose recall@k against the
exact search is measured on a sample of the queries and reported with the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from studio.cache import Recent
from studio.data.dataset import Dataset
from studio.denoisers.softmax import DataBank, nearest_rows

MEMORISED_RATIO = 1 / 3
EXACT_MAX_BYTES = 2 * 2**30  # the training data as fp32 on the device, for the exact search
RECALL_SAMPLE = 64  # queries checked against the exact search when the approximate one answers
METHODS = ("auto", "exact", "faiss")
_BANKS = Recent(keep=4)    # DataBank by (fingerprint, device)
_INDEXES = Recent(keep=4)  # faiss index by fingerprint


@dataclass
class Neighbours:
    """For each query: training indices and Euclidean distances, nearest first; how they were found, and for
    the approximate search its recall@k measured on a sample of the queries."""

    indices: torch.Tensor
    distances: torch.Tensor
    method: str = "exact"
    recall: float | None = None

    @property
    def ratio(self) -> torch.Tensor:
        """Nearest / second-nearest distance: below 1/3 means the sample is a copy (memorised)."""
        return self.distances[:, 0] / self.distances[:, 1].clamp_min(1e-12)

    @property
    def memorised(self) -> torch.Tensor:
        return self.ratio < MEMORISED_RATIO


def bank_for(dataset: Dataset, device: torch.device, resident: DataBank | None = None) -> DataBank:
    """The dataset as the denoisers' DataBank on `device` ([N, D] fp32 and squared norms), kept for reuse;
    `resident` is a bank of the same data already on `device` (a fitted denoiser's), used instead of a copy."""
    return _BANKS.get_or_make((dataset.fingerprint, str(device)),
                              lambda: resident if resident is not None else DataBank.from_dataset(dataset, device))


def exact(dataset: Dataset, queries: torch.Tensor, k: int = 8, device: torch.device | str | None = None
          ) -> Neighbours:
    """Exact k nearest (L2) of each query [M, *shape] by chunked matrix products on `device` (the queries')."""
    device = torch.device(device) if device is not None else queries.device
    k = min(k, dataset.n)
    q = queries.detach().to(device, torch.float32).reshape(len(queries), -1)  # [M, D]
    idx, d2 = nearest_rows(q, bank_for(dataset, device), 1.0, k=k)  # [M, k] each; ā = 1: ||q - x_i||²
    return Neighbours(idx.long().cpu(), d2.clamp_min(0).sqrt().float().cpu())


def _gpu_ready(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def faiss_index(dataset: Dataset):
    """An IVF-flat faiss index of the dataset (√N·4 lists, 16 probed; on the GPU when faiss has GPU support)."""
    import faiss

    def build():
        data = np.ascontiguousarray(dataset.flat().numpy(), dtype=np.float32)  # [N, D]
        lists = max(1, min(dataset.n // 39, int(4 * math.sqrt(dataset.n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists)
        if _gpu_ready(faiss):
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.train(data)
        index.add(data)
        faiss.extract_index_ivf(index).nprobe = min(16, lists)
        return index

    return _INDEXES.get_or_make(dataset.fingerprint, build)


def approximate(dataset: Dataset, queries: torch.Tensor, k: int = 8) -> Neighbours:
    """k nearest through the faiss IVF index, with recall@k against `exact` on up to RECALL_SAMPLE queries."""
    k = min(k, dataset.n)
    q = np.ascontiguousarray(queries.detach().float().cpu().reshape(len(queries), -1).numpy())  # [M, D]
    d2, idx = faiss_index(dataset).search(q, k)  # [M, k] each; -1 where a probe found fewer than k
    sample = torch.linspace(0, len(q) - 1, min(RECALL_SAMPLE, len(q))).round().long().unique()
    truth = exact(dataset, queries[sample], k).indices  # [S, k]
    found = torch.from_numpy(idx[sample.numpy()]).long()  # [S, k]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth))
    return Neighbours(torch.from_numpy(idx).long(), torch.from_numpy(np.sqrt(np.maximum(d2, 0))).float(),
                      "faiss-ivf", hits / truth.numel())


def nearest(dataset: Dataset, queries: torch.Tensor, k: int = 8, method: str = "auto",
            device: torch.device | str | None = None) -> Neighbours:
    """k nearest training items of each query [M, *shape]: `exact` while N·D fits EXACT_MAX_BYTES (auto) or
    when asked, else the faiss index with its measured recall."""
    if method not in METHODS:
        raise ValueError(f"neighbours: unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    fits = dataset.n * math.prod(dataset.shape) * 4 <= EXACT_MAX_BYTES
    if method == "exact" or (method == "auto" and fits):
        return exact(dataset, queries, k, device)
    return approximate(dataset, queries, k)
