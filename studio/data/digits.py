"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), labels 0-9."""

from __future__ import annotations

import torch

from studio.data.registry import Built, DatasetEntry, register
from studio.params import Param


def _build(size: int | None, classes: list) -> Built:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0 * 2 - 1
    y = torch.from_numpy(d.target).long()
    if classes:
        keep = torch.isin(y, torch.tensor([int(c) for c in classes]))
        x, y = x[keep], y[keep]
    if size is not None:
        x, y = x[:size], y[:size]
    return Built(x=x, labels=y, class_names=[str(i) for i in range(10)])


register(DatasetEntry(
    name="digits",
    kind="image",
    summary="1,797 handwritten digits, 8x8 gray, labels 0-9",
    source="scikit-learn load_digits (UCI ML hand-written digits, optdigits test set)",
    license="CC BY 4.0 (UCI Machine Learning Repository)",
    params=(
        Param("size", int, None, "keep the first N images (auto = all)", low=1, high=1797),
        Param("classes", list, [], "keep only these labels, e.g. 0,1,7"),
    ),
    build=_build,
))
