"""`calibrate`: the schedule keeps, per level, the patch size closest to the target; cached; usable by name."""

import math

import pytest
import torch

from studio.studies.calibrate import calibrate, candidate_sizes
from studio.cli import main
from studio.config import RunConfig
from studio.data import load_dataset
from studio.denoisers import make_denoiser
from studio.denoisers.patch_schedule import load_schedule
from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps


def small_config(denoiser: str = "ls") -> RunConfig:
    cfg = RunConfig()
    for key, value in {"dataset.name": "digits", "dataset.size": 120, "denoiser.name": denoiser, "sampler.steps": 3,
                       "n": 4, "seed": 1, "device": "cpu"}.items():
        cfg.set(key, value)
    return cfg.validate()


def test_picks_the_size_closest_to_the_target():
    cfg = small_config("ls")
    schedule, path = calibrate(cfg, "wiener", sizes=[1, 3, 7, 15])
    data = load_dataset("digits", size=120)
    sched = Schedule.build()
    ts = timesteps("trailing", 1000, 3).tolist()
    assert [e["t"] for e in schedule.entries] == ts and path.is_file()
    # Recompute every error independently: same probes (seeded), each patch size as its own denoiser.
    g = torch.Generator().manual_seed(1)
    x0 = data.x[torch.randperm(data.n, generator=g)[:4]]
    target = make_denoiser("wiener").fit(data)
    for entry, t in zip(schedule.entries, ts):
        ab = sched.ab(t)
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g)
        want = target.denoise(x_t, t, ab).x0.double()
        errors = {k: float(((make_denoiser("ls", patch_size=k).fit(data).denoise(x_t, t, ab).x0.double() - want) ** 2)
                            .mean()) for k in (1, 3, 7, 15)}
        assert entry["patch_size"] == min(errors, key=errors.get)
        assert entry["mse"] == pytest.approx(errors[entry["patch_size"]], rel=1e-6)
        assert entry["mse_by_size"] == pytest.approx({str(k): v for k, v in errors.items()}, rel=1e-6)
    assert schedule.meta["target"] == "wiener" and schedule.meta["dataset"]["fingerprint"] == data.fingerprint
    assert len({e["patch_size"] for e in schedule.entries}) > 1  # the schedule does change with the noise


def test_cached_and_keyed_by_everything_that_changes_it(monkeypatch):
    cfg = small_config("els")
    first, path = calibrate(cfg, "optimal", sizes=[3, 15])
    monkeypatch.setattr("studio.studies.calibrate.make_denoiser", lambda *a, **k: pytest.fail("should come from the cache"))
    again, same_path = calibrate(small_config("els"), "optimal", sizes=[3, 15])
    assert same_path == path and again.entries == first.entries
    monkeypatch.undo()
    other_seed = small_config("els")
    other_seed.seed = 2
    assert calibrate(other_seed, "optimal", sizes=[3, 15])[1] != path
    assert calibrate(small_config("els"), "wiener", sizes=[3, 15])[1] != path


def test_cli_writes_a_schedule_the_config_can_name(tmp_path, capsys):
    out = tmp_path / "sched.yaml"
    rc = main(["calibrate", "--denoiser", "ls", "--target", "wiener", "--dataset", "digits",
               "--set", "dataset.size=100", "--steps", "2", "--n", "3", "--sizes", "3,15", "--device", "cpu", "--out", str(out)])
    assert rc == 0 and out.is_file()
    schedule = load_schedule(out)
    assert "patch_size=" in capsys.readouterr().out
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 100},
                               "denoiser": {"name": "ls", "patch_schedule": str(out)}, "sampler": {"steps": 2}})
    den = make_denoiser("ls", **cfg.denoiser.params).fit(load_dataset("digits", size=100))
    for entry in schedule.entries:
        x = torch.zeros(1, 1, 8, 8)
        assert den.denoise(x, entry["t"], entry["alpha_bar"]).shared["patch_size"] == entry["patch_size"]


@pytest.mark.parametrize("argv, message", [
    (["--denoiser", "optimal", "--target", "wiener"], "ls, els"),
    (["--denoiser", "ls", "--target", "nope"], "unknown denoiser"),
    (["--denoiser", "ls", "--target", "wiener", "--sizes", "4"], "--sizes"),
    (["--denoiser", "ls", "--target", "wiener", "--target-set", "oops"], "--target-set"),
    (["--denoiser", "ls", "--target", "wiener", "--target-set", "temperature=2"], "unknown parameter"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    rc = main(["calibrate", "--dataset", "digits", "--set", "dataset.size=50", "--steps", "1", "--n", "2", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


def test_candidate_sizes():
    assert candidate_sizes((1, 8, 8), None) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert candidate_sizes((3, 4, 4), [5, 3, 5]) == [3, 5]
