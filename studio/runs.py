"""A finished run and its folder: config.yaml, images, metrics.json, tensors.safetensors (README, "Command line")."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from studio import __version__, images
from studio.cache import atomic_dir
from studio.config import RunConfig
from studio.diffusion.loop import Trajectory

TENSORS = "tensors.safetensors"
RUN_FILES = ("config.yaml", "metrics.json", TENSORS)
# what studio.studies.compare writes: one comparison, or a table of several
COMPARISON_FILES = (("metrics.json", "compare.png"), ("table.json", "compare.png"))
MAX_NAME_BYTES = 255


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


def stamped_id(label: str) -> str:
    """UTC second, a label and 64 random bits: readable, sortable, and not guessable from what ran (the ids of
    run, comparison and study folders)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', f'{stamp}-{label}')}-{secrets.token_hex(8)}"


def new_run_id(cfg: RunConfig) -> str:
    """A run's id: stamped_id of what ran."""
    return stamped_id(f"{cfg.dataset.name}-{cfg.denoiser.name}-{cfg.sampler.name}{cfg.sampler.steps}")


def is_studio_folder(folder: Path) -> bool:
    """Whether `folder` is a run folder or a comparison folder the studio wrote (the only kind it replaces)."""
    kinds = (RUN_FILES, *COMPARISON_FILES)
    return any(all((folder / name).is_file() for name in kind) for kind in kinds)


def _writable_ancestor(path: Path, flag: str) -> None:
    """Refuse `path` when its nearest existing ancestor is not a folder the studio can create entries in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag}: {ancestor} is not a folder, so {path} cannot be created there")
    try:
        shutil.rmtree(tempfile.mkdtemp(dir=ancestor, prefix=".studio-probe-"))
    except OSError as err:
        raise ValueError(f"{flag}: cannot write in {ancestor} ({err.strerror or err})") from None


def check_out_folder(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """The absolute folder a command may write to; ValueError naming `flag` when writing there could lose
    anything of the user's: an existing file, FIFO or link, a folder with other files, or a studio run or
    comparison folder without `overwrite`."""
    text = str(out)
    if not text.strip():
        raise ValueError(f"{flag}: empty path")
    path = Path(os.path.abspath(text))
    long = next((part for part in path.parts if len(part.encode()) > MAX_NAME_BYTES), None)
    if long is not None:
        raise ValueError(f"{flag}: the name {long[:40]}... is {len(long.encode())} bytes, over the filesystem's "
                         f"{MAX_NAME_BYTES}")
    if path.parent == path:
        raise ValueError(f"{flag}: {path} is a filesystem root")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{flag}: {path} exists and is not a folder; refusing to replace it")
    if path.is_dir() and any(path.iterdir()):
        if not is_studio_folder(path):
            raise ValueError(f"{flag}: {path} holds files that are not a studio run; refusing to replace it "
                             "(choose a new or empty folder)")
        if not overwrite:
            raise ValueError(f"{flag}: {path} already holds a studio run; pass --overwrite to replace it")
    _writable_ancestor(path, flag)
    return path


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
