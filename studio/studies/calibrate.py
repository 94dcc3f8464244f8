"""Fit the patch-size schedule of `ls`/`els` to a target denoiser.

At each of the sampler's noise levels, seeded training images are noised, the target denoises them,
and the patch size whose x̂0 has the smallest mean squared difference from the target's is kept (Kamb &
Ganguli, arXiv 2412.20292, calibrate against a trained UNet; any registered denoiser can be the target).
The schedule is stored in the cache under every input that changes it and, with --out, as YAML or
JSON that `denoiser.patch_schedule` can name.

    python -m studio calibrate --denoiser els --target unet --dataset digits --steps 10 --n 32 \\
        --target-set checkpoint=assets/unet.safetensors --out els-digits.yaml
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from studio.cache import digest, entry_path
from studio.config import RunConfig
from studio.data.registry import load_dataset
from studio.denoisers.local_score import PatchSizes
from studio.denoisers.patch_schedule import PatchSchedule, check_patch_size, full_window, save_schedule
from studio.denoisers.registry import denoiser_class, make_denoiser
from studio.diffusion.loop import denoise_batched
from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps

SCHEDULE_PARAMS = ("patch_size", "patch_schedule")


def candidate_sizes(shape: tuple[int, ...], sizes: Sequence[int] | None) -> list[int]:
    """The given odd sizes (checked), or every odd size up to the whole-image window."""
    if not sizes:
        return list(range(1, full_window(shape) + 1, 2))
    return sorted({check_patch_size(int(k), shape, "--sizes") for k in sizes})


def calibrate(
    cfg: RunConfig, target: str, target_params: dict[str, Any] | None = None, sizes: Sequence[int] | None = None
) -> tuple[PatchSchedule, Path]:
    """The calibrated schedule of cfg.denoiser against `target` (from the cache when present), and its cache file.

    Levels are cfg.sampler.steps timesteps of cfg.sampler.spacing on cfg.schedule; cfg.n probe images are
    drawn with cfg.seed; cfg.batch_size bounds each denoiser call.
    """
    cfg = cfg.validate()
    cls = denoiser_class(cfg.denoiser.name)
    if not issubclass(cls, PatchSizes):
        raise ValueError(f"--denoiser: {cfg.denoiser.name} has no patch-size schedule; choose one of: ls, els")
    target_params = dict(target_params or {})
    dataset = load_dataset(cfg.dataset.name, **cfg.dataset.options)
    if cfg.n > dataset.n:
        raise ValueError(f"--n: {cfg.n} probes but dataset {dataset.name} holds {dataset.n} images")
    ks = candidate_sizes(dataset.shape, sizes)
    params = {k: v for k, v in cfg.denoiser.params.items() if k not in SCHEDULE_PARAMS}
    meta = {
        "denoiser": cfg.denoiser.name, "denoiser_params": params, "target": target, "target_params": target_params,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "options": cfg.dataset.options},
        "schedule": cfg.to_dict()["schedule"], "steps": cfg.sampler.steps, "spacing": cfg.sampler.spacing,
        "probes": cfg.n, "seed": cfg.seed, "sizes": ks,
    }
    path = entry_path("patch-schedules", digest("patch-schedule-v1", meta), ".json")
    if path.exists():
        return PatchSchedule.from_dict(json.loads(path.read_text()), str(path)), path
    from studio.engine import resolve_device

    device = resolve_device(cfg.device)
    denoiser = make_denoiser(cfg.denoiser.name, device=device, **params).fit(dataset)
    tgt = make_denoiser(target, device=device, **target_params).fit(dataset)
    sched = Schedule.build(cfg.schedule.name, cfg.schedule.T, cfg.schedule.beta_start, cfg.schedule.beta_end)
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = dataset.x[torch.randperm(dataset.n, generator=g)[:cfg.n]]
    entries = []
    for t in timesteps(cfg.sampler.spacing, sched.T, cfg.sampler.steps).tolist():
        ab = sched.ab(t)
        x_t = (math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g)).to(device)
        want = denoise_batched(tgt, x_t, t, ab, cfg.batch_size).x0.double()
        errors = {}
        for k in ks:
            got = torch.cat([denoiser.denoise_at(part, ab, k).x0 for part in x_t.split(cfg.batch_size or len(x_t))])
            errors[k] = float(((got.double() - want) ** 2).mean())
        best = min(ks, key=lambda k: (errors[k], k))
        entries.append({"t": t, "alpha_bar": ab, "patch_size": best, "mse": errors[best],
                        "mse_by_size": {str(k): v for k, v in errors.items()}})
    schedule = PatchSchedule(entries, meta)
    save_schedule(schedule, path)
    return schedule, path
