import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from studio.denoisers.base import Denoised, Denoiser
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import make_sampler
from studio.diffusion.schedules import Schedule

SHAPE = (1, 4, 4)
N = 5


class Toy(Denoiser):
    """A fixed nonlinear x̂0(x_t, ā) so that every sampler step is exercised."""

    name = "toy"
    summary = "test"

    def _fit(self, dataset):
        pass

    def denoise(self, x_t, t, alpha_bar):
        return Denoised(0.9 * torch.tanh(x_t / math.sqrt(alpha_bar + 0.5)))


def toy_x0(x, ab):
    return Toy().denoise(x, 0, ab).x0


def ours(name, K, spacing="leading", seed=3, **params):
    sampler = make_sampler(name, Schedule.build("linear"), K, spacing, **params)
    return loop.collect(loop.steps(Toy(), sampler, NoiseSource(seed, N, SHAPE)))


def replay(sched, K, traj, noise, step):
    """Drive a diffusers scheduler with the same toy denoiser and noise; every x_t must match our trajectory."""
    sched.set_timesteps(K)
    x = noise.draw()
    for k, t in enumerate(sched.timesteps):
        assert int(t) == int(traj.timesteps[k])
        assert torch.allclose(x, traj.x_t[k], atol=1e-5), f"x_t differs at step {k}"
        ab = float(sched.alphas_cumprod[t])
        eps = (x - math.sqrt(ab) * toy_x0(x, ab)) / math.sqrt(1 - ab)
        x = step(k, eps, t, x)
    assert torch.allclose(x, traj.samples, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.4])
@pytest.mark.parametrize("K", [10, 50])
def test_ddim_matches_diffusers(eta, K):
    traj = ours("ddim", K, eta=eta)
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                          timestep_spacing="leading", steps_offset=0)
    noise = NoiseSource(3, N, SHAPE)

    def step(k, eps, t, x):
        z = noise.draw() if k < K - 1 and eta > 0 else torch.zeros_like(x)
        return sched.step(eps, t, x, eta=eta, variance_noise=z).prev_sample

    replay(sched, K, traj, noise, step)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("K", [10, 40])
def test_ddpm_matches_diffusers(variance, K):
    traj = ours("ddpm", K, variance=variance)
    sched = DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type=variance,
                          timestep_spacing="leading", steps_offset=0)
    noise = NoiseSource(3, N, SHAPE)
    replay(sched, K, traj, noise, lambda k, eps, t, x: sched.step(eps, t, x, generator=noise.generators).prev_sample)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_adapter_with_ddim_scheduler_reproduces_ddim(spacing):
    """(diffusers' DDIM steps to t - T//K, which is the next planned timestep only for these two spacings.)"""
    a = ours("ddim", 20, spacing)
    b = ours("diffusers", 20, spacing, scheduler="DDIMScheduler")
    assert a.timesteps.tolist() == b.timesteps.tolist()
    assert torch.allclose(a.x_t, b.x_t, atol=1e-5) and torch.allclose(a.samples, b.samples, atol=1e-5)


def test_euler_is_deterministic_ddim():
    """Euler on the probability-flow ODE in σ-space is exactly DDIM(η=0) on the same timesteps."""
    a = ours("ddim", 25, "trailing")
    b = ours("euler", 25, "trailing")
    assert torch.allclose(a.x_t, b.x_t, atol=1e-4)
    assert torch.allclose(a.samples, b.samples, atol=1e-4)


def test_generalized_special_cases():
    assert torch.allclose(ours("generalized", 30, gamma=1.0, mu=0.0).x_t, ours("ddim", 30).x_t, atol=1e-5)
    ddpm = ours("ddpm", 30, variance="fixed_small")
    gen = ours("generalized", 30, gamma=1.0, mu=0.5)
    assert torch.allclose(gen.x_t, ddpm.x_t, atol=1e-4)
    accel = ours("generalized", 30, gamma=2.0, mu=0.0)
    assert not torch.allclose(accel.x_t, ddpm.x_t, atol=1e-3)


def test_accelerated_uses_eps_extrapolation():
    """γ=2: x' uses ε̄ = 2ε_k - ε_{k-1}; check one step by hand in σ-space."""
    traj = ours("generalized", 6, "trailing", gamma=2.0, mu=0.0)
    sched = Schedule.build("linear")
    abs_ = [sched.ab(int(t)) for t in traj.timesteps] + [1.0]
    eps = [(traj.x_t[k] - math.sqrt(abs_[k]) * traj.x0[k]) / math.sqrt(1 - abs_[k]) for k in range(2)]
    sig = [math.sqrt((1 - a) / a) for a in abs_[:3]]
    z = traj.x_t[1] / math.sqrt(abs_[1]) - (sig[1] - sig[2]) * (2 * eps[1] - eps[0])
    assert torch.allclose(z * math.sqrt(abs_[2]), traj.x_t[2], atol=1e-5)


@pytest.mark.parametrize("name", ["dpmpp_2m", "euler_ancestral", "heun", "unipc"])
def test_other_diffusers_schedulers_run_to_clean_samples(name):
    traj = ours(name, 12, "trailing")
    assert torch.isfinite(traj.x0).all()
    assert traj.x_t.shape[1:] == (N, *SHAPE)
    assert traj.alpha_bar[-1] > traj.alpha_bar[0]
    if name == "heun":
        assert len(traj.timesteps) == 2 * 12 - 1
    # The denoiser is bounded by 0.9, so a sampler that ends on x̂0 stays there.
    assert traj.samples.abs().max() <= 0.9


def test_unknown_sampler_and_scheduler():
    with pytest.raises(ValueError, match="sampler.name.*ddim"):
        make_sampler("leapfrog", Schedule.build(), 10)
    with pytest.raises(ValueError, match="sampler.scheduler"):
        make_sampler("diffusers", Schedule.build(), 10, scheduler="NotAScheduler")


def driven(name, K, spacing="trailing", seed=3, **params):
    """The sampler driven by hand (no loop): its state after the last update, and the last x̂0."""
    sampler = make_sampler(name, Schedule.build("linear"), K, spacing, **params)
    noise = NoiseSource(seed, N, SHAPE)
    sampler.start(noise.draw(), noise.generators)
    for k in range(len(sampler)):
        t, ab, x = sampler.point(k)
        x0 = toy_x0(x, ab)
        sampler.advance(k, x0, noise.draw)
    return sampler.x, x0


@pytest.mark.parametrize("name,params", [("generalized", {"gamma": 2.0, "mu": 0.0}),
                                         ("generalized", {"gamma": 2.0, "mu": 0.5}),
                                         ("dpmpp_2m", {}), ("euler_ancestral", {}), ("unipc", {})])
def test_samples_is_the_samplers_final_state(name, params):
    """The run's result is the state after the sampler's last update (ā' = 1), not the last x̂0."""
    traj = ours(name, 8, "trailing", **params)
    final, last_x0 = driven(name, 8, **params)
    assert torch.equal(traj.samples, final.float())
    assert torch.equal(traj.x0[-1], last_x0)  # the last x̂0 stays in the trajectory
    if name == "generalized":
        # γ = 2 extrapolates ε̂ on the last step too: x_final = x0 + (σ_last)(ε_last - ε_prev) ≠ x̂0
        assert (traj.samples - traj.x0[-1]).abs().max() > 1e-3


@pytest.mark.parametrize("name,params", [("ddim", {}), ("ddim", {"eta": 1.0}), ("ddpm", {}),
                                         ("generalized", {"gamma": 1.0, "mu": 0.0})])
def test_ddim_ddpm_samples_equal_last_x0(name, params):
    traj = ours(name, 8, "trailing", **params)
    final, _ = driven(name, 8, **params)
    assert torch.equal(traj.samples, final)
    assert torch.allclose(traj.samples, traj.x0[-1], atol=1e-6, rtol=0)


def test_final_state_survives_save_and_load(tmp_path):
    from studio.config import RunConfig
    from studio.runs import Run, load_run, save_run

    traj = ours("generalized", 6, "trailing", gamma=2.0, mu=0.0)
    cfg = RunConfig.from_dict({"dataset": {"name": "moons"}})
    info = {"name": "moons", "fingerprint": "f", "kind": "image", "shape": list(SHAPE), "n": 1,
            "source": "", "license": "", "options": {}}
    run = Run("r", cfg, traj, info, {})
    back = load_run(save_run(run, tmp_path / "run"))
    assert torch.equal(back.samples, traj.samples)
    assert torch.equal(back.trajectory.x0, traj.x0)
    assert not torch.equal(back.samples, back.trajectory.x0[-1])
