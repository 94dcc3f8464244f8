"""The Dataset object every denoiser fits: one float32 tensor in [-1, 1] plus provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Dataset:
    """Training data for the analytic denoisers; `fingerprint` keys every cache built from it."""

    x: torch.Tensor
    name: str
    kind: str
    fingerprint: str
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    source: str = ""
    license: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("image", "points"):
            raise ValueError(f"dataset.kind: {self.kind!r} is not allowed; choose one of: image, points")
        if self.x.dtype != torch.float32:
            raise ValueError(f"dataset {self.name}: x must be float32, got {self.x.dtype}")
        if self.kind == "image" and self.x.dim() != 4:
            raise ValueError(f"dataset {self.name}: image data must be [N, C, H, W], got {tuple(self.x.shape)}")
        if self.kind == "points" and self.x.dim() != 2:
            raise ValueError(f"dataset {self.name}: point data must be [N, D], got {tuple(self.x.shape)}")

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) or (D,)."""
        return tuple(self.x.shape[1:])

    @property
    def dim(self) -> int:
        return int(torch.tensor(self.shape).prod())

    def flat(self) -> torch.Tensor:
        return self.x.reshape(self.n, -1)

    def describe(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names else ""
        return f"{self.name}: N={self.n}, shape={'x'.join(map(str, self.shape))}{classes}"
