"""Real run folders for the export/Hub tests, made through the `sample` command on a tiny dataset."""

from __future__ import annotations

from pathlib import Path

from studio.cli import main


def make_run(folder: Path, seed: int = 0, steps: int = 3) -> Path:
    """A digits/optimal/DDIM run of 2 samples (a fraction of a second on CPU)."""
    rc = main(["sample", "--dataset", "digits", "--denoiser", "optimal", "--sampler", "ddim", "--steps", str(steps),
               "--n", "2", "--seed", str(seed), "--set", "dataset.size=20", "--out", str(folder)])
    assert rc == 0
    return folder


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder` by relative path: to compare folders byte for byte."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
