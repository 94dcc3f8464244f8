"""One neighbour search: the exact one (matrix products, the `nearest` denoiser's top-k) equals a brute-force
faiss flat index on random data; the faiss IVF path reports its recall; `auto` picks by the data's size."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from studio.analysis import neighbours
from studio.analysis.neighbours import approximate, exact, nearest
from studio.analysis.stats import summary
from studio.data.dataset import Dataset


def _data(n: int = 3000, d: int = 24, seed: int = 0) -> Dataset:
    x = torch.randn(n, 1, 4, d // 4, generator=torch.Generator().manual_seed(seed))
    return Dataset(x=x, name="random", kind="image", fingerprint=f"random-{n}-{d}-{seed}")


def test_exact_search_equals_a_flat_faiss_index():
    ds = _data()
    queries = torch.randn(50, *ds.shape, generator=torch.Generator().manual_seed(1))
    flat = faiss.IndexFlatL2(ds.flat().shape[1])
    flat.add(np.ascontiguousarray(ds.flat().numpy()))
    d2, idx = flat.search(np.ascontiguousarray(queries.reshape(50, -1).numpy()), 5)
    nb = exact(ds, queries, k=5)
    assert nb.method == "exact" and nb.recall is None
    assert torch.equal(nb.indices, torch.from_numpy(idx).long())
    torch.testing.assert_close(nb.distances, torch.from_numpy(np.sqrt(d2)), atol=1e-4, rtol=1e-4)
    # a training item is its own nearest neighbour at distance 0
    own = exact(ds, ds.x[:10], k=2)
    assert own.indices[:, 0].tolist() == list(range(10)) and own.distances[:, 0].max() < 1e-3


def test_faiss_path_reports_its_recall_and_auto_picks_by_size(monkeypatch):
    ds = _data(seed=2)
    queries = ds.x[:40] + 0.05 * torch.randn(40, *ds.shape, generator=torch.Generator().manual_seed(3))
    approx = approximate(ds, queries, k=4)
    assert approx.method == "faiss-ivf" and 0.0 <= approx.recall <= 1.0
    assert approx.recall > 0.5  # queries next to training items: the IVF probes find most of them
    assert approx.indices[:, 0].tolist() == list(range(40))
    assert nearest(ds, queries, k=4).method == "exact"  # 3000 × 24 floats fit
    monkeypatch.setattr(neighbours, "EXACT_MAX_BYTES", 1000)
    chosen = nearest(ds, queries, k=4)
    assert chosen.method == "faiss-ivf" and chosen.recall == approx.recall
    at2 = approximate(ds, queries, k=2).recall  # the summary asks for 2 neighbours
    assert summary(queries, ds)["neighbour_search"] == {"method": "faiss-ivf", "recall": at2}
    with pytest.raises(ValueError, match="unknown method"):
        nearest(ds, queries, method="annoy")


def test_the_nearest_denoiser_and_the_analysis_share_the_search():
    from studio.denoisers.registry import make_denoiser

    ds = _data(n=500, seed=4)
    queries = ds.x[:8] + 0.01 * torch.randn(8, *ds.shape, generator=torch.Generator().manual_seed(5))
    x0 = make_denoiser("nearest").fit(ds).denoise(queries, 0, 0.9999).x0
    picked = exact(ds, queries / 0.9999 ** 0.5, k=1).indices[:, 0]
    assert torch.equal(x0, ds.x[picked])
    assert "neighbour_search" not in summary(queries, ds)  # exact: nothing to qualify


def test_bench_reports_both_searches_against_a_float64_brute_force(tmp_path, capsys):
    import json

    from studio.cli import main

    out = tmp_path / "nb.json"
    assert main(["bench", "--neighbours", "--device", "cpu", "--n-data", "600", "--shape", "1x8x8",
                 "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["exact (matrix products)", "faiss IVF"]
    assert rows[0]["recall_vs_float64"] >= 0.99 and rows[0]["recall_reported"] is None
    assert 0.0 <= rows[1]["recall_vs_float64"] <= 1.0 and 0.0 <= rows[1]["recall_reported"] <= 1.0
    assert all(r["ms"] > 0 and r["build_ms"] >= 0 for r in rows)
    assert "faiss IVF" in capsys.readouterr().out
