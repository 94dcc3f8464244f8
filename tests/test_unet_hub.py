"""`denoiser.model` as a Hub model id, through the real huggingface_hub client against the local fake Hub."""

from __future__ import annotations

import math
import uuid

import pytest
import torch
from diffusers import UNet2DModel

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.denoisers.registry import make_denoiser
from studio.diffusion.schedules import Schedule
from studio.models.checkpoints import save_network, write_scheduler_config


def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8).eval()


def _images() -> Dataset:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return Dataset(x=x, name="tiny", kind="image", fingerprint=digest("tiny", x))


def _upload(hub, repo: str, folder, prefix: str) -> None:
    for path in folder.iterdir():
        hub.add_file("model", repo, prefix + path.name, path.read_bytes())


def test_pipeline_layout_from_the_hub_then_offline_from_the_cache(fake_hub, monkeypatch, tmp_path):
    """A diffusers pipeline repo (unet/ + scheduler/): downloaded once, then loaded offline from the HF cache."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo = f"alice/ddpm-{uuid.uuid4().hex[:8]}"
    net = _tiny_unet()
    save_network(net, tmp_path / "unet")
    write_scheduler_config(tmp_path / "scheduler", {"name": "cosine", "T": 1000, "beta_start": 1e-4,
                                                    "beta_end": 0.02}, "v_prediction")
    _upload(fake_hub, repo, tmp_path / "unet", "unet/")
    _upload(fake_hub, repo, tmp_path / "scheduler", "scheduler/")
    fake_hub.add_file("model", repo, "unet/diffusion_pytorch_model.bin", b"pickled weights are never fetched")

    den = make_denoiser("unet", model=repo).fit(_images())
    assert den.prediction_type == "v_prediction" and den.schedule["name"] == "cosine"
    assert not any(r.path.endswith(".bin") for r in fake_hub.requests)
    ab = float(Schedule.build("cosine").alpha_bar[300])
    x_t = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        v = net(x_t, torch.full((2,), 300)).sample
    expected = math.sqrt(ab) * x_t - math.sqrt(1 - ab) * v
    torch.testing.assert_close(den.denoise(x_t, 300, ab).x0, expected)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = make_denoiser("unet", model=repo).fit(_images())
    torch.testing.assert_close(offline.denoise(x_t, 300, ab).x0, expected)


def test_a_repo_with_only_pickled_weights_is_refused(fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo = f"alice/old-{uuid.uuid4().hex[:8]}"
    save_network(_tiny_unet(), tmp_path)
    fake_hub.add_file("model", repo, "config.json", (tmp_path / "config.json").read_bytes())
    fake_hub.add_file("model", repo, "diffusion_pytorch_model.bin", b"pickle")
    with pytest.raises(ValueError, match="only pickled weights, which the studio never loads"):
        make_denoiser("unet", model=repo).fit(_images())


def test_a_missing_hub_repo_is_a_clear_error(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    with pytest.raises(ValueError, match=r"^denoiser\.model: 'alice/none-here' .*not found"):
        make_denoiser("unet", model="alice/none-here").fit(_images())
