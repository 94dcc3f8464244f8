"""Export bundles: byte-identical files, a valid dataset card, the .zip, comparisons, the MP4 note."""

from __future__ import annotations

import json
import zipfile

import pytest
import yaml
from huggingface_hub import DatasetCard

import studio.hub.export as export
from studio.hub.export import NO_VIDEO, export_run
from studio.runs import load_run

from sample_runs import make_run, tree_bytes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "run-a")


def test_export_folder_and_zip_hold_the_run_files_and_a_card(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "video_encoder_available", lambda: False)
    before = tree_bytes(run_dir)
    archive = export_run(run_dir, tmp_path / "out")
    run_id = json.loads((run_dir / "metrics.json").read_text())["run_id"]
    folder = tmp_path / "out" / run_id
    assert archive == tmp_path / "out" / f"{run_id}.zip"

    exported = tree_bytes(folder)
    card_text = exported.pop("README.md").decode()
    assert exported == before  # every run file, byte for byte, nothing else but the card
    assert tree_bytes(run_dir) == before  # the run folder is untouched
    with zipfile.ZipFile(archive) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {f"{run_id}/{k}": v for k, v in tree_bytes(folder).items()}

    card = DatasetCard(card_text)
    assert card.data.license == "cc-by-4.0"  # digits: CC BY 4.0 (UCI)
    assert card.data.task_categories == ["unconditional-image-generation"]
    assert {"analytic-diffusion-studio", "optimal", "ddim"} <= set(card.data.tags)
    body = card.text
    assert "2 samples from the **optimal** denoiser fitted on **digits** (20 items of shape 1x8x8)" in body
    assert "**ddim** sampler in 3 steps" in body
    for picture in ("samples.png", "trajectory.png", "trajectory.gif"):
        assert f"]({picture})" in body
    assert "```yaml\n" + (run_dir / "config.yaml").read_text().rstrip() + "\n```" in body
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"| summary.final_nn_rms | {metrics['summary']['final_nn_rms']:.4g} |" in body
    assert f"- Source: {metrics['dataset']['source']}" in body
    assert f"- License: {metrics['dataset']['license']}" in body
    assert NO_VIDEO in body  # says why there is no MP4
    assert load_run(folder).samples.equal(load_run(run_dir).samples)


def test_export_with_a_video_encoder_adds_the_mp4(run_dir, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio
    from PIL import Image, ImageSequence

    folder = export_run(run_dir, tmp_path, zip=False)
    with Image.open(folder / "trajectory.gif") as gif:
        durations = [f.info.get("duration") or 80 for f in ImageSequence.Iterator(gif)]
    reader = imageio.get_reader(str(folder / "trajectory.mp4"), format="FFMPEG")
    assert sum(1 for _ in reader) == sum(round(d / min(durations)) for d in durations)
    assert "[trajectory.mp4](trajectory.mp4)" in (folder / "README.md").read_text()


def test_comparison_folder_exports_both_runs_and_the_comparison_metrics(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "video_encoder_available", lambda: False)
    comparison = tmp_path / "cmp"
    make_run(comparison / "ddim-3", seed=1, steps=3)
    make_run(comparison / "ddim-5", seed=1, steps=5)
    (comparison / "metrics.json").write_text(json.dumps({"comparison_id": "ddim 3 vs 5", "rms_ratio": 0.5}))
    folder = export_run(comparison, tmp_path / "out", zip=False)
    assert folder.name == "ddim_3_vs_5"
    exported = tree_bytes(folder)
    body = exported.pop("README.md").decode()
    assert exported == tree_bytes(comparison)
    assert "A comparison of 2 runs" in body
    assert "| [ddim-3](ddim-3/) | digits | optimal | ddim | 3 |" in body
    assert "| [ddim-5](ddim-5/) | digits | optimal | ddim | 5 |" in body
    assert "](ddim-3/samples.png)" in body and "](ddim-5/trajectory.gif)" in body
    assert "| rms_ratio | 0.5 |" in body
    assert "--config ddim-5/config.yaml" in body
    assert yaml.safe_load(body.split("---")[1])["license"] == "cc-by-4.0"


def test_export_refuses_what_is_not_a_run(tmp_path, run_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a run folder"):
        export_run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="is not a folder"):
        export_run(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="must be outside the run folder"):
        export_run(run_dir, run_dir / "exports")


def test_license_ids():
    assert export.hub_license(["CC BY 4.0 (UCI)", "CC BY 4.0"]) == "cc-by-4.0"
    assert export.hub_license(["CC BY-NC 4.0"]) == "cc-by-nc-4.0"
    assert export.hub_license(["MIT (as listed on the Hub card)"]) == "mit"
    assert export.hub_license(["MIT", "CC BY 4.0"]) == "other"
    assert export.hub_license(["CelebA terms: non-commercial research and educational use only"]) == "other"
