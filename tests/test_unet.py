"""The `unet` denoiser: x̂0 formulas per prediction type, checkpoint IO, framing, schedules and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DModel

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.denoisers.registry import make_denoiser
from studio.denoisers.unet import call_network, x0_from_prediction
from studio.diffusion.schedules import Schedule
from studio.models import checkpoints
from studio.models.card import read_card, write_card
from studio.models.checkpoints import load_network, save_network, write_scheduler_config
from studio.models.framing import crop_center, pad_center
from studio.models.mlp import TimeMLP

LINEAR = {"name": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def _images(n: int = 6, side: int = 8, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g) * 2 - 1
    return Dataset(x=x, name="tiny", kind="image", fingerprint=digest("tiny", x))


def _points(n: int = 50) -> Dataset:
    x = torch.rand(n, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return Dataset(x=x, name="pts", kind="points", fingerprint=digest("pts", x))


def _tiny_unet(side: int = 8) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=side, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8)


def _checkpoint(folder, net, prediction_type="epsilon", schedule=LINEAR, card=None):
    save_network(net, folder)
    write_scheduler_config(folder, schedule, prediction_type)
    if card is not None:
        write_card(folder, card, "test card")
    return folder


def test_x0_from_prediction_inverts_the_forward_process():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 7, generator=g, dtype=torch.float64)
    for ab in (0.999, 0.5, 1e-3):
        s, r = math.sqrt(ab), math.sqrt(1 - ab)
        x_t = s * x0 + r * eps
        v = s * eps - r * x0
        torch.testing.assert_close(x0_from_prediction(eps, x_t, ab, "epsilon"), x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(x0_from_prediction(v, x_t, ab, "v_prediction"), x0, rtol=0, atol=1e-12)
        torch.testing.assert_close(x0_from_prediction(x0, x_t, ab, "sample"), x0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="prediction_type"):
        x0_from_prediction(eps, x_t, 0.5, "score")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_unet_x0_matches_manual_formula(tmp_path, prediction_type):
    ds = _images()
    net = _tiny_unet()
    folder = _checkpoint(tmp_path / "m", net, prediction_type)
    den = make_denoiser("unet", model=str(folder)).fit(ds)
    assert den.prediction_type == prediction_type
    t = 600
    ab = float(Schedule.build(**LINEAR).alpha_bar[t])
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        pred = net(x_t.double().float(), torch.full((3,), t)).sample.double()
    s, r = math.sqrt(ab), math.sqrt(1 - ab)
    xd = x_t.double()
    manual = {"epsilon": (xd - r * pred) / s, "v_prediction": s * xd - r * pred, "sample": pred}[prediction_type]
    out = den.denoise(x_t, t, ab).x0
    torch.testing.assert_close(out.double(), manual, rtol=1e-5, atol=1e-5)


def test_prediction_type_param_overrides_the_checkpoint(tmp_path):
    ds = _images()
    folder = _checkpoint(tmp_path / "m", _tiny_unet(), "epsilon")
    eps_den = make_denoiser("unet", model=str(folder)).fit(ds)
    x0_den = make_denoiser("unet", model=str(folder), prediction_type="sample").fit(ds)
    x_t = torch.randn(2, 1, 8, 8)
    ab = float(Schedule.build().alpha_bar[100])
    raw = x0_den.denoise(x_t, 100, ab).x0
    torch.testing.assert_close(eps_den.denoise(x_t, 100, ab).x0, (x_t - math.sqrt(1 - ab) * raw) / math.sqrt(ab),
                               rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_is_identical(tmp_path):
    for net, x in ((_tiny_unet(), torch.randn(2, 1, 8, 8)), (TimeMLP(hidden=32, num_blocks=2), torch.randn(4, 2))):
        net.eval()
        save_network(net, tmp_path / type(net).__name__)
        back = load_network(tmp_path / type(net).__name__)
        assert type(back) is type(net)
        with torch.no_grad():
            assert torch.equal(call_network(net, x, torch.full((len(x),), 321)),
                               call_network(back, x, torch.full((len(x),), 321)))


def test_fp16_checkpoint_is_half_the_size_and_close(tmp_path):
    net = _tiny_unet().eval()
    save_network(net, tmp_path / "a")
    save_network(net, tmp_path / "b", half=True)
    size = lambda f: (f / checkpoints.WEIGHTS).stat().st_size  # noqa: E731
    assert size(tmp_path / "b") < 0.55 * size(tmp_path / "a")
    back = load_network(tmp_path / "b")
    assert next(back.parameters()).dtype == torch.float32
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        diff = (call_network(net, x, torch.tensor([9, 9])) - call_network(back, x, torch.tensor([9, 9]))).abs().max()
    assert 0 < diff < 1e-2


def test_mlp_denoiser_on_points(tmp_path):
    ds = _points()
    net = TimeMLP(hidden=32, num_blocks=2).eval()
    folder = _checkpoint(tmp_path / "mlp", net, "epsilon")
    den = make_denoiser("unet", model=str(folder)).fit(ds)
    x_t = torch.randn(4, 2)
    ab = float(Schedule.build().alpha_bar[250])
    with torch.no_grad():
        eps = net(x_t, torch.full((4,), 250)).sample
    torch.testing.assert_close(den.denoise(x_t, 250, ab).x0, (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab))
    with pytest.raises(ValueError, match="2-D point model"):
        make_denoiser("unet", model=str(folder)).fit(_images())


def test_padding_follows_the_card(tmp_path):
    """A 6x6 dataset on an 8x8 network trained with padding: zero-pad in, crop out (as in training)."""
    ds = _images(side=6)
    net = _tiny_unet(8).eval()
    folder = _checkpoint(tmp_path / "p", net, card={"data_shape": [1, 6, 6]})
    den = make_denoiser("unet", model=str(folder)).fit(ds)
    assert den.pad_to == 8 and den.resize_to is None and not [n for n in den.notes if "resized" in n]
    x_t = torch.randn(2, 1, 6, 6)
    ab = float(Schedule.build().alpha_bar[400])
    with torch.no_grad():
        eps = crop_center(net(pad_center(x_t, 8), torch.full((2,), 400)).sample, 6, 6)
    torch.testing.assert_close(den.denoise(x_t, 400, ab).x0, (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab))
    padded = pad_center(torch.ones(1, 1, 5, 5), 8)
    assert padded.sum() == 25 and padded[0, 0, 1:6, 1:6].sum() == 25 and torch.equal(crop_center(padded, 5, 5),
                                                                                    torch.ones(1, 1, 5, 5))


def test_other_sizes_are_resized_with_a_note(tmp_path):
    folder = _checkpoint(tmp_path / "r", _tiny_unet(8))
    with pytest.warns(UserWarning, match="resized"):
        den = make_denoiser("unet", model=str(folder)).fit(_images(side=12))
    assert den.resize_to == 8
    out = den.denoise(torch.randn(2, 1, 12, 12), 500, float(Schedule.build().alpha_bar[500]))
    assert out.x0.shape == (2, 1, 12, 12) and torch.isfinite(out.x0).all()
    assert any("resized" in n for n in out.shared["notes"])


def test_schedule_mismatch_matches_noise_level_and_notes(tmp_path):
    ds = _images()
    folder = _checkpoint(tmp_path / "m", _tiny_unet())
    den = make_denoiser("unet", model=str(folder)).fit(ds)
    model_ab = Schedule.build(**LINEAR).alpha_bar
    assert den._network_time(123, float(model_ab[123])) == 123 and not den.notes
    cosine_ab = float(Schedule.build("cosine").alpha_bar[300])
    with pytest.warns(UserWarning, match="schedule differs"):
        tau = den._network_time(300, cosine_ab)
    lo = int(tau)
    # ā of the linear schedule at the fractional step, interpolated in log ā, equals the run's ā.
    w = tau - lo
    log_ab = (1 - w) * math.log(float(model_ab[lo])) + w * math.log(float(model_ab[lo + 1]))
    assert abs(log_ab - math.log(cosine_ab)) < 1e-9
    assert any("schedule differs" in n for n in den.notes)
    given = make_denoiser("unet", model=str(folder), timestep_map="as_given").fit(ds)
    with pytest.warns(UserWarning, match="as_given"):
        assert given._network_time(300, cosine_ab) == 300


def test_card_round_trip(tmp_path):
    write_card(tmp_path, {"data_shape": [1, 8, 8], "schedule": LINEAR}, "# body")
    assert read_card(tmp_path) == {"data_shape": [1, 8, 8], "schedule": LINEAR}
    assert read_card(tmp_path / "nothing") == {}


def test_scheduler_config_round_trip(tmp_path):
    for name in ("linear", "scaled_linear", "cosine", "sigmoid"):
        sched = {"name": name, "T": 500, "beta_start": 2e-4, "beta_end": 0.03}
        _checkpoint(tmp_path / name, _tiny_unet(), "v_prediction", sched)
        info = checkpoints.trained_info(tmp_path / name)
        assert info.schedule == sched and info.prediction_type == "v_prediction"
        assert info.data_shape == (1, 8, 8)


def test_missing_local_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"denoiser\.model: no folder .*nowhere"):
        make_denoiser("unet", model=str(tmp_path / "nowhere" / "model")).fit(_images())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no config.json"):
        make_denoiser("unet", model=str(tmp_path / "empty")).fit(_images())


def test_uncached_hub_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        make_denoiser("unet", model="nobody-here/no-such-ddpm").fit(_images())
    text = str(err.value)
    assert text.startswith("denoiser.model:") and "offline" in text and "not in the local cache" in text
    assert "\n" not in text


def test_no_bundled_checkpoint_names_the_available_ones(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    _checkpoint(root / "digits", _tiny_unet(), card={"data_shape": [1, 8, 8]})
    _checkpoint(root / "patches" / "gray8", _tiny_unet(), card={"data_shape": [1, 8, 8]})
    monkeypatch.setattr(checkpoints, "CHECKPOINTS", root)
    other = Dataset(x=torch.zeros(2, 1, 8, 8), name="nonfaces", kind="image", fingerprint="f")
    with pytest.raises(ValueError, match=r"no bundled checkpoint for dataset nonfaces.*digits \(1x8x8\).*patches/gray8"):
        make_denoiser("unet").fit(other)
    wrong_shape = Dataset(x=torch.zeros(2, 3, 8, 8), name="patches", kind="image", fingerprint="f")
    with pytest.raises(ValueError, match=r"none for this dataset's shape 3x8x8"):
        make_denoiser("unet").fit(wrong_shape)
    right = Dataset(x=torch.zeros(2, 1, 8, 8), name="patches", kind="image", fingerprint="f")
    assert make_denoiser("unet").fit(right).source == "patches/gray8"
    assert make_denoiser("unet", model="patches/gray8").fit(right).source == "patches/gray8"


def test_precision_fp32_on_cpu_and_bf16_close(tmp_path):
    ds = _images()
    folder = _checkpoint(tmp_path / "m", _tiny_unet())
    auto = make_denoiser("unet", model=str(folder)).fit(ds)
    assert auto.autocast is None
    bf16 = make_denoiser("unet", model=str(folder), precision="bf16").fit(ds)
    assert bf16.autocast == torch.bfloat16
    x_t = torch.randn(2, 1, 8, 8)
    ab = float(Schedule.build().alpha_bar[100])  # at low noise x̂0 barely amplifies the bf16 error of ε̂
    diff = (auto.denoise(x_t, 100, ab).x0 - bf16.denoise(x_t, 100, ab).x0).abs().max()
    assert 0 < diff < 0.05
    with pytest.raises(ValueError, match="denoiser.precision"):
        make_denoiser("unet", precision="fp8")


@pytest.mark.gpu
def test_auto_precision_on_gpu_stays_within_tolerance(tmp_path):
    ds = _images()
    folder = _checkpoint(tmp_path / "m", _tiny_unet())
    ref = make_denoiser("unet", "cuda", model=str(folder), precision="fp32").fit(ds)
    auto = make_denoiser("unet", "cuda", model=str(folder)).fit(ds)
    x_t = torch.randn(4, 1, 8, 8, device="cuda")
    for t in (999, 500, 50):
        ab = float(Schedule.build().alpha_bar[t])
        assert (ref.denoise(x_t, t, ab).x0 - auto.denoise(x_t, t, ab).x0).abs().max() <= 1e-2 + 1e-3
