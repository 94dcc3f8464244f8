import pytest
import torch

from studio.data import load_dataset
from studio.denoisers import make_denoiser
from studio.denoisers.base import Denoised, Denoiser
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule


class Flaky(Denoiser):
    """Wraps `optimal`; fails with a fake allocator error above a batch size, or emits NaN at one call."""

    name = "flaky"
    summary = "test"

    def __init__(self, max_batch=None, nan_at=None):
        super().__init__()
        self.inner = make_denoiser("optimal")
        self.max_batch, self.nan_at, self.calls, self.batches = max_batch, nan_at, 0, []

    def _fit(self, dataset):
        self.inner.fit(dataset)

    def denoise(self, x_t, t, alpha_bar):
        self.calls += 1
        self.batches.append(len(x_t))
        if self.max_batch is not None and len(x_t) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")
        out = self.inner.denoise(x_t, t, alpha_bar)
        if self.calls == self.nan_at:
            out = Denoised(out.x0.clone().fill_(float("nan")), out.extras)
        return out


def run(den, n=16, steps=6, batch_size=None):
    ds = load_dataset("digits")
    den.fit(ds)
    sampler = make_sampler("ddim", Schedule.build(), steps)
    return loop.collect(loop.steps(den, sampler, NoiseSource(0, n, ds.shape), batch_size=batch_size))


def test_out_of_memory_retries_once_with_smaller_batches():
    plain = run(make_denoiser("optimal"))
    den = Flaky(max_batch=4)
    traj = run(den)
    assert den.batches[:1] == [16] and max(den.batches[1:]) == 4  # one failure, then quarter batches throughout
    assert torch.allclose(traj.samples, plain.samples, atol=1e-5)


def test_out_of_memory_twice_gives_a_clear_message():
    with pytest.raises(loop.OutOfMemory, match=r"step 1/6: flaky ran out of GPU memory even with batches of 4"):
        run(Flaky(max_batch=2))


def test_nan_stops_the_run_naming_step_and_denoiser():
    den = Flaky(nan_at=3)
    with pytest.raises(loop.NonFiniteError, match=r"step 3/6 \(t=\d+\): denoiser flaky produced NaN"):
        run(den)
    assert den.calls == 3
