"""Dataset registry: name -> builder with declared options; builds are fingerprinted and cached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.params import Param, resolve


@dataclass(frozen=True)
class Built:
    """What a builder returns: raw arrays and provenance; the registry turns it into a Dataset."""

    x: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    kind: str
    summary: str
    source: str
    license: str
    params: tuple[Param, ...]
    build: Callable[..., Built]
    bundled: bool = True
    cached: Callable[[dict[str, Any]], bool] | None = None
    # False for sources that can change under the same options (a user's folder): build every time.
    memoise: bool = True


_REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    _REGISTRY[entry.name] = entry
    return entry


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def get_entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def resolve_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    return resolve(get_entry(name).params, options, "dataset")


_MEMO: dict[str, Dataset] = {}


def load_dataset(name: str, **options: Any) -> Dataset:
    """Build (or reuse) dataset `name` with validated options; same options give the same object."""
    entry = get_entry(name)
    opts = resolve(entry.params, options, "dataset")
    memo_key = digest(name, opts)
    if entry.memoise and memo_key in _MEMO:
        return _MEMO[memo_key]
    built = entry.build(**opts)
    x = built.x.float().contiguous()
    if not torch.isfinite(x).all() or x.numel() == 0:
        raise ValueError(f"dataset {name}: empty or non-finite data")
    ds = Dataset(
        x=x,
        name=name,
        kind=entry.kind,
        fingerprint=digest(name, opts, x),
        labels=built.labels,
        class_names=built.class_names,
        source=entry.source,
        license=entry.license,
        options=opts,
        notes=list(built.notes),
    )
    if entry.memoise:
        _MEMO[memo_key] = ds
    return ds
