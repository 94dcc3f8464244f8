"""Orchestration: config -> dataset -> fitted denoiser -> sampler loop -> Run. The UI, CLI and tests call this."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from studio.analysis import neighbours, stats
from studio.cache import Recent
from studio.config import RunConfig
from studio.data.dataset import Dataset
from studio.data.registry import load_dataset
from studio.denoisers.base import Denoiser
from studio.denoisers.registry import make_denoiser
from studio.denoisers.softmax import DataBank
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import Sampler, make_sampler
from studio.diffusion.schedules import Schedule
from studio.diffusion.warm import warm_up_in_background
from studio.runs import Run, new_run_id

_FITTED = Recent(keep=6)  # fitted denoisers, by what they were fitted with


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested but no CUDA GPU is available; choose one of: auto, cpu")
    return torch.device(name)


def fitted_denoiser(cfg: RunConfig, dataset: Dataset, device: torch.device) -> Denoiser:
    """A denoiser fitted on `dataset`, reused across runs with the same parameters, data and device."""
    key = repr((cfg.denoiser.name, sorted(cfg.denoiser.params.items()), dataset.fingerprint, str(device)))
    return _FITTED.get_or_make(
        key, lambda: make_denoiser(cfg.denoiser.name, device=device, **cfg.denoiser.params).fit(dataset))


def build_sampler(cfg: RunConfig) -> Sampler:
    schedule = Schedule.build(cfg.schedule.name, cfg.schedule.T, cfg.schedule.beta_start, cfg.schedule.beta_end)
    return make_sampler(cfg.sampler.name, schedule, cfg.sampler.steps, cfg.sampler.spacing, **cfg.sampler.params)


@dataclass
class Prepared:
    """Everything a run needs, ready to step; `load_s` is the time spent loading the dataset, `fit_s` fitting the
    denoiser (0 when this process had it fitted already). `clock` is filled when the steps end (loop.StepClock)."""

    config: RunConfig
    dataset: Dataset
    denoiser: Denoiser
    device: torch.device
    fit_s: float
    load_s: float = 0.0
    warm_wait_s: float = 0.0  # time the run waited, after loading its data, for the first-use warm-up to end
    clock: dict[str, float] = field(default_factory=dict)

    def steps(self, x_T: torch.Tensor | None = None) -> Iterator[loop.Step]:
        cfg = self.config
        noise = NoiseSource(cfg.seed, cfg.n, self.dataset.shape, self.device)
        self.clock = {}
        return loop.steps(self.denoiser, build_sampler(cfg), noise, cfg.sampler.clip_x0, cfg.batch_size, x_T,
                          clock=self.clock)


def prepare(cfg: RunConfig) -> Prepared:
    """Load the data and fit the denoiser. On a GPU, a new process's first-use costs (CUDA libraries, Triton
    kernels) are paid by a warm-up in the background while the data load (studio.denoisers.warm)."""
    cfg = cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    size = cfg.dataset.options.get("size")
    warming = warm_up_in_background(cfg.denoiser.name, device, cfg.dataset.options.get("channels") or 3,
                                    size is None or size % 16 == 0)
    dataset = load_dataset(cfg.dataset.name, **cfg.dataset.options)
    t1 = time.perf_counter()
    if warming is not None:
        warming.join()
    t2 = time.perf_counter()
    denoiser = fitted_denoiser(cfg, dataset, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Prepared(cfg, dataset, denoiser, device, time.perf_counter() - t2, t1 - t0, t2 - t1)


def finish(prep: Prepared, traj: loop.Trajectory, sampling_s: float) -> Run:
    """Attach per-step statistics, neighbour summary and timings to a finished trajectory."""
    t0 = time.perf_counter()
    bank = getattr(prep.denoiser, "bank", None)
    if isinstance(bank, DataBank) and bank.x.device == prep.device:  # search the copy the denoiser holds
        neighbours.bank_for(prep.dataset, prep.device, bank)
    per_step = stats.per_step(traj, prep.dataset, prep.device)
    summary = stats.summary(traj.samples, prep.dataset, prep.device)
    timings = {
        "load_s": prep.load_s,
        "warm_wait_s": prep.warm_wait_s,
        "fit_s": prep.fit_s,
        "sampling_s": sampling_s,
        "ms_per_step": 1000 * sampling_s / max(len(traj.timesteps), 1),
        **{k: prep.clock[k] for k in ("setup_s", "denoise_s", "overhead_s") if k in prep.clock},
        "analysis_s": time.perf_counter() - t0,
    }
    metrics = {
        "timings": timings,
        "per_step": per_step,
        "summary": summary,
    }
    return Run(new_run_id(prep.config), prep.config, traj, dataset_info(prep.dataset), metrics)


def dataset_info(ds: Dataset) -> dict:
    return {
        "name": ds.name, "fingerprint": ds.fingerprint, "kind": ds.kind, "shape": list(ds.shape), "n": ds.n,
        "source": ds.source, "license": ds.license, "options": ds.options,
    }


def execute(cfg: RunConfig, on_step: Callable[[loop.Step], bool | None] | None = None) -> Run:
    """Run a config to the end; `on_step` sees every step and may return False to cancel."""
    prep = prepare(cfg)
    t0 = time.perf_counter()
    traj = loop.collect(prep.steps(), on_step)
    return finish(prep, traj, time.perf_counter() - t0)
