"""scfdm: the σ_s = 0 limit, the float64 reference, determinism, and independence from every other RNG."""

import pytest
import torch

from locality_data import as_dataset, noisy, rel, smooth_images
from studio.denoisers import make_denoiser
from studio.denoisers.reference import optimal_ref, scfdm_ref
from studio.denoisers.scfdm import smoothing_noise
from studio.diffusion.loop import steps
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule


@pytest.fixture(scope="module")
def data():
    return as_dataset(smooth_images(150, (1, 6, 6), seed=2), "scfdm")


@pytest.mark.parametrize("ab", [0.01, 0.5, 0.97])
def test_zero_smoothing_is_optimal(data, ab):
    x = noisy(data.x, ab)
    out = make_denoiser("scfdm", smoothing=0.0, copies=3).fit(data).denoise(x, 7, ab).x0
    assert rel(out, optimal_ref(x, data.x, ab)) < 1e-5


@pytest.mark.parametrize("ab", [0.05, 0.8])
def test_matches_float64_reference(data, ab):
    x = noisy(data.x, ab)
    out = make_denoiser("scfdm", smoothing=0.3, copies=5, seed=4, chunk_size=40).fit(data).denoise(x, 11, ab)
    eps = smoothing_noise(4, 11, 5, data.shape)
    assert rel(out.x0, scfdm_ref(x, data.x, ab, eps, 0.3)) < 1e-5
    assert out.extras["ess"].shape == (4,) and out.shared == {"smoothing": 0.3, "copies": 5}


def test_defaults_follow_the_data_shape(data):
    assert make_denoiser("scfdm").fit(data).smoothing == 0.1
    mnist_like = as_dataset(smooth_images(20, (1, 28, 28), seed=1), "mnist-like")
    den = make_denoiser("scfdm").fit(mnist_like)
    assert den.smoothing == 1.0 and den.p["copies"] == 10


def test_deterministic_per_seed_and_batch_independent(data):
    ab = 0.3
    x = noisy(data.x, ab, b=6)
    den = make_denoiser("scfdm", seed=1).fit(data)
    a = den.denoise(x, 500, ab).x0
    assert torch.equal(a, make_denoiser("scfdm", seed=1).fit(data).denoise(x, 500, ab).x0)
    halves = torch.cat([den.denoise(x[:2], 500, ab).x0, den.denoise(x[2:], 500, ab).x0])
    assert rel(halves, a) < 1e-6
    assert rel(make_denoiser("scfdm", seed=2).fit(data).denoise(x, 500, ab).x0, a) > 1e-4
    assert rel(den.denoise(x, 499, ab).x0, a) > 1e-4  # a new step draws new perturbations


def test_never_touches_global_or_sampler_rng(data):
    state = torch.get_rng_state()
    sched = Schedule.build()
    finals = {}
    for name, params in (("optimal", {}), ("scfdm", {"seed": 3}), ("pca_locality", {}), ("ls", {"patch_size": 3})):
        noise = NoiseSource(5, 3, data.shape)
        den = make_denoiser(name, **params).fit(data)
        records = list(steps(den, make_sampler("ddpm", sched, 4), noise))
        finals[name] = ([g.get_state() for g in noise.generators], records[0].x_t)
    first = finals["optimal"]
    for name, (gens, x_T) in finals.items():
        assert torch.equal(x_T, first[1]), name  # same seed, same x_T, whichever denoiser runs
        assert all(torch.equal(a, b) for a, b in zip(gens, first[0])), name  # same draws from each stream
    assert torch.equal(torch.get_rng_state(), state)
