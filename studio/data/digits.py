"""`digits`: scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), labels 0-9."""

from __future__ import annotations

import numpy as np
import torch

from studio.data.buildcache import cached_builder
from studio.data.imageopts import image_params
from studio.data.photos import package_file
from studio.data.pixels import select_and_fit
from studio.data.registry import Built, DatasetEntry, register


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images float64 [1797, 8, 8] with values 0..16, labels) read as sklearn's load_digits reads them.

    Reading the shipped file directly skips importing sklearn.datasets, which alone takes seconds.
    """
    table = np.loadtxt(package_file("sklearn/datasets/data/digits.csv.gz"), delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _make(**opts) -> Built:
    images, labels = read_digits()
    names = [str(i) for i in range(10)]
    # Pixel values count the set bits (0..16) in 4x4 blocks of the original 32x32 bitmaps: codes with 16 levels.
    codes, levels, kept = select_and_fit(images.astype(np.uint8), 16, labels, names, opts)
    return Built.from_codes(torch.from_numpy(codes), levels, opts["channels"], labels=kept, class_names=names)


_build, _cached = cached_builder("digits", "digits-2", _make)

register(DatasetEntry(
    name="digits",
    kind="image",
    summary="1,797 handwritten digits, 8x8 gray, labels 0-9",
    source="scikit-learn load_digits: sklearn/datasets/data/digits.csv.gz, the test set of the UCI ML "
           "hand-written digits (optdigits) data, E. Alpaydin and C. Kaynak, 1998",
    license="CC BY 4.0 (UCI Machine Learning Repository)",
    params=image_params(resolution=8, channels=1, max_size=1797),
    build=_build,
    cached=_cached,
))
