"""RunConfig: everything that determines a run, as one validated dataclass with YAML in and out.

YAML shape (a section's own parameters sit directly in it):
    dataset:  {name: digits, size: 16}
    denoiser: {name: optimal, temperature: 1.0}
    schedule: {name: linear, T: 1000, beta_start: 0.0001, beta_end: 0.02}
    sampler:  {name: ddim, steps: 50, spacing: trailing, clip_x0: false, eta: 0.0}
    n: 16
    seed: 0
    device: auto
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from studio.data.registry import get_entry
from studio.denoisers.registry import denoiser_class
from studio.diffusion.samplers import sampler_class
from studio.diffusion.schedules import SCHEDULES
from studio.diffusion.spacing import SPACINGS
from studio.limits import LimitError, Limits, safe_yaml
from studio.params import Param, resolve

MAX_SAMPLES = 100_000
DEVICES = ("auto", "cpu", "cuda")
# Top-level keys a preset YAML may carry beside the run (studio.presets reads them); a run ignores them.
PRESET_KEYS = ("title", "description", "compare", "claim", "opens", "study")


@dataclass
class DatasetConfig:
    name: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DenoiserConfig:
    name: str = "optimal"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    name: str = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


@dataclass
class SamplerConfig:
    name: str = "ddim"
    steps: int = 50
    spacing: str = "trailing"
    clip_x0: bool = False
    params: dict[str, Any] = field(default_factory=dict)


_SCHEDULE_PARAMS = (
    Param("name", str, "linear", "noise schedule", choices=SCHEDULES),
    Param("T", int, 1000, "training timesteps", low=2, high=100_000),
    Param("beta_start", float, 1e-4, "β_0", low=1e-8, high=0.5),
    Param("beta_end", float, 0.02, "β_{T-1}", low=1e-8, high=0.999),
)
_SAMPLER_FIELDS = (
    Param("steps", int, 50, "denoiser steps K", low=1),
    Param("spacing", str, "trailing", "timestep spacing", choices=SPACINGS),
    Param("clip_x0", bool, False, "clip x̂0 to [-1, 1] at every step"),
)
_TOP_PARAMS = (
    Param("n", int, 16, "number of samples", low=1, high=MAX_SAMPLES),
    Param("seed", int, 0, "noise seed (sample i uses seed + i)", low=0, high=2**62),
    Param("device", str, "auto", "where to run", choices=DEVICES),
    Param("batch_size", int, None, "samples per denoiser call (auto = all)", low=1, optional=True),
)


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    n: int = 16
    seed: int = 0
    device: str = "auto"
    batch_size: int | None = None

    def validate(self) -> "RunConfig":
        """A checked copy with every default filled (this object is left as it is); ValueError names the field."""
        return copy.deepcopy(self)._validate_in_place()

    def _validate_in_place(self) -> "RunConfig":
        entry = get_entry(self.dataset.name)
        self.dataset.options = resolve(entry.params, self.dataset.options, "dataset")
        denoiser_cls = denoiser_class(self.denoiser.name)
        if entry.kind not in denoiser_cls.kinds:
            raise ValueError(
                f"denoiser.name: {denoiser_cls.name} works on {' or '.join(denoiser_cls.kinds)} data; dataset {entry.name} is {entry.kind}"
            )
        self.denoiser.params = resolve(denoiser_cls.params, self.denoiser.params, "denoiser")
        sched = resolve(_SCHEDULE_PARAMS, vars(self.schedule), "schedule")
        if sched["beta_end"] < sched["beta_start"]:
            raise ValueError("schedule.beta_end: must be >= schedule.beta_start")
        self.schedule = ScheduleConfig(**sched)
        fields_ = (replace(_SAMPLER_FIELDS[0], high=self.schedule.T), *_SAMPLER_FIELDS[1:])
        samp = resolve(fields_, {k: getattr(self.sampler, k) for k in ("steps", "spacing", "clip_x0")}, "sampler")
        params = resolve(sampler_class(self.sampler.name).params, self.sampler.params, "sampler")
        self.sampler = SamplerConfig(self.sampler.name, params=params, **samp)
        top = resolve(_TOP_PARAMS, {p.name: getattr(self, p.name) for p in _TOP_PARAMS}, "")
        for key, value in top.items():
            setattr(self, key, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": {"name": self.dataset.name, **self.dataset.options},
            "denoiser": {"name": self.denoiser.name, **self.denoiser.params},
            "schedule": dict(vars(self.schedule)),
            "sampler": {
                "name": self.sampler.name, "steps": self.sampler.steps, "spacing": self.sampler.spacing,
                "clip_x0": self.sampler.clip_x0, **self.sampler.params,
            },
            "n": self.n, "seed": self.seed, "device": self.device, "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build and validate from the YAML shape; unknown top-level keys are an error."""
        data = copy.deepcopy(data or {})
        if not isinstance(data, dict):
            raise ValueError("config: expected a mapping at the top level")
        for key in PRESET_KEYS:
            data.pop(key, None)
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown config key; allowed: {', '.join(sorted(known))}")
        cfg = cls()
        for section in ("dataset", "denoiser", "sampler", "schedule"):
            body = data.pop(section, None) or {}
            if not isinstance(body, dict):
                raise ValueError(f"{section}: expected a mapping, got {body!r}")
            for key, value in sorted(body.items(), key=lambda item: item[0] != "name"):  # name first
                cfg.set(f"{section}.{key}", value)
        for key, value in data.items():
            cfg.set(key, value)
        return cfg.validate()

    def set(self, path: str, value: Any) -> None:
        """Assign a dotted path (e.g. `denoiser.temperature`); validation happens in validate()."""
        head, _, rest = path.partition(".")
        if not rest:
            if head not in {p.name for p in _TOP_PARAMS}:
                raise ValueError(f"{path}: unknown config key; allowed: dataset.*, denoiser.*, schedule.*, "
                                 f"sampler.*, {', '.join(p.name for p in _TOP_PARAMS)}")
            setattr(self, head, value)
            return
        if "." in rest:
            raise ValueError(f"{path}: config paths have at most two parts (section.key)")
        if rest == "name" and head in ("dataset", "denoiser", "sampler"):
            self._rename(head, str(value))
        elif head == "dataset":
            self.dataset.options[rest] = value
        elif head == "denoiser":
            self.denoiser.params[rest] = value
        elif head == "schedule":
            if rest not in vars(self.schedule):
                raise ValueError(f"{path}: unknown key; allowed: {', '.join(vars(self.schedule))}")
            setattr(self.schedule, rest, value)
        elif head == "sampler":
            if rest in ("steps", "spacing", "clip_x0"):
                setattr(self.sampler, rest, value)
            else:
                self.sampler.params[rest] = value
        else:
            raise ValueError(f"{path}: unknown section {head!r}; choose one of: dataset, denoiser, schedule, sampler")

    def _rename(self, section: str, name: str) -> None:
        """Choose another dataset, denoiser or sampler: the old one's options no longer apply, so they go."""
        part = getattr(self, section)
        if part.name != name:
            part.name = name
            (part.options if section == "dataset" else part.params).clear()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, what: str = "config") -> "RunConfig":
        """Parse (size, nesting and aliases checked first: studio.limits.safe_yaml) and validate."""
        return cls.from_dict(safe_yaml(text, what) or {})

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config: no such file {path}")
        Limits.from_env().check("max_yaml_bytes", path.stat().st_size, "--config (YAML bytes)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--config: cannot read {path} ({type(err).__name__})") from None
        return cls.from_yaml(text, "--config")


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalars/lists (0.5, true, [0, 1]) or the plain string (limits still apply)."""
    try:
        return safe_yaml(text, "--set")
    except LimitError:
        raise
    except ValueError:
        return text
