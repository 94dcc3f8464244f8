"""Limits that protect a shared instance (a public Space, a classroom server), read from the environment.
The checks a request passes before any work (the policy gate) live in studio.serving.policy.

Each limit has an environment variable; requests over a limit get a message with the limit's value and the
variable that raises it. Defaults are safe for a public CPU Space; a local user raises them as needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

_ENV = {
    "max_samples": ("STUDIO_MAX_SAMPLES", 64),
    "max_steps": ("STUDIO_MAX_STEPS", 1000),
    "max_dataset": ("STUDIO_MAX_DATASET", 60_000),
    "max_upload_bytes": ("STUDIO_MAX_UPLOAD_BYTES", 500_000_000),
    "max_upload_files": ("STUDIO_MAX_UPLOAD_FILES", 20_000),
    "queue_length": ("STUDIO_QUEUE_LENGTH", 32),
    "concurrency_per_device": ("STUDIO_CONCURRENCY_PER_DEVICE", 1),
    "max_yaml_bytes": ("STUDIO_MAX_YAML_BYTES", 65_536),
    "max_image_pixels": ("STUDIO_MAX_IMAGE_PIXELS", 16_000_000),
    "max_job_gib": ("STUDIO_MAX_JOB_GIB", 4),
    "max_job_seconds": ("STUDIO_MAX_JOB_SECONDS", 600),
    "max_memo_bytes": ("STUDIO_MAX_MEMO_BYTES", 2_000_000_000),
    "max_cache_bytes": ("STUDIO_MAX_CACHE_BYTES", 20_000_000_000),
}
MAX_YAML_DEPTH = 20  # nested mappings/lists in a config, preset or patch schedule


def shared_instance() -> bool:
    """Whether strangers use this server: a Hugging Face Space (SPACE_ID set)."""
    return bool(os.environ.get("SPACE_ID"))


def space_oauth() -> bool:
    """Whether Hugging Face OAuth really runs here (on a Space with `hf_oauth: true`); elsewhere Gradio mocks the
    sign-in with the server's own saved token, which a visitor must never get."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


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
    max_yaml_bytes: int
    max_image_pixels: int
    max_job_gib: int
    max_job_seconds: int
    max_memo_bytes: int
    max_cache_bytes: int

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


def safe_yaml(text: str | bytes, what: str) -> Any:
    """Parse YAML only after checking its size, nesting and aliases (an alias bomb expands exponentially);
    ValueError naming `what` (and the limit's variable) on refusal or a syntax error, always one line."""
    if not isinstance(text, (str, bytes)):
        raise ValueError(f"{what}: expected YAML text, got {type(text).__name__}")
    limits = Limits.from_env()
    limits.check("max_yaml_bytes", len(text.encode() if isinstance(text, str) else text), f"{what} (YAML bytes)")
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise LimitError(f"{what}: YAML anchors and aliases (&, *) are not accepted; write the values out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise LimitError(f"{what}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{what}: not valid YAML ({_yaml_problem(err)})") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one short phrase with its line and column."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{getattr(err, 'problem', None) or str(err).splitlines()[0]}"
