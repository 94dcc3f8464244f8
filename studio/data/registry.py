"""Dataset registry: name -> builder with declared options; builds are fingerprinted and cached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from studio.cache import Recent, digest
from studio.data.dataset import Dataset
from studio.data.pixels import decode
from studio.limits import Limits
from studio.params import Param, resolve


@dataclass(frozen=True)
class Built:
    """What a builder returns: arrays and provenance. Bundled images also keep their integer `codes` (uint8,
    0..`levels`): `x` decodes them and the fingerprint hashes them, so it is the same on every machine."""

    x: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    notes: tuple[str, ...] = ()
    codes: torch.Tensor | None = None
    levels: int = 255

    @classmethod
    def from_codes(cls, codes: torch.Tensor, levels: int, channels: int, **rest: Any) -> "Built":
        """A Built whose x is `codes` decoded to `channels` channels in [-1, 1]."""
        codes = codes.to(torch.uint8).contiguous()
        return cls(x=decode(codes, levels, channels), codes=codes, levels=levels, **rest)

    def content(self) -> tuple[Any, ...]:
        """What the fingerprint hashes besides name and options: the codes if any, else the float data."""
        if self.codes is None:
            return (self.x.float().contiguous(),)
        return {"codes": list(self.codes.shape), "levels": self.levels}, self.codes.numpy().tobytes()


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


# datasets in memory, least recently used dropped beyond STUDIO_MAX_MEMO_BYTES of data (the newest always stays)
_MEMO = Recent(size=lambda ds: ds.x.nbytes, max_bytes=lambda: Limits.from_env().max_memo_bytes)


def load_dataset(name: str, **options: Any) -> Dataset:
    """Build (or reuse) dataset `name` with validated options; same options give the same object."""
    entry = get_entry(name)
    opts = resolve(entry.params, options, "dataset")
    if entry.memoise:
        return _MEMO.get_or_make(digest(name, opts), lambda: _build(name, entry, opts))
    return _build(name, entry, opts)


def _build(name: str, entry: DatasetEntry, opts: dict[str, Any]) -> Dataset:
    """Build the dataset and fingerprint it (what the memo keeps)."""
    built = entry.build(**opts)
    x = built.x.float().contiguous()
    if not torch.isfinite(x).all() or x.numel() == 0:
        raise ValueError(f"dataset {name}: empty or non-finite data")
    return Dataset(
        x=x,
        name=name,
        kind=entry.kind,
        fingerprint=digest(name, opts, *built.content()),
        labels=built.labels,
        class_names=built.class_names,
        source=entry.source,
        license=entry.license,
        options=opts,
        notes=list(built.notes),
    )
