"""Presets: RunConfig YAML files in presets/ with an optional title, description and a `compare` pair.

A preset file is a plain RunConfig (so `python -m studio sample --config presets/X.yaml` runs it) plus:
    title: "DDPM vs DDIM on digits"            shown in the dropdown
    description: "..."                          shown under it
    compare: {a: {...}, b: {...}}               overrides of the run for the two sides of the Compare tab
    claim: {memorised_at_least: 0.9, ...}       what the run shows, checked by tests/test_preset_claims.py
    opens: neighbours                           the tab where the point is seen (sample, neighbours, locality,
                                                compare); choosing the preset runs it and opens that tab
    study: {denoisers: [...], reference: unet, repeats: 1}
                                                a study instead of one run (studio.studies.study): claims then
                                                name a denoiser (or `reference`), e.g. optimal_memorised_at_least
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from studio import resource_dir

if TYPE_CHECKING:  # the config and the registries import torch: imported where a preset is parsed
    from studio.config import RunConfig

SAMPLER_FIELDS = ("steps", "spacing", "clip_x0")  # sampler keys that survive a change of sampler
DEFAULT_PAIR = {"a": {"sampler": {"name": "ddpm"}}, "b": {"sampler": {"name": "ddim", "eta": 0.0}}}
TABS = ("sample", "neighbours", "locality", "compare", "forward")
# what a run shows: share of samples flagged memorised, per-image variance of the samples over that of the data,
# RMS distance of the samples to their nearest training item; a_/b_ for one side of a comparison, and how far
# the two sides' final samples are apart (RMS)
RUN_CLAIMS = ("memorised_at_least", "memorised_at_most", "variance_ratio_at_least", "nn_rms_at_least",
              "nn_rms_at_most")
CLAIMS = (*RUN_CLAIMS, *(f"{side}_{c}" for side in "ab" for c in RUN_CLAIMS), "sides_differ_at_least",
          "sides_agree_within")
# what a study shows per denoiser (and for its reference): share memorised, centred and median final r²
STUDY_QUANTITIES = ("memorised", "r2_centred", "r2_median")
MAX_STUDY_REPEATS = 5


def study_claims(study: dict[str, Any]) -> tuple[str, ...]:
    """The claim names a study preset may use: <denoiser or reference>_<quantity>_at_least / _at_most."""
    return tuple(f"{who}_{q}_at_{bound}" for who in [*study["denoisers"], "reference"]
                 for q in STUDY_QUANTITIES for bound in ("least", "most"))


def parse_study(raw: Any, name: str) -> dict[str, Any]:
    """A preset's `study:` section with defaults filled; ValueError naming the field."""
    if not isinstance(raw, dict) or set(raw) - {"denoisers", "reference", "repeats"}:
        raise ValueError(f"preset {name}: study: expected a mapping of denoisers, reference and repeats")
    from studio.denoisers.registry import denoiser_names

    names = set(denoiser_names())
    denoisers = raw.get("denoisers") or []
    reference = str(raw.get("reference", "unet"))
    repeats = raw.get("repeats", 1)
    if not isinstance(denoisers, list) or not denoisers or set(map(str, denoisers)) - names or reference not in names:
        raise ValueError(f"preset {name}: study: denoisers and reference must name denoisers ({', '.join(sorted(names))})")
    if not isinstance(repeats, int) or not 1 <= repeats <= MAX_STUDY_REPEATS:
        raise ValueError(f"preset {name}: study.repeats: expected a whole number from 1 to {MAX_STUDY_REPEATS}")
    return {"denoisers": [str(d) for d in denoisers], "reference": reference, "repeats": repeats}


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    config: RunConfig
    compare: dict[str, dict[str, Any]]
    claim: dict[str, float] = field(default_factory=dict)
    opens: str = "sample"
    study: dict[str, Any] = field(default_factory=dict)


def presets_dir() -> Path:
    """$STUDIO_PRESETS, or the presets/ folder shipped with the package (the repository's in a checkout)."""
    return Path(os.environ.get("STUDIO_PRESETS", resource_dir("presets")))


def override(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """A copy of `cfg` with `changes` (RunConfig YAML shape) applied; a new dataset, denoiser or sampler
    name drops the old one's own parameters, since they belong to it."""
    from studio.config import RunConfig

    base = cfg.to_dict()
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            section = base[key]
            if "name" in value and value["name"] != section.get("name"):
                keep = SAMPLER_FIELDS if key == "sampler" else ()
                section = {k: v for k, v in section.items() if k in keep}
            base[key] = {**section, **value}
        else:
            base[key] = value
    return RunConfig.from_dict(base)


def compare_pair(cfg: RunConfig, compare: dict[str, dict[str, Any]] | None = None) -> tuple[RunConfig, RunConfig]:
    """The two configs of a comparison: `cfg` with side a's and side b's overrides (DDPM vs DDIM by default)."""
    pair = compare or DEFAULT_PAIR
    return override(cfg, pair.get("a", {})), override(cfg, pair.get("b", {}))


def parse_preset(text: str, name: str) -> Preset:
    """A Preset from YAML text; ValueError naming the preset and the field when anything is wrong."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"preset {name}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"preset {name}: expected a mapping at the top level")
    meta = {k: data.get(k) for k in ("title", "description", "compare", "claim", "opens", "study")}
    study = parse_study(meta["study"], name) if meta["study"] is not None else {}
    allowed = study_claims(study) if study else CLAIMS
    claim = meta["claim"] or {}
    if not isinstance(claim, dict) or set(claim) - set(allowed) or not all(
            isinstance(v, (int, float)) for v in claim.values()):
        raise ValueError(f"preset {name}: claim: expected numbers under {', '.join(allowed)}")
    opens = str(meta["opens"] or ("compare" if meta["compare"] or study else "sample"))
    if opens not in TABS:
        raise ValueError(f"preset {name}: opens: expected one of {', '.join(TABS)}, got {opens!r}")
    compare = meta["compare"] or {}
    if not isinstance(compare, dict) or set(compare) - {"a", "b"} or not all(
            isinstance(v, dict) for v in compare.values()):
        raise ValueError(f"preset {name}: compare: expected a mapping with sides a and b of config overrides")
    from studio.config import RunConfig

    try:
        cfg = RunConfig.from_dict(data)
        compare_pair(cfg, compare or None)
    except ValueError as err:
        raise ValueError(f"preset {name}: {err}") from None
    title = str(meta["title"] or name.replace("_", " "))
    return Preset(name, title, str(meta["description"] or "").strip(), cfg, copy.deepcopy(compare),
                  {k: float(v) for k, v in claim.items()}, opens, study)


def load_preset(path: str | Path) -> Preset:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"preset: no such file {path}")
    return parse_preset(path.read_text(), path.stem)


def preset_files(folder: str | Path | None = None) -> list[Path]:
    folder = Path(folder) if folder else presets_dir()
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def list_presets(folder: str | Path | None = None) -> tuple[list[Preset], list[str]]:
    """Every preset that validates, and one message per file that does not (the app shows them)."""
    good, bad = [], []
    for path in preset_files(folder):
        try:
            good.append(load_preset(path))
        except ValueError as err:
            bad.append(str(err))
    return good, bad
