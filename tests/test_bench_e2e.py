"""`bench --e2e` and `bench --setup`: the rows they plan and what they print (timings themselves are not tested)."""

import torch

from studio.studies import bench


def test_e2e_plans_each_denoiser_shape_and_step_count():
    cfgs = bench.e2e_configs(torch.device("cuda"), [10, 50], None, None)
    keys = {(c["denoiser"]["name"], c["dataset"]["resolution"], c["dataset"]["size"], c["sampler"]["steps"]) for c in cfgs}
    assert ("optimal", 32, 50_000, 50) in keys and ("pca_locality", 64, 30_000, 10) in keys
    assert ("els", 32, 10_000, 10) in keys and not any(k[0] == "els" and k[1] == 64 for k in keys)
    assert all(c["n"] == 8 and c["sampler"]["name"] == "ddim" for c in cfgs)
    cpu = bench.e2e_configs(torch.device("cpu"), [10], None, ["optimal"])
    assert [(c["dataset"]["resolution"], c["dataset"]["size"]) for c in cpu] == [(16, 5_000)]


def test_e2e_row_of_a_real_run_and_its_table(tmp_path):
    cfg = bench.e2e_configs(torch.device("cpu"), [3], [(1, 8, 8, 200)], ["optimal"])[0]
    rows = bench.e2e_row(cfg, str(bench.__file__).rsplit("/studio/", 1)[0], timeout=300)
    assert [r["mode"] for r in rows] == list(bench.MODES)
    for r in rows:
        assert "error" not in r, r
        parts = sum(r[k] for k in ("load_s", "fit_s", "setup_s", "denoise_s", "overhead_s", "analysis_s", "other_s"))
        assert parts <= r["wall_s"] * 1.05 + 0.05
    assert rows[2]["load_s"] < rows[0]["wall_s"] and rows[2]["fit_s"] < 0.05  # warm process: fitted already
    text = bench.e2e_table(rows + [{**rows[0], "mode": "cold", "error": "TimeoutExpired: 300 s"}])
    assert text.count("optimal") == 4 and "TimeoutExpired" in text


def test_e2e_calls_per_level_and_their_table():
    rows = bench.e2e_calls("pca_locality", torch.device("cpu"), (1, 8, 8, 200), str(bench.__file__).rsplit("/studio/", 1)[0],
                           timeout=300)
    assert [r["t"] for r in rows] == list(bench.E2E_CALL_LEVELS)
    for r in rows:
        assert "error" not in r, r
        assert 0 < r["min_ms"] <= r["ms"] and 0 < r["density"] <= 1 and r["threads"] >= 1
    text = bench.calls_table(rows + [{**rows[0], "error": "RuntimeError: exit 1"}])
    assert text.count("pca_locality") == 4 and "RuntimeError" in text


def test_cold_rows_start_from_empty_studio_and_triton_caches(monkeypatch):
    """Cold means a fresh machine: each row's children get their own empty STUDIO_CACHE and TRITON_CACHE_DIR (the
    warm-cache run then reuses both), and so does the per-call child."""
    import os

    seen = []

    def child(args, env, cwd, timeout):
        seen.append({k: env[k] for k in ("STUDIO_CACHE", "TRITON_CACHE_DIR")})
        raise RuntimeError("not run")

    monkeypatch.setattr(bench, "_run_child", child)
    cfg = bench.e2e_configs(torch.device("cpu"), [3], [(1, 8, 8, 200)], ["optimal"])[0]
    rows = bench.e2e_row(cfg, ".", timeout=1)
    assert [r["error"] for r in rows] == ["RuntimeError: not run"] * 3 and len(seen) == 3
    assert seen[0] == seen[1] == seen[2] and not any(os.path.exists(p) and os.listdir(p) for p in seen[0].values())
    bench.e2e_row(cfg, ".", timeout=1)
    assert seen[3]["TRITON_CACHE_DIR"] != seen[0]["TRITON_CACHE_DIR"]  # a new row: new caches
    assert "error" in bench.e2e_calls("optimal", torch.device("cpu"), (1, 8, 8, 200), ".", timeout=1)[0]
    assert seen[-1]["TRITON_CACHE_DIR"] not in {s["TRITON_CACHE_DIR"] for s in seen[:-1]}
