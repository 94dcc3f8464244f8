import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from studio.diffusion.schedules import Schedule, make_betas
from studio.diffusion.spacing import timesteps


@pytest.mark.parametrize("ours,theirs", [
    ("linear", "linear"), ("scaled_linear", "scaled_linear"), ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid"),
])
@pytest.mark.parametrize("T,b0,b1", [(1000, 1e-4, 0.02), (250, 5e-4, 0.03)])
def test_alpha_bar_matches_diffusers(ours, theirs, T, b0, b1):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=theirs, beta_start=b0, beta_end=b1).alphas_cumprod
    ab = Schedule.build(ours, T, b0, b1).alpha_bar
    assert ab.dtype == torch.float64 and ab.shape == (T,)
    assert torch.allclose(ab, ref.double(), atol=1e-6, rtol=0)
    assert (ab[1:] < ab[:-1]).all()


def test_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="schedule.name.*linear, scaled_linear, cosine, sigmoid"):
        make_betas("quadratic")


@pytest.mark.parametrize("K", [1, 7, 10, 50, 333, 1000])
def test_trailing_and_linspace_closed_form(K):
    T = 1000
    trailing = timesteps("trailing", T, K)
    expected = [round(T - i * T / K) - 1 for i in range(K)]
    assert trailing.tolist() == expected
    assert trailing[0] == T - 1
    lin = timesteps("linspace", T, K)
    assert lin.tolist() == [round((T - 1) * (K - 1 - i) / max(K - 1, 1)) for i in range(K)]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("K", [10, 50, 37])
def test_spacings_match_diffusers_ddim(spacing, K):
    sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=0)
    sched.set_timesteps(K)
    assert timesteps(spacing, 1000, K).tolist() == sched.timesteps.tolist()


@pytest.mark.parametrize("K", [0, 1001, -3])
def test_steps_out_of_range(K):
    with pytest.raises(ValueError, match=r"sampler.steps.*\[1, 1000\]"):
        timesteps("trailing", 1000, K)
