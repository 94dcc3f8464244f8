"""Disk cache of built datasets: a rebuild costs one safetensors read, keyed by every build input."""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

import torch

from studio.cache import cached_tensors, digest, is_cached
from studio.data.registry import Built

# The packages whose shipped files and code decide the pixels of the bundled datasets.
_SOURCE_PACKAGES = ("scikit-image", "scikit-learn", "numpy", "pillow", "torch")


@functools.lru_cache(maxsize=1)
def source_versions() -> dict[str, str]:
    """Installed versions of the source packages: a new release may ship different files, so it rebuilds."""
    out = {}
    for name in _SOURCE_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def cached_built(namespace: str, key: str, make: Callable[[], Built]) -> Built:
    """Return the Built stored under (namespace, key), making and storing it on a miss."""
    tensors = cached_tensors(namespace, key, lambda: _pack(make()), in_background=True)
    meta = json.loads(tensors["meta"].numpy().tobytes().decode())
    rest = {"labels": tensors.get("labels"), "class_names": meta["class_names"], "notes": tuple(meta["notes"])}
    if "codes" in tensors:
        return Built.from_codes(tensors["codes"], meta["levels"], meta["channels"], table=tensors.get("table"), **rest)
    return Built(x=tensors["x"], **rest)


def cached_builder(
    namespace: str, version_tag: str, make: Callable[..., Built]
) -> tuple[Callable[..., Built], Callable[[dict[str, Any]], bool]]:
    """A registry `build` that caches `make(**options)` and the matching `cached(options)` probe.

    The key is a digest of `version_tag` (bump it when the build code changes), the source
    package versions and all resolved options.
    """
    def key(options: dict[str, Any]) -> str:
        return digest(namespace, version_tag, source_versions(), options)

    def build(**options: Any) -> Built:
        return cached_built(f"datasets/{namespace}", key(options), lambda: make(**options))

    def cached(options: dict[str, Any]) -> bool:
        return is_cached(f"datasets/{namespace}", key(options))

    return build, cached


def _pack(built: Built) -> dict[str, torch.Tensor]:
    """Integer codes when the build has them (a quarter of float32, or less), else the float data."""
    meta = {"class_names": built.class_names, "notes": list(built.notes)}
    if built.codes is not None:
        meta.update(levels=built.levels, channels=built.channels)
        out = {"codes": built.codes.contiguous()}
        if built.table is not None:
            out["table"] = built.table
    else:
        out = {"x": built.x.float().contiguous()}
    out["meta"] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    if built.labels is not None:
        out["labels"] = built.labels.long().contiguous()
    return out
