"""What the first screen shows, without torch: every registered dataset, denoiser and sampler with its declared
parameters, the schedules, spacings and devices, the default run and the presets, as plain data.

The registries import torch, so the catalog is built from them once per version of the code and the presets and
kept as JSON under $STUDIO_CACHE/ui-catalog, keyed by a hash of the studio sources outside `ui/` (where every
declaration lives) and of the preset files; a new process with the same code reads that file instead. Where the
file is missing (the first start after a change), `python app.py` builds it in another process while it imports
Gradio."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from studio import __version__
from studio.cache import atomic_write, cache_root
from studio.params import Param
from studio.presets import preset_files

PACKAGE = Path(__file__).resolve().parents[1]
KINDS = {kind.__name__: kind for kind in (int, float, str, bool, list)}


@dataclass(frozen=True)
class Choice:
    """One registered dataset, denoiser or sampler: its dropdown entry and its parameters."""

    name: str
    summary: str
    params: tuple[Param, ...]
    kinds: tuple[str, ...] = ()  # a dataset's kind of data ("image" | "points"); the kinds a denoiser works on
    downloads: bool = False  # a dataset that is downloaded on first use


@dataclass(frozen=True)
class PresetEntry:
    """A preset as the page uses it: its run and the two sides of its comparison, in the RunConfig YAML shape."""

    name: str
    title: str
    description: str
    opens: str
    config: dict[str, Any]
    pair: tuple[dict[str, Any], dict[str, Any]]
    study: dict[str, Any]


@dataclass(frozen=True)
class Catalog:
    datasets: dict[str, Choice]
    denoisers: dict[str, Choice]
    samplers: dict[str, Choice]
    schedules: tuple[str, ...]
    spacings: tuple[str, ...]
    devices: tuple[str, ...]
    study_denoisers: tuple[str, ...]
    default: dict[str, Any]  # RunConfig() validated, YAML shape
    default_pair: tuple[dict[str, Any], dict[str, Any]]  # the Compare tab's sides for the default run
    presets: tuple[PresetEntry, ...]
    problems: tuple[str, ...]  # one line per preset file that does not validate

    def denoisers_for(self, kind: str) -> list[str]:
        """The denoisers that work on this kind of data."""
        return [name for name, choice in self.denoisers.items() if kind in choice.kinds]

    def dataset_title(self, name: str) -> str:
        """The dataset dropdown's text; datasets that are not bundled say that the first use downloads them."""
        choice = self.datasets[name]
        return f"{name} — {choice.summary}" + (" · ⬇ downloads on first use" if choice.downloads else "")


def fingerprint(presets_folder: str | Path | None = None) -> str:
    """A hash of the studio sources that declare what the catalog holds (all but ui/) and of the preset files."""
    h = hashlib.sha256(__version__.encode())
    ui = PACKAGE / "ui"
    sources = sorted(p for p in PACKAGE.rglob("*.py") if ui not in p.parents)
    for path in [*sources, *preset_files(presets_folder)]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def from_registries(presets_folder: str | Path | None = None) -> dict[str, Any]:
    """The catalog as JSON-able data, read from the registries and the presets (imports torch)."""
    from studio.config import DEVICES, RunConfig
    from studio.data.registry import dataset_names, get_entry
    from studio.denoisers.registry import denoiser_class, denoiser_names
    from studio.diffusion.samplers import SAMPLERS
    from studio.diffusion.schedules import SCHEDULES
    from studio.diffusion.spacing import SPACINGS
    from studio.presets import compare_pair, list_presets
    from studio.studies.study import STUDY_DENOISERS

    def choice(name: str, summary: str, params, kinds=(), downloads: bool = False) -> dict[str, Any]:
        return {"name": name, "summary": summary, "params": [param_json(p) for p in params], "kinds": list(kinds),
                "downloads": downloads}

    default = RunConfig().validate()
    presets, problems = list_presets(presets_folder)
    return {
        "datasets": [choice(n, e.summary, e.params, (e.kind,), not e.bundled and e.memoise)
                     for n, e in ((n, get_entry(n)) for n in dataset_names())],
        "denoisers": [choice(n, c.summary, c.params, c.kinds) for n, c in ((n, denoiser_class(n))
                                                                          for n in denoiser_names())],
        "samplers": [choice(n, c.summary, c.params) for n, c in SAMPLERS.items()],
        "schedules": list(SCHEDULES), "spacings": list(SPACINGS), "devices": list(DEVICES),
        "study_denoisers": list(STUDY_DENOISERS),
        "default": default.to_dict(), "default_pair": [c.to_dict() for c in compare_pair(default)],
        "presets": [{"name": p.name, "title": p.title, "description": p.description, "opens": p.opens,
                     "config": p.config.to_dict(), "study": p.study,
                     "pair": [c.to_dict() for c in compare_pair(p.config, p.compare or None)]} for p in presets],
        "problems": problems,
    }


def param_json(p: Param) -> dict[str, Any]:
    return {**asdict(p), "kind": p.kind.__name__, "choices": None if p.choices is None else list(p.choices)}


def param_of(data: dict[str, Any]) -> Param:
    choices = data["choices"]
    return Param(**{**data, "kind": KINDS[data["kind"]], "choices": None if choices is None else tuple(choices)})


def catalog_of(data: dict[str, Any]) -> Catalog:
    """The Catalog of `from_registries` data (as built, or read back from its JSON file)."""

    def choices(items: list[dict[str, Any]]) -> dict[str, Choice]:
        return {c["name"]: Choice(c["name"], c["summary"], tuple(param_of(p) for p in c["params"]),
                                  tuple(c["kinds"]), c["downloads"]) for c in items}

    return Catalog(
        datasets=choices(data["datasets"]), denoisers=choices(data["denoisers"]), samplers=choices(data["samplers"]),
        schedules=tuple(data["schedules"]), spacings=tuple(data["spacings"]), devices=tuple(data["devices"]),
        study_denoisers=tuple(data["study_denoisers"]), default=data["default"],
        default_pair=tuple(data["default_pair"]),
        presets=tuple(PresetEntry(p["name"], p["title"], p["description"], p["opens"], p["config"],
                                  tuple(p["pair"]), p["study"]) for p in data["presets"]),
        problems=tuple(data["problems"]))


_MEMO: dict[str, Catalog] = {}
_LOCK = threading.Lock()
_builder: subprocess.Popen | None = None  # a process building this code's catalog (build_elsewhere)


def cached_path(presets_folder: str | Path | None = None) -> Path:
    """Where the catalog of this code and these presets is kept."""
    return cache_root() / "ui-catalog" / f"{fingerprint(presets_folder)}.json"


def build_elsewhere() -> None:
    """When the catalog of this code (and the default presets) is not kept yet, build it in another process, where
    torch and the registries load while this one imports Gradio; `current` waits for it."""
    global _builder
    if _builder is None and not cached_path().is_file():
        path = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
        _builder = subprocess.Popen([sys.executable, "-m", "studio.ui.catalog"], env={**os.environ, "PYTHONPATH": path},
                                    stdout=subprocess.DEVNULL)


def current(presets_folder: str | Path | None = None) -> Catalog:
    """The catalog of this code and these presets: from memory, else its JSON file (once a build_elsewhere is done),
    else the registries (and then saved for the next process)."""
    key = fingerprint(presets_folder)
    with _LOCK:
        if key not in _MEMO:
            if _builder is not None:
                _builder.wait()
            path = cache_root() / "ui-catalog" / f"{key}.json"
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = json.loads(json.dumps(from_registries(presets_folder)))  # exactly what a reader gets
                atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data)))
                for old in path.parent.glob("*.json"):  # catalogs of earlier code are never read again
                    if old != path:
                        old.unlink(missing_ok=True)
            _MEMO[key] = catalog_of(data)
        return _MEMO[key]


if __name__ == "__main__":  # what build_elsewhere runs
    current()
