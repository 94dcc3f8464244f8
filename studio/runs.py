"""A finished run and its folder: config.yaml, images, metrics.json, tensors.safetensors (README, "Command line")."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from studio import __version__, images
from studio.cache import atomic_dir, digest
from studio.config import RunConfig
from studio.diffusion.loop import Trajectory

TENSORS = "tensors.safetensors"


@dataclass
class Run:
    run_id: str
    config: RunConfig
    trajectory: Trajectory
    dataset: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def samples(self) -> torch.Tensor:
        return self.trajectory.samples

    @property
    def is_image(self) -> bool:
        return self.dataset["kind"] == "image"


def new_run_id(cfg: RunConfig) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{cfg.dataset.name}-{cfg.denoiser.name}-{cfg.sampler.name}{cfg.sampler.steps}"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest(cfg.to_dict(), stamp)[:6]}"


def render(run: Run, background: torch.Tensor | None = None) -> dict[str, bytes]:
    """The run's pictures as PNG/GIF bytes: samples, trajectory strip, animation."""
    traj = run.trajectory

    def png(img) -> bytes:
        import io

        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    if run.is_image:
        return {
            "samples.png": png(images.grid(run.samples)),
            "trajectory.png": png(images.trajectory_strip(traj.x_t, traj.x0)),
            "trajectory.gif": images.gif_bytes(images.trajectory_frames(traj.x_t, traj.x0)),
        }
    frames = [images.scatter(traj.x0[k], background) for k in images.column_indices(len(traj.x0), 60)]
    return {
        "samples.png": png(images.scatter(run.samples, background)),
        "trajectory.png": png(images.grid_of_scatters([traj.x_t, traj.x0], background)),
        "trajectory.gif": images.gif_bytes(frames),
    }


def metrics_document(run: Run) -> dict[str, Any]:
    cfg = run.config.to_dict()
    return {
        "run_id": run.run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "studio_version": __version__,
        "dataset": run.dataset,
        "denoiser": cfg["denoiser"],
        "sampler": cfg["sampler"],
        "schedule": cfg["schedule"],
        **run.metrics,
    }


def save_run(run: Run, folder: str | Path, background: torch.Tensor | None = None) -> Path:
    """Write the run folder atomically (temp folder, then rename); returns its path."""
    folder = Path(folder)
    traj = run.trajectory
    tensors = {
        "samples": traj.samples.clone(),
        "x_t": traj.x_t.contiguous(),
        "x0": traj.x0.contiguous(),
        "timesteps": traj.timesteps,
        "alpha_bar": traj.alpha_bar,
        **{f"extras.{k}": v.contiguous() for k, v in traj.extras.items()},
    }
    pictures = render(run, background)

    def write(tmp: Path) -> None:
        (tmp / "config.yaml").write_text(run.config.to_yaml())
        (tmp / "metrics.json").write_text(json.dumps(metrics_document(run), indent=2))
        save_file(tensors, str(tmp / TENSORS))
        for name, data in pictures.items():
            (tmp / name).write_bytes(data)

    atomic_dir(folder, write)
    return folder


def load_run(folder: str | Path) -> Run:
    """Read a run folder back (config, tensors, metrics)."""
    folder = Path(folder)
    missing = [n for n in ("config.yaml", "metrics.json", TENSORS) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"run folder {folder}: missing {', '.join(missing)}")
    cfg = RunConfig.load(folder / "config.yaml")
    doc = json.loads((folder / "metrics.json").read_text())
    t = load_file(str(folder / TENSORS))
    traj = Trajectory(
        timesteps=t["timesteps"], alpha_bar=t["alpha_bar"], x_t=t["x_t"], x0=t["x0"],
        extras={k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("extras.")},
        final=t.get("samples"),
    )
    metrics = {k: doc[k] for k in ("timings", "per_step", "summary") if k in doc}
    return Run(doc["run_id"], cfg, traj, doc["dataset"], metrics)
