"""Declared parameters: one description feeds validation, the CLI, YAML and the UI controls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class Param:
    """A typed, bounded option of a dataset, denoiser or sampler; `default=None` means "auto"."""

    name: str
    kind: type
    default: Any
    help: str = ""
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    optional: bool = False

    def describe(self) -> str:
        if self.choices:
            allowed = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.low is not None or self.high is not None:
            allowed = f"{self.kind.__name__} in [{_fmt(self.low, '-inf')}, {_fmt(self.high, 'inf')}]"
        else:
            allowed = self.kind.__name__
        default = "auto" if self.default is None else self.default
        return f"{self.name}={default} ({allowed})"

    def coerce(self, value: Any, owner: str) -> Any:
        """Return `value` as this parameter's type, or raise ValueError naming `owner.name`."""
        field = f"{owner}.{self.name}" if owner else self.name
        is_auto = isinstance(value, str) and value.strip().lower() in {"auto", "none", "null"}
        if value is None or (is_auto and not (self.choices and value in self.choices)):
            if self.default is None or self.optional:
                return None
            raise ValueError(f"{field}: a value is required ({self.describe()})")
        try:
            out = _convert(self.kind, value)
        except (TypeError, ValueError):
            raise ValueError(f"{field}: expected {self.kind.__name__}, got {value!r} ({self.describe()})") from None
        if self.choices is not None and out not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"{field}: {value!r} is not allowed; choose one of: {allowed}")
        if self.low is not None and out < self.low or self.high is not None and out > self.high:
            raise ValueError(f"{field}: {value!r} is out of range [{_fmt(self.low, '-inf')}, {_fmt(self.high, 'inf')}]")
        return out


def _fmt(v: float | None, unbounded: str) -> str:
    return unbounded if v is None else f"{v:g}"


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if isinstance(value, str):
            value = float(value) if any(c in value for c in ".eE") and not value.strip().lstrip("-").isdigit() else value
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        out = float(value)
        if out != out:
            raise ValueError(value)
        return out
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError(value)
        return str(value)
    if kind is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise TypeError(value)
    return kind(value)


def resolve(params: Sequence[Param], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate `given` against `params`, filling defaults; unknown keys are an error naming the allowed ones."""
    known = {p.name: p for p in params}
    unknown = [k for k in given if k not in known]
    if unknown:
        allowed = ", ".join(known) or "(none)"
        raise ValueError(f"{owner}.{unknown[0]}: unknown parameter; allowed: {allowed}")
    return {p.name: p.coerce(given[p.name], owner) if p.name in given else p.default for p in params}
