"""The Dataset object every denoiser fits: float32 data in [-1, 1] (or the 8-bit codes they came from) plus
provenance."""

from __future__ import annotations

from typing import Any

import torch

from studio.data.codes import ImageCodes

KEEP_FLOAT_BYTES = 1 << 30  # the decoded float view is kept beside the codes up to this size


class Dataset:
    """Training data for the analytic denoisers; `fingerprint` keys every cache built from it.

    Data from 8-bit images carry `codes` (uint8 [N, C, H, W] and their map to [-1, 1]); `x` is then their float32
    view, decoded on first use and kept only up to KEEP_FLOAT_BYTES, so ImageNet-sized data never sit in memory
    as float32 unless a caller asks for them (and the host has the room)."""

    def __init__(
        self,
        x: torch.Tensor | None = None,
        *,
        name: str,
        kind: str,
        fingerprint: str,
        codes: ImageCodes | None = None,
        labels: torch.Tensor | None = None,
        class_names: list[str] | None = None,
        source: str = "",
        license: str = "",
        options: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.name, self.kind, self.fingerprint = name, kind, fingerprint
        self.codes = codes
        self.labels, self.class_names = labels, class_names
        self.source, self.license = source, license
        self.options = {} if options is None else options
        self.notes = [] if notes is None else notes
        self._x = x
        self._check()

    def _check(self) -> None:
        if self.kind not in ("image", "points"):
            raise ValueError(f"dataset.kind: {self.kind!r} is not allowed; choose one of: image, points")
        if self._x is None and self.codes is None:
            raise ValueError(f"dataset {self.name}: give the data as x (float32) or codes (8-bit)")
        if self._x is not None and self._x.dtype != torch.float32:
            raise ValueError(f"dataset {self.name}: x must be float32, got {self._x.dtype}")
        if self.codes is not None and self.kind != "image":
            raise ValueError(f"dataset {self.name}: 8-bit codes are for image data, not {self.kind}")
        if self._x is not None and self.codes is not None and self._x.shape != self.codes.codes.shape:
            raise ValueError(f"dataset {self.name}: x {tuple(self._x.shape)} and codes "
                             f"{tuple(self.codes.codes.shape)} differ in shape")
        full = (self.n, *self.shape)
        if self.kind == "image" and len(full) != 4:
            raise ValueError(f"dataset {self.name}: image data must be [N, C, H, W], got {full}")
        if self.kind == "points" and len(full) != 2:
            raise ValueError(f"dataset {self.name}: point data must be [N, D], got {full}")

    @property
    def x(self) -> torch.Tensor:
        """float32 [N, *shape] in [-1, 1]; for 8-bit data decoded here (refused, naming the size, when it would not
        fit the host's memory) and kept only when small."""
        if self._x is not None:
            return self._x
        x = self.codes.decode(f"dataset {self.name}")
        if x.nbytes <= KEEP_FLOAT_BYTES:
            self._x = x
        return x

    @x.setter
    def x(self, value: torch.Tensor) -> None:
        """New float data replace the old (and any codes they came from)."""
        self._x, self.codes = value, None

    @property
    def nbytes(self) -> int:
        """Bytes the data hold in memory now: codes and the float view, whichever are present."""
        return sum(t.nbytes for t in (self._x, None if self.codes is None else self.codes.codes) if t is not None)

    @property
    def n(self) -> int:
        return (self.codes.codes if self._x is None else self._x).shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) or (D,)."""
        return tuple((self.codes.codes if self._x is None else self._x).shape[1:])

    @property
    def dim(self) -> int:
        return int(torch.tensor(self.shape).prod())

    def flat(self) -> torch.Tensor:
        return self.x.reshape(self.n, -1)

    def describe(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names else ""
        return f"{self.name}: N={self.n}, shape={'x'.join(map(str, self.shape))}{classes}"

    def __repr__(self) -> str:
        codes = ", 8-bit codes" if self.codes is not None else ""
        return f"Dataset({self.describe()}, fingerprint={self.fingerprint}{codes})"
