"""The study (issue: which analytic denoiser behaves like a trained network): metrics recomputed in float64 from
the saved tensors, the centred r²'s invariance, self-agreement, memorisation of an exact memoriser, the CLI."""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio.cli import main
from studio.config import RunConfig
from studio.studies import compare as cmp
from studio.studies.study import METRICS, run_study, save_study


def _cfg(n: int = 6, steps: int = 4) -> RunConfig:
    return RunConfig.from_dict({"dataset": {"name": "digits", "size": 64}, "denoiser": {"name": "optimal"},
                                "sampler": {"name": "ddim", "steps": steps}, "n": n, "seed": 3, "device": "cpu"})


def _r2s_numpy(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    xf, yf = x.reshape(len(x), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
    D = xf.shape[1]
    per = 1 - ((xf - yf) ** 2).sum(1) / (D * yf.var(1))
    pooled = 1 - ((xf - yf) ** 2).sum() / ((yf - yf.mean(0)) ** 2).sum()
    xc, yc = xf - xf.mean(1, keepdims=True), yf - yf.mean(1, keepdims=True)
    centred = 1 - ((xc - yc) ** 2).sum() / (yc**2).sum()
    return {"r2_median": float(np.median(per[yf.var(1) > 0])), "r2_pooled": float(pooled),
            "r2_centred": float(centred), "mse": float(((xf - yf) ** 2).mean())}


def test_centred_r2_ignores_per_image_brightness_and_matches_numpy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(7, 1, 4, 4))
    x = y + 0.4 * rng.normal(size=y.shape)
    base = cmp.r2_centred(torch.tensor(x), torch.tensor(y))
    assert base == pytest.approx(_r2s_numpy(x, y)["r2_centred"], rel=1e-12)
    shift_x = rng.normal(size=(7, 1, 1, 1)) * 3
    shift_y = rng.normal(size=(7, 1, 1, 1)) * 3
    assert cmp.r2_centred(torch.tensor(x + shift_x), torch.tensor(y)) == pytest.approx(base, rel=1e-12)
    assert cmp.r2_centred(torch.tensor(x), torch.tensor(y + shift_y)) == pytest.approx(base, rel=1e-12)
    # the pooled r² is not invariant: brightness alone moves it
    assert cmp.r2_pooled(torch.tensor(x + shift_x), torch.tensor(y)) != pytest.approx(cmp.r2_pooled(torch.tensor(x), torch.tensor(y)))


def test_study_metrics_equal_float64_from_saved_tensors_and_seed_means(tmp_path):
    study = run_study(_cfg(), ["optimal", "wiener"], reference="pca_locality", repeats=2)
    out = save_study(study, tmp_path / "study")
    rows = {r["denoiser"]: r for r in json.loads((out / "table.json").read_text())}
    for name in ("optimal", "wiener"):
        finals = []
        for seed in (3, 9):  # repeats start at seed + r·n, n = 6
            folder = out / f"seed{seed}" / name
            saved = load_file(str(folder / "samples.safetensors"))
            want = _r2s_numpy(saved["samples"].numpy(), saved["reference_samples"].numpy())
            final = json.loads((folder / "metrics.json").read_text())["final"]
            for key, value in want.items():
                assert final[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, seed, key)
            finals.append(final)
        for key in ("r2_median", "r2_pooled", "r2_centred", "mse"):
            values = [f[key] for f in finals]
            assert rows[name][f"final_{key}"] == pytest.approx(statistics.fmean(values), rel=1e-9)
            assert rows[name][f"final_{key}_sd"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-12)
    assert (out / "r2_vs_t.png").read_bytes()[:4] == b"\x89PNG"
    assert "± " in (out / "table.md").read_text()
    curves = json.loads((out / "r2_curves.json").read_text())["r2_traj_median"]
    assert set(curves) == {"optimal", "wiener"} and len(curves["optimal"]["t"]) == 4


def test_reference_against_itself_agrees_perfectly_and_an_exact_memoriser_memorises():
    study = run_study(_cfg(), ["wiener", "nearest"], reference="wiener")
    rows = {r["denoiser"]: r for r in study.rows()}
    same = rows["wiener"]
    assert same["final_r2_median"] == 1.0 and same["final_r2_pooled"] == 1.0 and same["final_r2_centred"] == 1.0
    assert same["final_mse"] == 0.0 and same["final_mse_sd"] == 0.0
    assert rows["nearest"]["memorisation"] == 1.0  # every sample is a training image
    assert set(METRICS) <= set(rows["nearest"])


def test_study_command_writes_the_table_and_refuses_no_denoisers(tmp_path, capsys):
    out = tmp_path / "s"
    code = main(["study", "--dataset", "digits", "--set", "dataset.size=64", "--steps", "3", "--n", "4",
                 "--denoisers", "optimal,wiener", "--reference", "wiener", "--repeats", "2", "--device", "cpu",
                 "--out", str(out)])
    assert code == 0
    assert (out / "table.md").exists() and (out / "seed4" / "optimal" / "metrics.json").exists()  # 0 + 1·4
    assert "| optimal |" in capsys.readouterr().out
    assert main(["study", "--denoisers", ",,,", "--out", str(tmp_path / "t")]) == 2
    assert "--denoisers" in capsys.readouterr().err


def test_the_page_shows_the_table_on_disk_and_refuses_bad_seeds(tmp_path, monkeypatch):
    import gradio as gr

    from studio.studies.study import table_markdown
    from studio.ui.catalog import current
    from studio.ui.form import RunForm
    from studio.ui.study import StudyPanel

    monkeypatch.setenv("STUDIO_OUTPUTS", str(tmp_path / "outputs"))
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 64}, "denoiser": {"name": "optimal"},
                               "sampler": {"name": "ddim", "steps": 3}, "n": 4, "seed": 1, "device": "cpu"})
    with gr.Blocks():
        form = RunForm(current(), cfg.to_dict())
        panel = StudyPanel(form, current(), gr.DownloadButton())
    values = {c: c.value for c in form.inputs}

    def run(denoisers: list[str], reference: str, repeats: int) -> dict:
        return panel.run({**values, panel.denoisers: denoisers, panel.reference: reference, panel.repeats: repeats})

    out = run(["optimal", "wiener"], "wiener", 2)
    shown, figure, archive = out[panel.table], out[panel.chart], out[panel.download]
    folders = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert len(folders) == 1 and shown.startswith("done · 2 denoiser(s) × 2 repeat(s)")
    assert re.search(r"-study-digits-[0-9a-f]{16}$", folders[0].name)  # 64 random bits: not guessable
    on_disk = json.loads((folders[0] / "table.json").read_text())
    assert shown.endswith("\n\n" + table_markdown(on_disk))
    assert [r["denoiser"] for r in on_disk] == ["optimal", "wiener"] and on_disk[1]["final_r2_median"] == 1.0
    assert {trace.name for trace in figure.data} == {"optimal", "wiener"}
    assert archive["value"].endswith(".zip") and archive["visible"] is True
    with pytest.raises(gr.Error, match="repeats"):
        run(["optimal"], "wiener", 9)
    with pytest.raises(gr.Error, match="denoisers"):
        run([], "wiener", 1)


def test_repeats_draw_disjoint_noise():
    from studio.diffusion.noise import NoiseSource
    from studio.studies.study import repeat_seeds

    seeds = repeat_seeds(5, 4, 3)
    assert seeds == [5, 9, 13]
    draws = [NoiseSource(s, 4, (1, 2, 2), "cpu").draw().reshape(4, -1) for s in seeds]
    rows = torch.cat(draws)
    assert torch.unique(rows, dim=0).shape[0] == 12  # no sample's noise repeats across the repeats
    with pytest.raises(ValueError, match="repeats"):
        repeat_seeds(0, 4, 0)
