"""Dataset registry: name -> builder with declared options; builds are fingerprinted and cached."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import torch

from studio.cache import Recent, digest
from studio.data.dataset import Dataset
from studio.data.codes import ImageCodes
from studio.data.pixels import code_table, decode
from studio.limits import Limits
from studio.params import Param, resolve


@dataclass(frozen=True)
class Built:
    """What a builder returns: arrays and provenance. Builds from 8-bit images keep their integer `codes` (uint8
    [N, 1 or 3, H, W], 0..`levels`) instead of float data: the fingerprint hashes them, so it is the same on every
    machine, and the Dataset keeps them as codes where its channels allow (RGB reduced to gray is not 8-bit)."""

    x: torch.Tensor | None = None  # float data [N, ...] of builds without codes
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    notes: tuple[str, ...] = ()
    codes: torch.Tensor | None = None
    levels: int = 255
    channels: int | None = None  # the dataset's channels (codes may have 1 or 3)
    table: torch.Tensor | None = None  # float32 [256] value of each code; None: pixels.code_table(levels)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, levels: int, channels: int, **rest: Any) -> "Built":
        """A Built of `codes` that decode to `channels` channels in [-1, 1]."""
        return cls(codes=codes.to(torch.uint8).contiguous(), levels=levels, channels=channels, **rest)

    @property
    def n(self) -> int:
        return len(self.x if self.codes is None else self.codes)

    def images(self) -> ImageCodes | None:
        """The data as 8-bit codes in the dataset's channels (gray repeated to RGB), or None when they are not
        8-bit: float builds, and RGB codes reduced to gray (their luma takes 255,001 values)."""
        if self.codes is None or (self.codes.shape[1] == 3 and self.channels == 1):
            return None
        codes = self.codes.expand(-1, self.channels, -1, -1) if self.codes.shape[1] == 1 else self.codes
        return ImageCodes(codes, self.levels, code_table(self.levels) if self.table is None else self.table)

    def floats(self) -> torch.Tensor:
        """The float data [N, ...]: as built, or decoded from the codes (pixels.decode reduces RGB codes to gray)."""
        if self.codes is None:
            return self.x
        images = self.images()
        return decode(self.codes, self.levels, self.channels) if images is None else images.decode("dataset")

    def take(self, index: torch.Tensor) -> "Built":
        """The items at `index` (labels with them)."""
        labels = None if self.labels is None else self.labels[index]
        if self.codes is None:
            return replace(self, x=self.x[index], labels=labels)
        return replace(self, codes=self.codes[index], labels=labels)

    def content(self) -> tuple[Any, ...]:
        """What the fingerprint hashes besides name and options: the codes (and a table not of the levels) if any,
        else the float data."""
        if self.codes is None:
            return (self.x.float().contiguous(),)
        table = () if self.table is None else (self.table,)
        codes = memoryview(self.codes.contiguous().numpy().reshape(-1))  # hashed in place: no copy of the data
        return {"codes": list(self.codes.shape), "levels": self.levels}, codes, *table


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
_MEMO = Recent(size=lambda ds: ds.nbytes, max_bytes=lambda: Limits.from_env().max_memo_bytes)


def load_dataset(name: str, **options: Any) -> Dataset:
    """Build (or reuse) dataset `name` with validated options; same options give the same object."""
    entry = get_entry(name)
    opts = resolve(entry.params, options, "dataset")
    if entry.memoise:
        return _MEMO.get_or_make(digest(name, opts), lambda: _build(name, entry, opts))
    return _build(name, entry, opts)


def _build(name: str, entry: DatasetEntry, opts: dict[str, Any]) -> Dataset:
    """Build the dataset and fingerprint it (what the memo keeps); 8-bit data stay codes."""
    built = entry.build(**opts)
    codes = built.images()
    x = None if codes is not None else built.floats().float().contiguous()
    empty = (codes.codes if x is None else x).numel() == 0
    if empty or (x is not None and not torch.isfinite(x).all()):
        raise ValueError(f"dataset {name}: empty or non-finite data")
    return Dataset(
        x=x,
        codes=codes,
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
