"""Analytic Diffusion Studio: training-free diffusion denoisers beside trained ones."""

from pathlib import Path

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, every run, export and Hub push records it


def resource_dir(name: str) -> Path:
    """The top-level `presets` or `assets` folder: the installed package's copy (studio/_resources/, put there
    by setup.py when a wheel is built) first, else the repository checkout's."""
    here = Path(__file__).resolve().parent
    installed = here / "_resources" / name
    return installed if installed.is_dir() else here.parent / name
