"""Comparison metrics: r²/MSE against numpy, identical denoisers agree perfectly, both sides share x_T."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from studio.studies import compare as cmp
from studio.cli import main
from studio.config import RunConfig


def _cfg(denoiser: str = "wiener", dataset: str = "digits", steps: int = 4, n: int = 6, **extra) -> RunConfig:
    data = {"dataset": {"name": dataset, **({"size": 64} if dataset == "digits" else {"size": 150})},
            "denoiser": {"name": denoiser}, "sampler": {"name": "ddim", "steps": steps}, "n": n, "seed": 3,
            "device": "cpu", **extra}
    return RunConfig.from_dict(data)


def test_r2_and_mse_match_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 2, 3, 3))
    x = y + 0.3 * rng.normal(size=y.shape)
    yf, xf = y.reshape(5, -1), x.reshape(5, -1)
    D = yf.shape[1]
    r2 = 1 - ((xf - yf) ** 2).sum(1) / (D * yf.var(1))
    np.testing.assert_allclose(cmp.r2_per_sample(torch.tensor(x), torch.tensor(y)).numpy(), r2, rtol=1e-12)
    np.testing.assert_allclose(cmp.mse_per_sample(torch.tensor(x), torch.tensor(y)).numpy(),
                               ((xf - yf) ** 2).mean(1), rtol=1e-12)
    pooled = 1 - ((xf - yf) ** 2).sum() / ((yf - yf.mean(0)) ** 2).sum()
    assert cmp.r2_pooled(torch.tensor(x), torch.tensor(y)) == pytest.approx(pooled, rel=1e-12)
    a = cmp.agreement(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), "image")
    assert a["r2_mean"] == pytest.approx(r2.mean(), rel=1e-5) and a["r2_median"] == pytest.approx(np.median(r2), rel=1e-5)
    assert a["mse"] == pytest.approx(((xf - yf) ** 2).mean(), rel=1e-5)
    assert a["r2_pooled"] == pytest.approx(pooled, rel=1e-5)
    # A constant reference image has no variance: NaN, left out of the mean.
    y0 = torch.tensor(y.copy())
    y0[0] = 1.0
    r2_const = cmp.r2_per_sample(torch.tensor(x), y0)
    assert math.isnan(r2_const[0]) and not r2_const[1:].isnan().any()
    assert cmp.agreement(torch.tensor(x), y0, "image")["r2_mean"] == pytest.approx(r2_const[1:].mean().item())


def test_identical_denoisers_agree_perfectly_and_share_x_T():
    comp = cmp.compare(_cfg("wiener"), reference="wiener")
    assert comp.final["r2_mean"] == 1.0 and comp.final["mse"] == 0.0
    for row in comp.per_step:
        assert row["r2_traj"] == 1.0 and row["r2_single"] == 1.0 and row["mse_traj"] == 0.0
    assert torch.equal(comp.trajectory.x_t[0], comp.reference.trajectory.x_t[0])
    assert comp.memorisation["test"] == comp.memorisation["reference"]


def test_different_denoisers_share_x_T_and_single_step_is_on_reference_states():
    cfg = _cfg("optimal", sampler={"name": "ddim", "steps": 4, "eta": 1.0})
    comp = cmp.compare(cfg, reference="wiener")
    ref = comp.reference.trajectory
    assert torch.equal(comp.trajectory.x_t[0], ref.x_t[0]) and torch.equal(comp.reference.x_T, ref.x_t[0])
    doc = comp.to_dict()
    assert doc["x_T_digest"] == doc["reference"]["x_T_digest"]
    assert not torch.equal(comp.trajectory.x_t[1], ref.x_t[1])  # the trajectories part after step 0
    # Single step: the test denoiser applied to the reference's states, checked directly for one step.
    prep = cmp.prepare(cfg)
    k = 2
    direct = prep.denoiser.denoise(ref.x_t[k], int(ref.timesteps[k]), float(ref.alpha_bar[k])).x0
    torch.testing.assert_close(comp.single_step_x0[k], direct)
    expect = cmp.agreement(direct, ref.x0[k], "image")
    assert comp.per_step[k]["r2_single"] == pytest.approx(expect["r2_mean"])
    assert comp.per_step[0]["r2_traj"] == pytest.approx(comp.per_step[0]["r2_single"])  # same x_T at step 0
    final = cmp.agreement(comp.trajectory.samples, ref.samples, "image")
    assert comp.final == pytest.approx(final)
    assert comp.final["r2_mean"] < 1
    series = cmp.per_step_series(comp)
    assert len(series["r2_traj"]) == 4 and series["t"] == [int(t) for t in ref.timesteps]
    row = cmp.summary_row(comp)
    assert row["denoiser"] == "optimal" and row["reference"] == "wiener" and 0 <= row["memorisation"] <= 1


def test_points_use_the_pooled_r2():
    comp = cmp.compare(_cfg("optimal", dataset="moons"), reference="wiener", single_step=False)
    expect = cmp.r2_pooled(comp.trajectory.samples, comp.reference.trajectory.samples)
    assert comp.final["r2_mean"] == pytest.approx(expect) == comp.final["r2_median"] == comp.final["r2_pooled"]
    assert "r2_single" not in comp.per_step[0] and comp.single_step_x0 is None


def test_only_the_denoiser_may_differ():
    ref = cmp.run_reference(_cfg("optimal"), "wiener")
    with pytest.raises(ValueError, match="compare: the reference ran another setting .*seed"):
        cmp.compare_to(ref, _cfg("optimal", seed=9))


def test_compare_many_shares_one_reference_and_cli_writes_outputs(tmp_path, capsys):
    comps = cmp.compare_many(_cfg(), [("nearest", {}), ("wiener", {})], reference="optimal")
    assert comps[0].reference is comps[1].reference
    rc = main(["compare", "--dataset", "digits", "--set", "dataset.size=64", "--denoiser", "wiener", "--steps", "3",
               "--n", "4", "--device", "cpu", "--reference", "optimal", "--out", str(tmp_path / "one")])
    assert rc == 0
    doc = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert len(doc["per_step"]) == 3 and set(doc["final"]) == {"mse", "r2_mean", "r2_median", "r2_pooled", "r2_centred"}
    assert doc["reference"]["denoiser"]["name"] == "optimal" and "Var(y)" in doc["definitions"]["r2"]
    for name in ("compare.png", "samples.png"):
        assert (tmp_path / "one" / name).read_bytes()[:4] == b"\x89PNG"
    rc = main(["compare", "--dataset", "digits", "--set", "dataset.size=64", "--steps", "3", "--n", "4",
               "--device", "cpu", "--reference", "optimal", "--denoisers", "nearest,wiener", "--out",
               str(tmp_path / "many")])
    assert rc == 0
    table = json.loads((tmp_path / "many" / "table.json").read_text())
    assert [r["denoiser"] for r in table] == ["nearest", "wiener"]
    assert (tmp_path / "many" / "nearest" / "metrics.json").is_file()
    assert "| nearest |" in (tmp_path / "many" / "table.md").read_text()
    assert main(["compare", "--dataset", "digits", "--reference", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert "denoiser.name: unknown denoiser 'nope'" in capsys.readouterr().err
