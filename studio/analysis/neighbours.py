"""Exact nearest training neighbours through a faiss flat (L2) index, built once per dataset fingerprint."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from studio.data.dataset import Dataset

MEMORISED_RATIO = 1 / 3
_INDEXES: OrderedDict[str, faiss.Index] = OrderedDict()
_MAX_INDEXES = 4


def _gpu_ready() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def index_for(dataset: Dataset) -> faiss.Index:
    """The exact flat L2 index of `dataset` (GPU when faiss has GPU support), kept for reuse."""
    key = dataset.fingerprint
    if key in _INDEXES:
        _INDEXES.move_to_end(key)
        return _INDEXES[key]
    data = np.ascontiguousarray(dataset.flat().numpy(), dtype=np.float32)
    index = faiss.IndexFlatL2(data.shape[1])
    if _gpu_ready():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(data)
    _INDEXES[key] = index
    while len(_INDEXES) > _MAX_INDEXES:
        _INDEXES.popitem(last=False)
    return index


@dataclass
class Neighbours:
    """For each query: training indices and Euclidean distances, nearest first."""

    indices: torch.Tensor
    distances: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        """Nearest / second-nearest distance: below 1/3 means the sample is a copy (memorised)."""
        return self.distances[:, 0] / self.distances[:, 1].clamp_min(1e-12)

    @property
    def memorised(self) -> torch.Tensor:
        return self.ratio < MEMORISED_RATIO


def nearest(dataset: Dataset, queries: torch.Tensor, k: int = 8) -> Neighbours:
    """k nearest training items of each query [M, *shape] (exact L2)."""
    k = min(k, dataset.n)
    q = np.ascontiguousarray(queries.detach().float().cpu().reshape(len(queries), -1).numpy())
    d2, idx = index_for(dataset).search(q, k)
    return Neighbours(torch.from_numpy(idx).long(), torch.from_numpy(np.sqrt(np.maximum(d2, 0))).float())
