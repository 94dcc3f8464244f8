"""Views of a finished run shared by the tabs: summary text, the picture of one step, the saved zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

from PIL import Image

from studio.cache import atomic_write
from studio.ui import pictures
from studio.ui.session import Result, shown_folder


def background(result: Result):
    """Training points drawn behind 2-D samples (None for images)."""
    return None if result.run.is_image else result.dataset.x


def summary(result: Result) -> str:
    run = result.run
    t = run.metrics.get("timings", {})
    s = run.metrics.get("summary", {})
    cfg = run.config
    rate = s.get("memorisation_rate")
    memo = "—" if rate is None else f"{100 * rate:.0f}% of samples (nearest/2nd-nearest < 1/3)"
    lines = [
        f"**{cfg.denoiser.name}** + **{cfg.sampler.name}** · {cfg.sampler.steps} steps · {cfg.n} samples · "
        f"seed {cfg.seed} · {run.dataset['name']} (N = {run.dataset['n']:,})",
        f"fit {t.get('fit_s', 0):.2f} s · sampling {t.get('sampling_s', 0):.2f} s "
        f"({t.get('ms_per_step', 0):.1f} ms/step) · final distance to nearest training item (RMS) "
        f"{s.get('final_nn_rms', float('nan')):.3f} · memorised: {memo}",
    ]
    if result.folder is not None:
        lines.append(f"saved in `{shown_folder(result.folder)}`")
    return "  \n".join(lines)


def step_pairs(result: Result, k: int) -> Image.Image:
    """x_t | x̂0 of every sample at 1-based step k (clamped to the run)."""
    traj = result.run.trajectory
    i = min(max(int(k), 1), len(traj.timesteps)) - 1
    return pictures.pairs(traj.x_t[i], traj.x0[i], background(result))


def final_picture(result: Result) -> Image.Image | str:
    saved = result.folder / "samples.png" if result.folder else None
    if saved is not None and saved.is_file() and result.run.is_image:
        return str(saved)
    return pictures.view(result.run.samples, background(result))


def animation(result: Result) -> str | None:
    saved = result.folder / "trajectory.gif" if result.folder else None
    return str(saved) if saved is not None and saved.is_file() else None


def zipped(folder: Path | None) -> str | None:
    """The folder as folder.zip beside it (made once), for the download button."""
    if folder is None or not folder.is_dir():
        return None
    archive = folder.with_name(folder.name + ".zip")
    if not archive.is_file():
        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                    zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")

        atomic_write(archive, write)
    return str(archive)
