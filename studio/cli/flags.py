"""The run flags every run-like command shares (`sample`, `compare`, `calibrate`), defined once, and the
KEY=VALUE parsing behind `--set` and its relatives."""

from __future__ import annotations

import argparse
from typing import Any

from studio.config import RunConfig, parse_value

# flag -> (RunConfig path, type, help)
RUN_FLAGS: dict[str, tuple[str, type, str]] = {
    "dataset": ("dataset.name", str, "dataset name (`python -m studio list`)"),
    "denoiser": ("denoiser.name", str, "denoiser name"),
    "sampler": ("sampler.name", str, "sampler name"),
    "steps": ("sampler.steps", int, "sampler steps"),
    "n": ("n", int, "number of samples"),
    "seed": ("seed", int, "seed of sample 0 (sample i uses seed + i)"),
    "eta": ("sampler.eta", float, "DDIM η"),
    "schedule": ("schedule.name", str, "noise schedule"),
    "spacing": ("sampler.spacing", str, "timestep spacing: trailing, leading or linspace"),
    "device": ("device", str, "auto, cpu or cuda"),
}


def add_run_flags(p: argparse.ArgumentParser, helps: dict[str, str] | None = None, without: tuple[str, ...] = ()) -> None:
    """Add the run flags (minus `without`, whose values become None), --config and --set to a sub-command."""
    helps = helps or {}
    for flag, (_, kind, text) in RUN_FLAGS.items():
        if flag not in without:
            p.add_argument(f"--{flag}", type=kind, help=helps.get(flag, text))
    p.set_defaults(**{flag: None for flag in without})
    p.add_argument("--config", help="a RunConfig YAML (flags and --set override it)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=helps.get("set", "dotted config path, e.g. denoiser.temperature=0.5"))


def parse_pairs(items: list[str] | None, flag: str) -> list[tuple[str, Any]]:
    """KEY=VALUE items of a repeatable flag, values parsed as YAML scalars."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag}: expected key=value, got {item!r}")
        out.append((key.strip(), parse_value(value)))
    return out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """--config first, then the explicit flags, then every --set, validated once at the end."""
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    for flag, (path, _, _) in RUN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            cfg.set(path, value)
    for key, value in parse_pairs(args.set, "--set"):
        cfg.set(key, value)
    return cfg.validate()
