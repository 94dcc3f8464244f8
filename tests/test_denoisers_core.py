from functools import partial

import locality_data
import pytest
import torch
from devices import DEVICES
from locality_data import as_dataset, rel

from studio.data import load_dataset
from studio.denoisers import make_denoiser
from studio.denoisers.reference import nearest_ref, optimal_ref, wiener_ref

LEVELS = [1e-4, 1e-2, 0.5, 0.9999]


noisy = partial(locality_data.noisy, b=6, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("ab", LEVELS)
@pytest.mark.parametrize("device", DEVICES)
def test_optimal_matches_float64_brute_force(digits, ab, device):
    x = noisy(digits.x, ab)
    out = make_denoiser("optimal", device=device).fit(digits).denoise(x.to(device), 0, ab)
    out.x0, out.extras = out.x0.cpu(), {k: v.cpu() for k, v in out.extras.items()}
    assert rel(out.x0, optimal_ref(x, digits.x, ab)) < 1e-5
    w = out.extras["weights"]
    assert w.shape == (6, 8) and (w[:, :-1] >= w[:, 1:]).all() and (w.sum(1) <= 1 + 1e-5).all()
    assert (out.extras["ess"] >= 1 - 1e-4).all() and (out.extras["ess"] <= digits.n + 1e-3).all()


@pytest.mark.parametrize("ab", [1e-2, 0.5])
def test_optimal_temperature(digits, ab):
    x = noisy(digits.x, ab)
    out = make_denoiser("optimal", temperature=0.3).fit(digits).denoise(x, 0, ab).x0
    assert rel(out, optimal_ref(x, digits.x, ab, temperature=0.3)) < 1e-5


@pytest.mark.parametrize("ab", [0.02, 0.7])
def test_optimal_invariances(digits, ab):
    x = noisy(digits.x, ab, b=16)
    outs = [make_denoiser("optimal", chunk_size=c).fit(digits).denoise(x, 0, ab).x0 for c in (7, 64, digits.n)]
    # Chunks change only the float32 rounding of the GEMMs, never the math: agreement to 1e-5 relative.
    for o in outs[1:]:
        assert rel(o, outs[0]) < 1e-5
    den = make_denoiser("optimal").fit(digits)
    one_by_one = torch.cat([den.denoise(x[i:i + 1], 0, ab).x0 for i in range(16)])
    assert rel(one_by_one, den.denoise(x, 0, ab).x0) < 1e-5
    perm = torch.randperm(digits.n, generator=torch.Generator().manual_seed(5))
    shuffled = make_denoiser("optimal").fit(as_dataset(digits.x[perm], "perm")).denoise(x, 0, ab)
    assert rel(shuffled.x0, outs[0]) < 1e-5
    plain = den.denoise(x, 0, ab)
    assert torch.equal(perm[shuffled.extras["neighbours"][:, 0]], plain.extras["neighbours"][:, 0])


def test_optimal_tends_to_nearest(digits):
    x = noisy(digits.x, 0.9) + 0.05 * torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    near = make_denoiser("nearest").fit(digits).denoise(x, 0, 0.9).x0
    gaps = [rel(make_denoiser("optimal", temperature=tau).fit(digits).denoise(x, 0, 0.9).x0, near)
            for tau in (1.0, 0.1, 0.01, 1e-4)]
    assert gaps[-1] < 1e-6
    ab_gaps = []
    for ab in (0.9, 0.99, 0.9999):
        xa = noisy(digits.x, ab, seed=2)
        ab_gaps.append(rel(make_denoiser("optimal").fit(digits).denoise(xa, 0, ab).x0,
                           make_denoiser("nearest").fit(digits).denoise(xa, 0, ab).x0))
    assert ab_gaps[-1] < 1e-6 and ab_gaps[0] >= ab_gaps[-1]


def test_optimal_approaches_wiener_on_gaussian_data():
    """With many Gaussian samples, the empirical posterior mean tends to the Wiener filter."""
    g = torch.Generator().manual_seed(0)
    A = torch.tensor([[0.5, 0.0], [0.3, 0.2]])
    errs = []
    for n in (50, 50_000):
        ds = as_dataset(torch.randn(n, 2, generator=g) @ A.T, f"gauss{n}")
        x = noisy(ds.x, 0.5, b=32, seed=3)
        opt = make_denoiser("optimal").fit(ds).denoise(x, 0, 0.5).x0
        wie = make_denoiser("wiener").fit(ds).denoise(x, 0, 0.5).x0
        errs.append(float((opt - wie).norm() / wie.norm()))
    assert errs[1] < 0.02 and errs[1] < errs[0]


@pytest.mark.parametrize("ab", LEVELS)
def test_wiener_matches_closed_form(digits, ab):
    x = noisy(digits.x, ab)
    out = make_denoiser("wiener").fit(digits).denoise(x, 0, ab).x0
    assert rel(out, wiener_ref(x, digits.x, ab)) < 1e-4


@pytest.mark.parametrize("ab", LEVELS)
def test_nearest_matches_brute_force(digits, ab):
    x = noisy(digits.x, ab)
    out = make_denoiser("nearest", chunk_size=100).fit(digits).denoise(x, 0, ab)
    assert torch.equal(out.x0.double(), nearest_ref(x, digits.x, ab))
    assert (out.extras["weights"][:, 0] == 1).all()


def test_wiener_fit_is_cached(digits, tmp_path):
    from studio.cache import cache_root, finish_writes

    make_denoiser("wiener").fit(digits)
    finish_writes()  # the fit is stored from a background thread
    files = list((cache_root() / "gaussian-fit").glob("*.safetensors"))
    assert len(files) == 1 and digits.fingerprint  # keyed by the fingerprint digest
    before = files[0].stat().st_mtime_ns
    make_denoiser("wiener").fit(digits)
    assert files[0].stat().st_mtime_ns == before


def test_unknown_denoiser_and_param():
    with pytest.raises(ValueError, match="denoiser.name.*optimal"):
        make_denoiser("magic")
    with pytest.raises(ValueError, match="denoiser.temperature.*out of range"):
        make_denoiser("optimal", temperature=-1)
    with pytest.raises(ValueError, match="denoiser.sigma.*allowed: temperature"):
        make_denoiser("optimal", sigma=1)


def test_denoise_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="fit"):
        make_denoiser("optimal").denoise(torch.zeros(1, 2), 0, 0.5)


def test_data_norms_in_blocks_match_float64(monkeypatch):
    from studio.denoisers import softmax

    x = torch.randn(1003, 48, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(softmax, "_NORM_BLOCK_BYTES", 8 * 48 * 10)  # 10 rows per block
    bank = softmax.DataBank.from_flat(x, torch.device("cpu"))
    ref = (x.double() ** 2).sum(1)
    assert torch.allclose(bank.sq_norms.double(), ref, rtol=1e-7, atol=0)
    per_channel = (x.double().reshape(1003, 3, 16) ** 2).sum(2).T
    assert torch.allclose(bank.channel_sq_norms(3).double(), per_channel, rtol=1e-7, atol=0)


def test_data_too_large_for_the_device_is_refused_with_its_size(monkeypatch):
    from studio.denoisers import budget, softmax

    monkeypatch.setattr(budget, "memory_budget", lambda device: 2**30)  # 1 GiB free on the "GPU"
    x = torch.zeros(1, 12288).expand(30_000, 12288)  # 30,000 x 3x64x64 (no memory behind it)
    with pytest.raises(ValueError, match=r"30,000 points x 12,288 coordinates as float32 = 1\.37 GiB.*"
                                         r"needs about 1\.44 GiB of cuda memory but the budget is 1\.00 GiB"):
        softmax.DataBank.from_flat(x, torch.device("cuda"))
