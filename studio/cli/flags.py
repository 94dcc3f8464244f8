"""The run flags every run-like command shares (`sample`, `compare`, `calibrate`), defined once, the
KEY=VALUE parsing behind `--set` and its relatives, and the help layout every command uses (help text, the
fixed set of choices from the registries, and the default)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable

from studio.config import DEVICES, RunConfig, parse_value
from studio.params import Param

# flag -> (RunConfig path, type, help)
RUN_FLAGS: dict[str, tuple[str, type, str]] = {
    "dataset": ("dataset.name", str, "dataset name (`python -m studio datasets` describes them)"),
    "denoiser": ("denoiser.name", str, "denoiser name (`python -m studio list` gives their parameters)"),
    "sampler": ("sampler.name", str, "sampler name"),
    "steps": ("sampler.steps", int, "sampler steps"),
    "n": ("n", int, "number of samples"),
    "seed": ("seed", int, "seed of sample 0 (sample i uses seed + i)"),
    "eta": ("sampler.eta", float, "DDIM η (0 = deterministic, 1 = DDPM-like noise)"),
    "schedule": ("schedule.name", str, "noise schedule"),
    "spacing": ("sampler.spacing", str, "timestep spacing"),
    "device": ("device", str, "where to run"),
}


def choices_of(kind: str) -> list[str]:
    """The fixed set a flag picks from, read from the registries: datasets, denoisers, samplers, schedules,
    spacings or devices."""
    from studio.data.registry import dataset_names
    from studio.denoisers.registry import denoiser_names
    from studio.diffusion.samplers import SAMPLERS
    from studio.diffusion.schedules import SCHEDULES
    from studio.diffusion.spacing import SPACINGS

    sets: dict[str, Callable[[], Iterable[str]]] = {
        "dataset": dataset_names, "denoiser": denoiser_names, "sampler": lambda: SAMPLERS,
        "schedule": lambda: SCHEDULES, "spacing": lambda: SPACINGS, "device": lambda: DEVICES}
    return list(sets[kind]())


def with_choices(text: str, kind: str) -> str:
    """`text` followed by the choices of `kind` (see choices_of)."""
    return f"{text} (choices: {', '.join(choices_of(kind))})"


def param_help(param: Param, default: str | None = None) -> str:
    """Help of a flag that sets `param`: its help, choices and default (`default` replaces "auto")."""
    text = param.help
    if param.choices:
        text += f" (choices: {', '.join(map(str, param.choices))})"
    shown = default if default is not None else "auto" if param.default is None else \
        "off" if param.default is False else param.default
    return f"{text} (default: {shown})"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (when it has one and the text does not say it already) or
    "(required)"; on/off flags show "(default: off)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%") if "%(" not in (action.help or "") else action.help or ""
        if not action.option_strings or "default" in text:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or \
                action.nargs == 0 and action.default in (None, False):
            return f"{text} (default: off)"
        if action.default not in (None, argparse.SUPPRESS):
            return f"{text} (default: %(default)s)"
        return text


def _run_default(path: str) -> Any:
    """The value a RunConfig without --config has at a dotted path (e.g. sampler.eta)."""
    value: Any = RunConfig().validate().to_dict()
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def add_run_flags(p: argparse.ArgumentParser, helps: dict[str, str] | None = None, without: tuple[str, ...] = ()) -> None:
    """Add the run flags (minus `without`, whose values become None), --config and --set to a sub-command."""
    helps = helps or {}
    for flag, (path, kind, text) in RUN_FLAGS.items():
        if flag in without:
            continue
        text = helps.get(flag, text)
        if flag in ("dataset", "denoiser", "sampler", "schedule", "spacing", "device") and "choices" not in text:
            text = with_choices(text, flag)
        if "default" not in text:
            text += f" (default: the --config value, else {_run_default(path)})"
        p.add_argument(f"--{flag}", type=kind, help=text)
    p.set_defaults(**{flag: None for flag in without})
    p.add_argument("--config", help="a RunConfig YAML (flags and --set override it) (default: none, the "
                                    "RunConfig defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=helps.get("set", "dotted config path, e.g. denoiser.temperature=0.5") +
                   " (repeatable; default: none)")


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
