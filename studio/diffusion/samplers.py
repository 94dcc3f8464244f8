"""Samplers written from their formulas (README, "What is computed"), all driven by x̂0 (ε̂ is derived from it).

A sampler is stateful for one run: `start(x_T)`, then for k in range(len(sampler)):
`point(k) -> (t, ā, x_t)` gives where to call the denoiser, `advance(k, x̂0, noise)` moves on.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, ClassVar

import torch

from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps as make_timesteps
from studio.params import Param, resolve

NoiseFn = Callable[[], torch.Tensor]


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab: float) -> torch.Tensor:
    """ε̂ = (x_t - sqrt(ā) x̂0) / sqrt(1 - ā), in two elementwise passes (the loop's per-step cost on a GPU)."""
    return torch.sub(x_t, x0, alpha=math.sqrt(ab)).div_(math.sqrt(1 - ab))


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, ab_next: float, sigma: float = 0.0) -> torch.Tensor:
    """The deterministic part of the DDIM update: sqrt(ā') x̂0 + sqrt(1 - ā' - σ²) ε̂ (the caller adds σ z)."""
    return torch.add(eps * math.sqrt(max(1 - ab_next - sigma**2, 0.0)), x0, alpha=math.sqrt(ab_next))


class Sampler:
    """Base: a timestep plan over a schedule; subclasses define the update."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, schedule: Schedule, steps: int, spacing: str = "trailing", **params: Any) -> None:
        self.schedule = schedule
        self.p = resolve(self.params, params, "sampler")
        self.timesteps = make_timesteps(spacing, schedule.T, steps)
        self.t_of_step = self.timesteps.tolist()  # Python ints: the loop asks for them three times a step
        self.x: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.timesteps)

    def start(self, x_T: torch.Tensor, generators: list[torch.Generator] | None = None) -> None:
        """Begin a run at x_T; `generators` are the per-sample noise streams (for samplers that draw their own)."""
        self.x = x_T

    def level(self, k: int) -> tuple[int, float]:
        """(t, ā) of the denoiser call at step k."""
        t = self.t_of_step[k]
        return t, self.schedule.ab(t)

    def levels(self) -> list[float]:
        """ā of every denoiser call, in order (known before the run starts)."""
        return [self.level(k)[1] for k in range(len(self))]

    def point(self, k: int) -> tuple[int, float, torch.Tensor]:
        return *self.level(k), self.x

    def next_ab(self, k: int) -> float:
        """ā' of the level after step k; 1 after the last step (clean data)."""
        return self.schedule.ab(self.t_of_step[k + 1]) if k + 1 < len(self) else 1.0

    def advance(self, k: int, x0: torch.Tensor, noise: NoiseFn) -> None:
        t, ab, x = self.point(k)
        self.x = self.update(x, x0, ab, self.next_ab(k), noise)

    def update(self, x: torch.Tensor, x0: torch.Tensor, ab: float, ab_next: float, noise: NoiseFn) -> torch.Tensor:
        raise NotImplementedError


class DDIM(Sampler):
    name = "ddim"
    summary = "DDIM (Song et al. 2021); η=0 deterministic, η=1 matches DDPM's marginals"
    params = (Param("eta", float, 0.0, "stochasticity η", low=0.0, high=1.0),)

    def update(self, x, x0, ab, ab_next, noise):
        eps = eps_from_x0(x, x0, ab)
        sigma = self.p["eta"] * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        out = ddim_step(x0, eps, ab_next, sigma)
        return out + sigma * noise() if sigma > 0 else out


class DDPM(Sampler):
    name = "ddpm"
    summary = "ancestral DDPM (Ho et al. 2020), respaced: x' ~ q(x' | x_t, x̂0)"
    params = (Param("variance", str, "fixed_small", "posterior variance", choices=("fixed_small", "fixed_large")),)

    def update(self, x, x0, ab, ab_next, noise):
        beta = 1 - ab / ab_next
        mean = (math.sqrt(ab_next) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab)) * x
        if ab_next >= 1.0:
            return mean
        var = (1 - ab_next) / (1 - ab) * beta if self.p["variance"] == "fixed_small" else beta
        return mean + math.sqrt(var) * noise()


class Generalized(Sampler):
    """Permenter & Yuan (smalldiffusion) in σ-space, σ² = (1-ā)/ā, on x/sqrt(ā) = x0 + σ ε:
    ε̄ = γ ε_k + (1-γ) ε_{k-1}; σ_p = (σ' / σ^μ)^(1/(1-μ)); x' = x - (σ - σ_p) ε̄ + sqrt(σ'² - σ_p²) z."""

    name = "generalized"
    summary = "generalized (γ, μ) sampler: DDPM=(1, 0.5), DDIM=(1, 0), accelerated=(2, 0)"
    params = (
        Param("gamma", float, 1.0, "ε averaging γ (2 = accelerated)", low=0.0, high=3.0),
        Param("mu", float, 0.0, "noise injection μ (0.5 = DDPM)", low=0.0, high=0.99),
    )

    def start(self, x_T, generators=None):
        super().start(x_T, generators)
        self.eps_prev: torch.Tensor | None = None

    def update(self, x, x0, ab, ab_next, noise):
        gamma, mu = self.p["gamma"], self.p["mu"]
        sig, sig_next = math.sqrt((1 - ab) / ab), math.sqrt((1 - ab_next) / ab_next)
        eps = eps_from_x0(x, x0, ab)
        eps_bar = eps if self.eps_prev is None else gamma * eps + (1 - gamma) * self.eps_prev
        self.eps_prev = eps
        sig_p = (sig_next / sig**mu) ** (1 / (1 - mu))
        z = x / math.sqrt(ab) - (sig - sig_p) * eps_bar
        spread = math.sqrt(max(sig_next**2 - sig_p**2, 0.0))
        if spread > 0:
            z = z + spread * noise()
        return z * math.sqrt(ab_next)


class DiffusersAdapter(Sampler):
    """Runs a diffusers scheduler on our schedule, feeding it ε̂ from the denoiser's x̂0.
    Heun-type schedulers call the denoiser more than once per timestep: len(self) counts calls."""

    name = "diffusers"
    summary = "any diffusers scheduler, fed ε̂ = (x_t - sqrt(ā) x̂0)/sqrt(1-ā)"
    params = (Param("scheduler", str, "DPMSolverMultistepScheduler", "diffusers scheduler class"),)
    preset: ClassVar[dict[str, Any]] = {}

    def __init__(self, schedule: Schedule, steps: int, spacing: str = "trailing", **params: Any) -> None:
        super().__init__(schedule, steps, spacing, **params)
        import diffusers

        cls_name = self.preset.get("scheduler", self.p.get("scheduler"))
        cls = getattr(diffusers, str(cls_name), None)
        if cls is None or not hasattr(cls, "step") or not cls_name.endswith("Scheduler"):
            raise ValueError(f"sampler.scheduler: {cls_name!r} is not a diffusers scheduler class")
        extra = {k: v for k, v in self.preset.items() if k != "scheduler"}
        config = dict(
            num_train_timesteps=schedule.T, trained_betas=schedule.betas.float().numpy(),
            timestep_spacing=spacing, steps_offset=0, prediction_type="epsilon", clip_sample=False,
            thresholding=False, **extra,
        )
        accepted = inspect.signature(cls.__init__).parameters
        if not {"trained_betas", "prediction_type"} <= set(accepted):
            raise ValueError(f"sampler.scheduler: {cls_name} cannot run on this schedule (it takes no trained_betas "
                             "or no ε prediction; flow-matching and variance-exploding schedulers do not fit); "
                             "choose e.g. DPMSolverMultistepScheduler, EulerDiscreteScheduler or UniPCMultistepScheduler")
        self.sched = cls(**{k: v for k, v in config.items() if k in accepted})
        missing = [a for a in ("set_timesteps", "scale_model_input", "init_noise_sigma") if not hasattr(self.sched, a)]
        if missing:
            raise ValueError(f"sampler.scheduler: {cls_name} lacks {', '.join(missing)}, which the adapter needs; "
                             "choose e.g. DPMSolverMultistepScheduler, EulerDiscreteScheduler or UniPCMultistepScheduler")
        if "timesteps" in inspect.signature(self.sched.set_timesteps).parameters:
            self.sched.set_timesteps(timesteps=self.timesteps.tolist())
        else:
            self.sched.set_timesteps(steps)
        self.calls = [int(round(float(t))) for t in self.sched.timesteps]
        self.sigmas = getattr(self.sched, "sigmas", None)

    def __len__(self) -> int:
        return len(self.calls)

    def start(self, x_T, generators=None):
        self.x = x_T * self.sched.init_noise_sigma
        self.generators = generators

    def level(self, k):
        if self.sigmas is not None and len(self.sigmas) > k:
            return self.calls[k], 1.0 / (1.0 + float(self.sigmas[k]) ** 2)
        return self.calls[k], self.schedule.ab(int(self.sched.timesteps[k]))

    def point(self, k):
        return *self.level(k), self.sched.scale_model_input(self.x, self.sched.timesteps[k])

    def advance(self, k, x0, noise):
        t, ab, x_in = self.point(k)
        alphas = getattr(self.sched, "alphas_cumprod", None)
        if self.sigmas is None and alphas is not None:
            # ε̂ in the scheduler's own ā (float32): its x̂0 = (x - sqrt(1-ā) ε̂)/sqrt(ā) is then ours. With our float64 ā,
            # 1-ā near t=0 differs by ~1e-3 relative and the final state would drift by ~1e-4.
            ab = float(alphas[int(self.sched.timesteps[k])])
        eps = eps_from_x0(x_in, x0, ab)
        takes_generator = "generator" in inspect.signature(self.sched.step).parameters
        kwargs = {"generator": self.generators} if self.generators and takes_generator else {}
        self.x = self.sched.step(eps, self.sched.timesteps[k], self.x, **kwargs).prev_sample


def _alias(alias: str, scheduler: str, summary: str, **extra: Any) -> type[DiffusersAdapter]:
    return type(alias, (DiffusersAdapter,), {
        "name": alias, "summary": summary, "params": (), "preset": {"scheduler": scheduler, **extra},
    })


SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        DDPM, DDIM, Generalized, DiffusersAdapter,
        _alias("dpmpp_2m", "DPMSolverMultistepScheduler", "DPM-Solver++(2M) multistep (diffusers)",
               algorithm_type="dpmsolver++", solver_order=2),
        _alias("euler", "EulerDiscreteScheduler", "Euler (Karras et al.) on the probability-flow ODE (diffusers)"),
        _alias("euler_ancestral", "EulerAncestralDiscreteScheduler", "Euler ancestral (diffusers)"),
        _alias("heun", "HeunDiscreteScheduler", "Heun 2nd order, 2 denoiser calls per step (diffusers)"),
        _alias("unipc", "UniPCMultistepScheduler", "UniPC multistep (diffusers)"),
    )
}


def sampler_class(name: str) -> type[Sampler]:
    if name not in SAMPLERS:
        raise ValueError(f"sampler.name: unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def make_sampler(name: str, schedule: Schedule, steps: int, spacing: str = "trailing", **params: Any) -> Sampler:
    return sampler_class(name)(schedule, steps, spacing, **params)
