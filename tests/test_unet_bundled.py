"""The bundled checkpoints: present for every bundled dataset, small, loadable, and `--denoiser unet` samples
with each of them offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio.cli import main
from studio.data.registry import load_dataset
from studio.models import checkpoints
from studio.models.checkpoints import load_network, trained_info

# dataset, options, bundled checkpoint
BUNDLED = [
    ("digits", {}, "digits"),
    ("faces", {}, "faces"),
    ("patches", {"channels": 1}, "patches/gray16"),
    ("patches", {}, "patches/rgb16"),
    ("patches", {"resolution": 32, "size": 50000}, "patches/rgb32"),
    ("swissroll", {}, "swissroll"),
    ("moons", {}, "moons"),
    ("gaussians8", {}, "gaussians8"),
    ("checkerboard", {}, "checkerboard"),
]
MB = 1_000_000


def test_every_bundled_dataset_has_a_checkpoint():
    found = {checkpoints.label(f) for folders in checkpoints.all_bundled().values() for f in folders}
    assert found == {label for _, _, label in BUNDLED}


@pytest.mark.parametrize("name,options,label", BUNDLED, ids=[b[2] for b in BUNDLED])
def test_bundled_checkpoint_is_small_loads_and_matches_its_data(name, options, label):
    folder = checkpoints.CHECKPOINTS / label
    weights = checkpoints.model_folder(folder) / checkpoints.WEIGHTS
    assert weights.stat().st_size <= 10 * MB
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 10 * MB
    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float16}
    net = load_network(folder)
    assert next(net.parameters()).dtype == torch.float32
    info = trained_info(folder)
    dataset = load_dataset(name, **options)
    assert info.data_shape == dataset.shape and info.prediction_type == "epsilon"
    assert info.schedule == {"name": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert info.dataset["fingerprint"] == dataset.fingerprint
    assert checkpoints.label(checkpoints.choose_bundled(dataset)) == label


@pytest.mark.parametrize("name,options,label", BUNDLED, ids=[b[2] for b in BUNDLED])
def test_sampling_with_the_bundled_unet_offline(name, options, label, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = [arg for key, value in options.items() for arg in ("--set", f"dataset.{key}={value}")]
    out = tmp_path / "run"
    rc = main(["sample", "--dataset", name, "--denoiser", "unet", "--sampler", "ddim", "--steps", "10", "--n", "4",
               "--seed", "0", "--device", "cpu", *sets, "--out", str(out)])
    assert rc == 0
    samples = load_file(str(out / "tensors.safetensors"))["samples"]
    assert samples.shape == (4, *load_dataset(name, **options).shape)
    # Unclipped x̂0 after 10 steps: in the data range up to a few stray pixels (the RGB patch model is the
    # least trained of them and leaves ~10% of its pixels slightly outside).
    assert torch.isfinite(samples).all() and samples.abs().max() < 2.5
    assert (samples.abs() <= 1.05).float().mean() >= 0.85


IMAGE_CHECKPOINTS = [b[2] for b in BUNDLED if b[0] in ("digits", "faces", "patches")]


@pytest.mark.parametrize("label", IMAGE_CHECKPOINTS)
def test_bundled_image_checkpoints_are_ddpm_pipeline_folders(label):
    from huggingface_hub import ModelCard

    folder = checkpoints.CHECKPOINTS / label
    assert (folder / "model_index.json").is_file() and checkpoints.model_folder(folder) == folder / "unet"
    assert not (folder / "config.json").exists()  # one layout per folder
    meta = ModelCard.load(folder / "README.md").data.to_dict()
    assert meta["license"] == "mit" and meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "unconditional-image-generation"
    assert meta["studio"]["dataset"]["fingerprint"] == trained_info(folder).dataset["fingerprint"]


@pytest.mark.parametrize("label", ["swissroll", "moons", "gaussians8", "checkerboard"])
def test_point_checkpoints_stay_flat(label):
    folder = checkpoints.CHECKPOINTS / label
    assert checkpoints.model_folder(folder) == folder and not (folder / "model_index.json").exists()


def test_ddpm_pipeline_samples_from_the_bundled_digits_folder():
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(checkpoints.CHECKPOINTS / "digits")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np")
    images = out.images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1
