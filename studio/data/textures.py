"""`textures`: patches of scikit-image's brick, grass and gravel images, labelled by texture.

Stationary images: one scale and horizontal flips keep each class's statistics those of its photo.
"""

from __future__ import annotations

from studio.data.buildcache import cached_builder
from studio.data.patches import build_patch_set, patch_params
from studio.data.photos import provenance
from studio.data.registry import Built, DatasetEntry, register

TEXTURES = ("brick", "grass", "gravel")


def _make(resolution: int, channels: int, size: int, seed: int, classes: list) -> Built:
    return build_patch_set(TEXTURES, resolution, channels, size, seed, classes, scales=(1.0,))


_build, _cached = cached_builder("textures", "textures-2", _make)
_source, _license = provenance(
    list(TEXTURES), "seeded random patches of scikit-image's texture images, one scale, horizontal flips")

register(DatasetEntry(
    name="textures",
    kind="image",
    summary="patches of brick, grass and gravel (default 6,000 of 16x16 gray), labelled by texture",
    source=_source,
    license=_license,
    params=patch_params(resolution=16, channels=1, size=6_000, max_size=60_000),
    build=_build,
    cached=_cached,
))
