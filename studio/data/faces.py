"""`faces` and `nonfaces`: the two halves of scikit-image's `lfw_subset` (25x25 gray crops)."""

from __future__ import annotations

import numpy as np

from studio.data.buildcache import cached_builder
from studio.data.imageopts import image_params
from studio.data.photos import package_file
from studio.data.pixels import from_unit, select_and_fit
from studio.data.registry import Built, DatasetEntry, register

_SOURCE = (
    "scikit-image skimage/data/lfw_subset.npy ({half}): 100 {what} 25x25 gray crops from Labeled Faces in the "
    "Wild (Huang et al., http://vis-www.cs.umass.edu/lfw/); faces are random LFW faces, non-faces are "
    "background crops of the same photos"
)
_LICENSE = (
    "not stated by scikit-image or LFW; LFW holds news photos of public figures collected from the web "
    "(cite Huang, Ramesh, Berg, Learned-Miller, UMass TR 07-49, 2007, and Huang, Mattar, Lee, Learned-Miller, "
    "NIPS 2012)"
)


def _lfw_half(first: bool) -> np.ndarray:
    """float64 [100, 25, 25] in [0, 1]: rows 0-99 of the file are faces, rows 100-199 non-faces."""
    images = np.load(package_file("skimage/data/lfw_subset.npy"), allow_pickle=False)
    return images[:100] if first else images[100:]


def _entry(name: str, first: bool, what: str) -> DatasetEntry:
    def make(**opts) -> Built:
        # The file holds floats (not 8-bit codes): crop and resize in fixed-order float64, then round to float32.
        planes, _, _ = select_and_fit(_lfw_half(first), None, None, None, opts)
        return Built(x=from_unit(planes).expand(-1, opts["channels"], -1, -1).contiguous())

    build, cached = cached_builder(name, f"{name}-2", make)
    return DatasetEntry(
        name=name,
        kind="image",
        summary=f"100 {what} crops from LFW, 25x25 gray",
        source=_SOURCE.format(half="rows 0-99" if first else "rows 100-199", what=what),
        license=_LICENSE,
        params=image_params(resolution=25, channels=1, max_size=100, labelled=False),
        build=build,
        cached=cached,
    )


register(_entry("faces", True, "face"))
register(_entry("nonfaces", False, "non-face"))
