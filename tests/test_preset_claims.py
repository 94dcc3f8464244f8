"""Every preset shows what it says: its YAML declares a claim (`claim:`), and here each preset runs on the CPU
exactly as the page runs it (both sides for a comparison) and the claim is checked on the result."""

import time

import pytest

from studio.data.registry import load_dataset
from studio.engine import execute
from studio.presets import compare_pair, list_presets
from studio.studies.study import run_study

PRESETS = list_presets()[0]
BUDGET_S = 60  # all presets together, cold cache, on a 2-core CPU


def per_image_variance(x) -> float:
    return float(x.reshape(x.shape[0], -1).var(1).mean())


def measured(run) -> dict[str, float]:
    """What a claim can name, for one run."""
    cfg = run.config
    summary = run.metrics["summary"]
    values = {"memorised": summary["memorisation_rate"], "nn_rms": summary["final_nn_rms"]}
    if run.is_image:
        data = load_dataset(cfg.dataset.name, **cfg.dataset.options).x
        values["variance_ratio"] = per_image_variance(run.samples) / per_image_variance(data)
    return values


def check(claim: dict[str, float], values: dict[str, float], prefix: str = "") -> list[str]:
    failed = []
    for key, bound in claim.items():
        if not key.startswith(prefix) or (not prefix and key[:2] in ("a_", "b_")) or key.startswith("sides_"):
            continue
        name = key[len(prefix):]
        quantity = name.rsplit("_at_", 1)[0]
        value = values[quantity]
        ok = value >= bound if name.endswith("_at_least") else value <= bound
        if not ok:
            failed.append(f"{key} {bound}: measured {value:.3f}")
    return failed


def final_rms(a, b) -> float:
    return float((a.samples - b.samples).reshape(a.samples.shape[0], -1).pow(2).mean(1).sqrt().mean())


@pytest.fixture(scope="module")
def clock():
    return {"spent": 0.0}


def study_values(rows: list[dict]) -> dict[str, float]:
    """What a study claim can name: <denoiser or reference>_<quantity>, from the study's table rows."""
    values = {"reference_memorised": rows[0]["reference_memorisation"]}
    for row in rows:
        for quantity, column in (("memorised", "memorisation"), ("r2_centred", "final_r2_centred"),
                                 ("r2_median", "final_r2_median")):
            values[f"{row['denoiser']}_{quantity}"] = row[column]
    return values


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.study], ids=lambda p: p.name)
def test_each_study_preset_delivers_its_claim(preset):
    study = run_study(preset.config, preset.study["denoisers"], preset.study["reference"],
                      repeats=preset.study["repeats"])
    assert preset.claim and not check(preset.claim, study_values(study.rows())), (
        f"{preset.name}: " + "; ".join(check(preset.claim, study_values(study.rows()))))


@pytest.mark.parametrize("preset", [p for p in PRESETS if not p.study], ids=lambda p: p.name)
def test_each_preset_delivers_its_claim(preset, clock):
    assert preset.claim, f"{preset.name}: no claim declared"
    start = time.perf_counter()
    if preset.compare:
        cfg_a, cfg_b = compare_pair(preset.config, preset.compare)
        run_a, run_b = execute(cfg_a), execute(cfg_b)
        failed = check(preset.claim, measured(run_a), "a_") + check(preset.claim, measured(run_b), "b_")
        apart = final_rms(run_a, run_b)
        if apart < preset.claim.get("sides_differ_at_least", 0.0):
            failed.append(f"sides_differ_at_least {preset.claim['sides_differ_at_least']}: RMS {apart:.3f}")
        if apart > preset.claim.get("sides_agree_within", float("inf")):
            failed.append(f"sides_agree_within {preset.claim['sides_agree_within']}: RMS {apart:.3f}")
    else:
        failed = check(preset.claim, measured(execute(preset.config)))
    clock["spent"] += time.perf_counter() - start
    assert not failed, f"{preset.name}: " + "; ".join(failed)
    assert clock["spent"] < BUDGET_S


def test_claims_name_only_known_quantities():
    for preset in PRESETS:
        assert preset.opens in ("sample", "neighbours", "locality", "compare")
        sided = [k for k in preset.claim if k[:2] in ("a_", "b_") or k.startswith("sides_")]
        assert bool(sided) == bool(preset.compare), preset.name  # sides only where there is a comparison
