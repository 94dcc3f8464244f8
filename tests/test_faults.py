import pytest
import torch

from devices import DEVICES
from studio.data import load_dataset
from studio.denoisers import make_denoiser
from studio.denoisers.base import Denoised, Denoiser
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule


class Flaky(Denoiser):
    """Wraps `optimal`; fails with a fake allocator error above a batch size, or at one call puts `value` into x̂0
    (into one element, or into all of them with `everywhere`)."""

    name = "flaky"
    summary = "test"

    def __init__(self, max_batch=None, poke_at=None, value=float("nan"), everywhere=True, device="cpu"):
        super().__init__(device=device)
        self.inner = make_denoiser("optimal", device=device)
        self.max_batch, self.poke_at, self.calls, self.batches = max_batch, poke_at, 0, []
        self.value, self.everywhere = value, everywhere

    def _fit(self, dataset):
        self.inner.fit(dataset)

    def denoise(self, x_t, t, alpha_bar):
        self.calls += 1
        self.batches.append(len(x_t))
        if self.max_batch is not None and len(x_t) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")
        out = self.inner.denoise(x_t, t, alpha_bar)
        if self.calls == self.poke_at:
            x0 = out.x0.clone()
            (x0 if self.everywhere else x0.view(-1)[5:6]).fill_(self.value)
            out = Denoised(x0, out.extras)
        return out


def run(den, n=16, steps=6, batch_size=None):
    ds = load_dataset("digits")
    den.fit(ds)
    sampler = make_sampler("ddim", Schedule.build(), steps)
    return loop.collect(loop.steps(den, sampler, NoiseSource(0, n, ds.shape, den.device), batch_size=batch_size))


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
    den = Flaky(poke_at=3)
    with pytest.raises(loop.NonFiniteError, match=r"step 3/6 \(t=\d+\): denoiser flaky produced NaN"):
        run(den)
    assert den.calls == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_element_stops_the_run_naming_its_step(device, value):
    """One bad element of x̂0 is enough; on a GPU the run learns it at the end, and names the step it happened at."""
    ts = make_sampler("ddim", Schedule.build(), 6).timesteps.tolist()
    with pytest.raises(loop.NonFiniteError, match=rf"step 3/6 \(t={ts[2]}\): denoiser flaky produced NaN or inf"):
        run(Flaky(poke_at=3, value=value, everywhere=False, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_large_finite_x0_is_not_taken_for_inf(device):
    """x̂0 = 1e38 everywhere is finite, though its float32 sum overflows: the run goes on to the end."""
    traj = run(Flaky(poke_at=6, value=1e38, device=device))
    assert traj.x0.shape[0] == 6 and bool((traj.x0[-1] == 1e38).all())
