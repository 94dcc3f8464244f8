"""`python -m studio train`: the loss falls, samples land on the data, resume is exact, outputs are complete."""

from __future__ import annotations

import csv
import math
import warnings

import pytest
import torch

from studio.cli import main
from studio.cache import digest
from studio.data.dataset import Dataset
from studio.data.registry import load_dataset
from studio.denoisers.registry import make_denoiser
from studio.denoisers.unet import x0_from_prediction
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule
from studio.models.card import read_card
from studio.models.checkpoints import load_network, trained_info
from studio.models.train import Trainer, lr_at, training_target, unet_config


@pytest.fixture
def one_thread():
    """Tiny networks train fastest on one thread (and do not fight other tests for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_images(n: int = 12, side: int = 5) -> Dataset:
    x = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return Dataset(x=x, name="tiny", kind="image", fingerprint=digest("tiny", x))


def test_mlp_training_lowers_the_loss_and_samples_land_on_the_data(tmp_path, one_thread):
    ds = load_dataset("gaussians8", size=500)
    opts = {"steps": 900, "batch": 256, "width": 64, "depth": 2, "lr": 3e-3, "warmup": 50, "device": "cpu",
            "sample_n": 0, "save_every": 0}
    result = Trainer(ds, tmp_path / "m", opts, {}).run(progress=False)
    assert (tmp_path / "m" / "config.json").is_file()  # a TimeMLP stays flat: no diffusers pipeline loads it
    rows = list(csv.DictReader(open(tmp_path / "m" / "loss.csv")))
    first, last = float(rows[0]["loss"]), result.final_loss
    assert result.steps == 900 and last < 0.6 * first, (first, last)
    den = make_denoiser("unet", model=str(tmp_path / "m")).fit(ds)
    traj = loop.collect(loop.steps(den, make_sampler("ddim", Schedule.build(), 40), NoiseSource(0, 300, (2,))))
    nn = torch.cdist(traj.samples.double(), ds.x.double()).min(1).values
    noise_nn = torch.cdist(0.6 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1)).double(),
                           ds.x.double()).min(1).values
    # The 8 clusters have radius ~0.07; broad noise of the data's scale lies ~0.24 (mean) from the data.
    # A short run leaves a few samples between clusters, so the mean bound is looser than the median one.
    assert nn.mean() < 0.16 and nn.mean() < 0.65 * noise_nn.mean(), (float(nn.mean()), float(noise_nn.mean()))
    assert nn.median() < 0.06 and nn.median() < 0.4 * noise_nn.median(), (float(nn.median()), float(noise_nn.median()))


def test_resume_continues_exactly(tmp_path, one_thread):
    ds = load_dataset("moons", size=200)
    opts = {"steps": 60, "batch": 64, "width": 16, "depth": 1, "device": "cpu", "sample_n": 0, "save_every": 10,
            "log_every": 10}
    straight = Trainer(ds, tmp_path / "a", opts, {}).run(progress=False)

    class Crash(Exception):
        pass

    def crash_at_40(row):
        if row["step"] == 40:
            raise Crash

    with pytest.raises(Crash):
        Trainer(ds, tmp_path / "b", opts, {}).run(progress=False, on_log=crash_at_40)
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        Trainer(ds, tmp_path / "b", opts, {}).run(progress=False)
    resumed = Trainer(ds, tmp_path / "b", opts, {}).run(resume=True, progress=False)
    assert resumed.steps == straight.steps == 60
    a, b = load_network(tmp_path / "a"), load_network(tmp_path / "b")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    other = dict(opts, width=32)
    with pytest.raises(ValueError, match="--resume: .* another network"):
        Trainer(ds, tmp_path / "b", other, {}).run(resume=True, progress=False)


def test_image_training_pads_and_writes_a_complete_folder(tmp_path, one_thread):
    ds = _tiny_images()
    opts = {"steps": 6, "batch": 4, "width": 8, "depth": 1, "device": "cpu", "sample_n": 4, "log_every": 2,
            "prediction_type": "v_prediction", "save_dtype": "fp16"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(ds, tmp_path / "u", opts, {"name": "cosine", "T": 200}, command="python -m studio train ...").run(
            progress=False)
    assert not [w for w in caught if "resized" in str(w.message)]  # the sample check pads as training did
    out = tmp_path / "u"
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "README.md", "loss.csv", "loss.png", "samples.png"):
        assert (out / name).is_file(), name
    assert not (out / "config.json").exists()  # the diffusers pipeline layout, nothing flat beside it
    card = read_card(out)
    assert card["data_shape"] == [1, 5, 5] and card["dataset"]["fingerprint"] == ds.fingerprint
    assert card["schedule"] == {"name": "cosine", "T": 200, "beta_start": 1e-4, "beta_end": 0.02}
    assert card["training"]["steps"] == 6 and math.isfinite(card["training"]["final_loss"])
    assert card["training"]["command"] == "python -m studio train ..."
    info = trained_info(out)
    assert info.prediction_type == "v_prediction" and info.schedule["name"] == "cosine"
    assert load_network(out).config["sample_size"] == 8  # 5 px padded so 3 levels halve evenly
    from diffusers import DDPMPipeline
    from huggingface_hub import ModelCard

    pipe = DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (1, 8, 8, 1)
    meta = ModelCard.load(out / "README.md").data.to_dict()
    assert (meta["license"], meta["pipeline_tag"]) == ("mit", "unconditional-image-generation")
    den = make_denoiser("unet", model=str(out)).fit(ds)
    assert den.pad_to == 8
    # The same data under another schedule: the network is fed its own timesteps, with a note.
    with pytest.warns(UserWarning, match="schedule differs"):
        x0 = den.denoise(torch.randn(2, 1, 5, 5), 500, float(Schedule.build().alpha_bar[500])).x0
    assert x0.shape == (2, 1, 5, 5) and torch.isfinite(x0).all()


def test_training_targets_match_their_x0_formulas():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    ab = torch.tensor([[0.9], [0.5], [0.1], [0.01]], dtype=torch.float64)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    for kind in ("epsilon", "v_prediction", "sample"):
        target = training_target(x0, eps, ab, kind)
        for i in range(4):
            back = x0_from_prediction(target[i], x_t[i], float(ab[i]), kind)
            torch.testing.assert_close(back, x0[i], rtol=0, atol=1e-12)
    torch.testing.assert_close(training_target(x0, eps, ab, "v_prediction"), ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_architecture_and_learning_rate_schedule():
    assert unet_config((1, 8, 8))["sample_size"] == 8 and len(unet_config((1, 8, 8))["block_out_channels"]) == 3
    assert unet_config((1, 25, 25))["sample_size"] == 28
    assert unet_config((3, 32, 32))["sample_size"] == 32 and len(unet_config((3, 32, 32))["block_out_channels"]) == 4
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(20, 1.0, 10, 1000, time_used=1.0) == pytest.approx(0.1)  # time budget spent: fully decayed


def test_train_cli_and_bad_input(tmp_path, capsys, one_thread):
    out = tmp_path / "cli"
    rc = main(["train", "--dataset", "swissroll", "--out", str(out), "--steps", "20", "--batch", "32",
               "--width", "16", "--depth", "1", "--device", "cpu", "--samples", "0", "--set", "dataset.size=100",
               "--set", "schedule.T=100"])
    assert rc == 0 and "20 steps" in capsys.readouterr().out
    card = read_card(out)
    assert card["dataset"]["options"]["size"] == 100 and card["schedule"]["T"] == 100
    assert "--set dataset.size=100" in card["training"]["command"]
    assert main(["train", "--dataset", "swissroll", "--out", str(tmp_path / "x"), "--set", "sampler.steps=3"]) == 2
    assert "--set: 'sampler.steps' is not allowed" in capsys.readouterr().err
    assert main(["train", "--dataset", "swissroll", "--out", str(tmp_path / "y"), "--prediction-type", "score"]) == 2
    assert "train.prediction_type" in capsys.readouterr().err
