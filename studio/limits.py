"""Limits that protect a shared instance (a public Space, a classroom server), read from the environment.

Each limit has an environment variable; requests over a limit get a message with the limit's value and the
variable that raises it. Defaults are safe for a public CPU Space; a local user raises them as needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.config import RunConfig

_ENV = {
    "max_samples": ("STUDIO_MAX_SAMPLES", 64),
    "max_steps": ("STUDIO_MAX_STEPS", 1000),
    "max_dataset": ("STUDIO_MAX_DATASET", 60_000),
    "max_upload_bytes": ("STUDIO_MAX_UPLOAD_BYTES", 500_000_000),
    "max_upload_files": ("STUDIO_MAX_UPLOAD_FILES", 20_000),
    "queue_length": ("STUDIO_QUEUE_LENGTH", 32),
    "concurrency_per_device": ("STUDIO_CONCURRENCY_PER_DEVICE", 1),
}


class LimitError(ValueError):
    """A request over one of the instance's limits."""


@dataclass(frozen=True)
class Limits:
    max_samples: int
    max_steps: int
    max_dataset: int
    max_upload_bytes: int
    max_upload_files: int
    queue_length: int
    concurrency_per_device: int

    @classmethod
    def from_env(cls) -> "Limits":
        values = {}
        for f in fields(cls):
            var, default = _ENV[f.name]
            raw = os.environ.get(var, "").strip()
            if raw and (not raw.isdigit() or int(raw) < 1):
                raise LimitError(f"{var}: expected a positive whole number, got {raw!r}")
            values[f.name] = int(raw) if raw else default
        return cls(**values)

    def check(self, field: str, value: int, what: str) -> None:
        """Raise LimitError when `value` exceeds the limit called `field`."""
        limit = getattr(self, field)
        if value > limit:
            raise LimitError(f"{what}: {value:,} is over this instance's limit of {limit:,} "
                             f"(set {_ENV[field][0]} to change it)")

    def check_run(self, n: int, steps: int, dataset_size: int | None = None) -> None:
        self.check("max_samples", n, "n (number of samples)")
        self.check("max_steps", steps, "sampler.steps")
        if dataset_size is not None:
            self.check("max_dataset", dataset_size, "dataset size")

    def check_config(self, cfg: "RunConfig") -> None:
        """Everything a web request can be checked for before it is queued (the job checks the loaded size)."""
        self.check_run(cfg.n, cfg.sampler.steps, dataset_size_hint(cfg))
        if cfg.dataset.name == "folder":
            check_data_path(cfg.dataset.options.get("path", ""))


def dataset_size_hint(cfg: "RunConfig") -> int | None:
    """Training items a config asks for, known before loading: its `size` option, else the full bundled set
    (the option's upper bound); None when only loading can tell (Hub datasets, folders)."""
    from studio.data.registry import get_entry, resolve_options

    size = resolve_options(cfg.dataset.name, cfg.dataset.options).get("size")
    if size is not None:
        return int(size)
    declared = next((p for p in get_entry(cfg.dataset.name).params if p.name == "size"), None)
    return None if declared is None or declared.high is None else int(declared.high)


DATA_ROOTS_ENV = "STUDIO_DATA_ROOTS"


def data_roots() -> list[Path] | None:
    """Server folders a web request may read a folder dataset from ($STUDIO_DATA_ROOTS, os.pathsep-separated);
    None = anywhere (a local studio); on a Space (SPACE_ID set) the default is none at all."""
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is None:
        return [] if os.environ.get("SPACE_ID") else None
    return [Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip()]


def check_data_path(path: str) -> None:
    """Refuse a folder dataset path outside the allowed roots: visitors of a shared instance must not read
    the server's files."""
    roots = data_roots()
    if roots is None:
        return
    target = Path(str(path)).expanduser().resolve()
    if not any(target.is_relative_to(root) for root in roots):
        where = f"only from {', '.join(map(str, roots))}" if roots else "from no server folder"
        raise LimitError(f"dataset.path: this instance reads folder datasets {where} "
                         f"(set {DATA_ROOTS_ENV} to change it)")
