"""Per-step statistics of a trajectory, as shown in the charts and written to metrics.json."""

from __future__ import annotations

import math
from typing import Any

import torch

from studio.analysis.neighbours import nearest
from studio.data.dataset import Dataset
from studio.diffusion.loop import Trajectory

_NN_BUDGET = 2e10  # multiply-adds spent on per-step neighbour distances; beyond it steps are subsampled


def per_step(traj: Trajectory, dataset: Dataset, device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """RMS distance of x̂0 to its nearest training item (searched on `device`, default the CPU), RMS change of
    x̂0, mean effective #points."""
    K, N = traj.x0.shape[:2]
    D = traj.x0[0, 0].numel()
    stride = max(1, math.ceil(K * N * dataset.n * D / _NN_BUDGET))
    keep = sorted(set(range(0, K, stride)) | {K - 1})
    dists = nearest(dataset, traj.x0[keep].reshape(len(keep) * N, *traj.x0.shape[2:]), k=1, device=device).distances
    nn_rms = dict(zip(keep, (dists[:, 0].reshape(len(keep), N) / math.sqrt(D)).mean(1).tolist()))
    rows = []
    for k in range(K):
        row: dict[str, Any] = {"k": k, "t": int(traj.timesteps[k]), "alpha_bar": float(traj.alpha_bar[k])}
        row["x0_nn_dist"] = nn_rms.get(k)
        change = (traj.x0[k] - traj.x0[k - 1]).reshape(N, -1).pow(2).mean(1).sqrt().mean() if k else None
        row["x0_change"] = None if change is None else float(change)
        if "ess" in traj.extras:
            row["ess"] = float(traj.extras["ess"][k].float().mean())
        rows.append(row)
    return rows


def summary(samples: torch.Tensor, dataset: Dataset, device: torch.device | str | None = None) -> dict[str, Any]:
    """Final-sample neighbour facts: RMS nearest distance and the memorisation rate (ratio < 1/3)."""
    nb = nearest(dataset, samples, k=2, device=device)
    D = samples[0].numel()
    out = {
        "final_nn_rms": float((nb.distances[:, 0] / math.sqrt(D)).mean()),
        "memorisation_rate": float(nb.memorised.float().mean()) if dataset.n > 1 else None,
        "nearest_index": nb.indices[:, 0].tolist(),
    }
    if nb.recall is not None:  # an approximate search: say which, and how often it found the true neighbours
        out["neighbour_search"] = {"method": nb.method, "recall": nb.recall}
    return out
