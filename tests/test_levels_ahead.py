"""Noise levels prepared ahead (masked/ahead.py): the next levels' plans are built in a background thread while
the current one runs, and the run's x̂0 are exactly those of the serial path."""

import threading

import pytest
import torch

from locality_data import as_dataset, smooth_images
from studio.denoisers import make_denoiser
from studio.denoisers.masked import ahead
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule

WORKER = "studio-levels-ahead"


@pytest.fixture(scope="module")
def rgb():
    return as_dataset(smooth_images(120, (3, 8, 8), seed=5), "rgb8")


def run(denoiser, device="cpu", steps=8, sampler="ddim"):
    sampler = make_sampler(sampler, Schedule.build("linear"), steps)
    noise = NoiseSource(3, 5, denoiser.dataset.shape, device)
    return loop.collect(loop.steps(denoiser, sampler, noise))


def built_by(denoiser, monkeypatch):
    """Record which thread built each level's entry (mask and plan)."""
    threads = []
    original = type(denoiser)._entry

    def entry(self, make_mask):
        threads.append(threading.current_thread().name)
        return original(self, make_mask)

    monkeypatch.setattr(type(denoiser), "_entry", entry)
    return threads


@pytest.mark.parametrize("name,params", [("pca_locality", {"mask_threshold": 0.05}), ("ls", {})])
def test_prepared_ahead_equals_the_serial_path(rgb, name, params, monkeypatch):
    serial = run(make_denoiser(name, **params).fit(rgb))
    monkeypatch.setitem(ahead.DEPTH, "cpu", 2)
    den = make_denoiser(name, **params).fit(rgb)
    threads = built_by(den, monkeypatch)
    overlapped = run(den)
    assert torch.equal(overlapped.x0, serial.x0) and torch.equal(overlapped.samples, serial.samples)
    assert WORKER in " ".join(threads), threads  # levels really were built by the background thread
    assert len(threads) == len(den.plans)  # each level's mask made once, by whichever thread came first


def test_the_cpu_prepares_nothing_ahead_by_default(rgb, monkeypatch):
    den = make_denoiser("pca_locality", mask_threshold=0.05).fit(rgb)
    threads = built_by(den, monkeypatch)
    run(den, steps=4)
    assert len(threads) == 4 and not any(WORKER in t for t in threads)


def test_a_level_that_fails_ahead_is_built_by_the_run(rgb, monkeypatch):
    """An error in the background (say, memory taken meanwhile) costs only the overlap: the run builds the level
    itself; an error that persists surfaces in the run, as it would without preparation."""
    serial = run(make_denoiser("pca_locality", mask_threshold=0.05).fit(rgb), steps=5)
    monkeypatch.setitem(ahead.DEPTH, "cpu", 2)
    den = make_denoiser("pca_locality", mask_threshold=0.05).fit(rgb)
    original = type(den).level_mask

    def flaky(self, ab):
        if threading.current_thread().name.startswith(WORKER):
            raise RuntimeError("out of memory in the background")
        return original(self, ab)

    monkeypatch.setattr(type(den), "level_mask", flaky)
    assert torch.equal(run(den, steps=5).x0, serial.x0)

    def broken(self, ab):
        raise RuntimeError("no memory at all")

    monkeypatch.setattr(type(den), "level_mask", broken)
    with pytest.raises(RuntimeError, match="no memory at all"):
        run(make_denoiser("pca_locality", mask_threshold=0.05).fit(rgb), steps=5)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmpp_2m", "euler", "heun"])
def test_a_sampler_knows_its_levels_before_the_run(name):
    """What prepare() is told is what the loop then asks for, call by call."""
    sampler = make_sampler(name, Schedule.build("linear"), 7)
    levels = sampler.levels()
    sampler.start(torch.randn(2, 3))
    assert levels == [sampler.point(k)[1] for k in range(len(sampler))] and len(levels) == len(sampler)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_prepared_ahead_on_the_gpu_equals_the_serial_path(rgb, kernel, monkeypatch):
    serial_den = make_denoiser("pca_locality", device="cuda", kernel=kernel, mask_threshold=0.05).fit(rgb)
    monkeypatch.setitem(ahead.DEPTH, "cuda", 0)
    serial = run(serial_den, "cuda", steps=10)
    monkeypatch.setitem(ahead.DEPTH, "cuda", 2)
    den = make_denoiser("pca_locality", device="cuda", kernel=kernel, mask_threshold=0.05).fit(rgb)
    threads = built_by(den, monkeypatch)
    overlapped = run(den, "cuda", steps=10)
    assert torch.equal(overlapped.x0, serial.x0)
    assert WORKER in " ".join(threads), threads
    # the builds' stream outranks the run's, so their synchronisations do not wait out whole denoise steps
    assert den.ahead.stream.priority == den.ahead.stream.priority_range()[1] < torch.cuda.current_stream().priority
