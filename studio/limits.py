"""Limits that protect a shared instance (a public Space, a classroom server), read from the environment.
The checks a request passes before any work (the policy gate) live in studio.serving.policy.

Each limit has an environment variable; requests over a limit get a message with the limit's value and the
variable that raises it. Defaults are safe for a public CPU Space; a local user raises them as needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

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
