import math

import pytest
import torch

from studio.cache import digest
from studio.data import load_dataset
from studio.data.dataset import Dataset
from studio.denoisers import make_denoiser
from studio.denoisers.reference import wiener_ref
from studio.diffusion import loop
from studio.diffusion.inversion import ddim_invert, reconstruct
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps


def gaussian_points(n: int = 400, d: int = 6, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix * 0.4 + 0.1).clamp(-1, 1).float()
    return Dataset(x=x, name="gauss", kind="points", fingerprint=digest("gauss", x))


def invert_by_hand(x0: torch.Tensor, data: torch.Tensor, alpha_bar: torch.Tensor, ts: list[int]) -> torch.Tensor:
    """DDIM inversion in float64, written out step by step with the dense Wiener reference."""
    x, ab = x0.double(), 1.0
    for t in reversed(ts):
        ab_next = float(alpha_bar[t])
        x0_hat = wiener_ref(x, data, ab_next)
        eps = (x - math.sqrt(ab_next) * x0_hat) / math.sqrt(1 - ab_next)
        clean = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        x = math.sqrt(ab_next) * clean + math.sqrt(1 - ab_next) * eps
        ab = ab_next
    return x


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def wiener_case():
    """Gaussian points, their Wiener denoiser, a linear schedule, 12 trailing steps and five items to invert."""
    ds = gaussian_points()
    return ds, make_denoiser("wiener").fit(ds), Schedule.build("linear"), timesteps("trailing", 1000, 12), ds.x[:5]


def test_inversion_matches_float64_hand_computation_on_wiener():
    ds, den, schedule, ts, x0 = wiener_case()
    got = ddim_invert(den, x0, schedule, ts)
    want = invert_by_hand(x0, ds.x, schedule.alpha_bar, ts.tolist())
    assert got.shape == x0.shape
    assert rel(got, want) < 1e-4
    # the walk ends at a high-noise level: x_T is far from x0 (not a no-op)
    assert rel(got, x0.double()) > 0.5


def test_reconstruct_is_the_ddim_sampler_with_eta_0():
    ds = gaussian_points()
    den = make_denoiser("wiener").fit(ds)
    schedule = Schedule.build("linear")
    sampler = make_sampler("ddim", schedule, 15, "trailing", eta=0.0)
    x_T = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    traj = loop.collect(loop.steps(den, sampler, NoiseSource(0, 4, (6,)), x_T=x_T))
    got = reconstruct(den, x_T, schedule, sampler.timesteps)
    assert torch.allclose(got, traj.samples, atol=1e-5, rtol=1e-5)


def test_round_trip_error_shrinks_with_steps_on_gaussian_data():
    ds = gaussian_points()
    den = make_denoiser("wiener").fit(ds)
    schedule = Schedule.build("linear")
    x0 = ds.x[:8]
    errors = []
    for K in (10, 100, 1000):
        ts = timesteps("trailing", 1000, K)
        errors.append(rel(reconstruct(den, ddim_invert(den, x0, schedule, ts), schedule, ts), x0))
    # first-order in the step: ten times the steps, about a tenth of the error
    assert errors[1] < errors[0] / 4 and errors[2] < errors[1] / 4
    assert errors[2] < 0.01


def test_optimal_denoiser_round_trip_returns_the_training_image():
    ds = load_dataset("digits", size=300)
    den = make_denoiser("optimal").fit(ds)
    schedule = Schedule.build("linear")
    ts = timesteps("trailing", 1000, 20)
    x0 = ds.x[:6]
    x_T = ddim_invert(den, x0, schedule, ts)
    assert rel(x_T, x0) > 0.3
    assert rel(reconstruct(den, x_T, schedule, ts), x0) < 1e-3


def reconstruct_by_hand(x_T: torch.Tensor, data: torch.Tensor, alpha_bar: torch.Tensor, ts: list[int]) -> torch.Tensor:
    """Deterministic DDIM sampling in float64 with the dense Wiener reference."""
    x = x_T.double()
    for k, t in enumerate(ts):
        ab = float(alpha_bar[t])
        ab_next = float(alpha_bar[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        x0_hat = wiener_ref(x, data, ab)
        eps = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
        x = math.sqrt(ab_next) * x0_hat + math.sqrt(1 - ab_next) * eps
    return x


def test_refined_inversion_is_the_exact_inverse_of_reconstruction():
    ds, den, schedule, ts, x0 = wiener_case()
    # with a Gaussian denoiser reconstruction is affine, x0 = A x_T + b: its exact inverse, in float64
    steps = ts.tolist()
    b = reconstruct_by_hand(torch.zeros(1, 6), ds.x, schedule.alpha_bar, steps)
    A = reconstruct_by_hand(torch.eye(6), ds.x, schedule.alpha_bar, steps) - b  # row j: the image of e_j
    exact = torch.linalg.solve(A.T, (x0.double() - b).T).T
    plain = ddim_invert(den, x0, schedule, ts)
    refined = ddim_invert(den, x0, schedule, ts, refine=60, tol=1e-7)
    assert rel(plain, exact) > 0.02  # the usual approximation (ε̂ at the level reached) is off at 12 steps
    assert rel(refined, exact) < 2e-4
    assert rel(reconstruct(den, refined, schedule, ts), x0) < 1e-4 < rel(reconstruct(den, plain, schedule, ts), x0)


def test_a_trained_network_inverts_digits_to_noise_like_x_T_and_back():
    """The textbook picture: refined DDIM inversion with the bundled digits network gives an x_T with the
    statistics of N(0, I) and little of the digit left, and sampling from it returns the digit."""
    ds = load_dataset("digits")
    den = make_denoiser("unet").fit(ds)
    schedule = Schedule.build()
    ts = timesteps("trailing", 1000, 50)
    x0 = ds.x[:8]
    x_T = ddim_invert(den, x0, schedule, ts, refine=5)
    corr = [float(torch.corrcoef(torch.stack([a, b]))[0, 1]) for a, b in zip(x0.flatten(1), x_T.flatten(1))]
    assert 0.85 < float(x_T.std()) < 1.2 and sum(corr) / len(corr) < 0.45, (float(x_T.std()), corr)
    back = reconstruct(den, x_T, schedule, ts)
    plain = reconstruct(den, ddim_invert(den, x0, schedule, ts), schedule, ts)
    rms = lambda y: float((y - x0).pow(2).mean().sqrt())  # noqa: E731
    assert rms(back) < 0.03 and rms(back) < rms(plain) / 2, (rms(back), rms(plain))


@pytest.mark.parametrize("bad", [[5, 10], [10, 10], [2000, 5]])
def test_bad_timesteps_are_rejected(bad):
    den = make_denoiser("wiener").fit(gaussian_points())
    with pytest.raises(ValueError, match="timesteps"):
        ddim_invert(den, torch.zeros(1, 6), Schedule.build(), torch.tensor(bad))
