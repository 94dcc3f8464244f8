"""The denoiser contract: fit(dataset) once, then denoise(x_t, t, ā) -> Denoised at every step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

from studio.data.dataset import Dataset
from studio.params import Param, resolve


@dataclass
class Denoised:
    """x0 has x_t's shape; `extras` are per-sample tensors (leading dim = batch) for the UI,
    `shared` holds step-level facts that do not depend on the sample (masks, patch size)."""

    x0: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


class Denoiser:
    """Base class: declares its parameters once; subclasses implement `_fit` and `denoise`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ("image", "points")
    setup_s: float = 0.0  # seconds spent preparing noise levels met for the first time (masks, plans); grows

    def __init__(self, device: str | torch.device = "cpu", **params: Any) -> None:
        self.device = torch.device(device)
        self.p: dict[str, Any] = resolve(self.params, params, "denoiser")
        self.dataset: Dataset | None = None

    def fit(self, dataset: Dataset) -> "Denoiser":
        """Precompute statistics for `dataset` (cached where costly); calling it again is a no-op."""
        if dataset.kind not in self.kinds:
            raise ValueError(
                f"denoiser.name: {self.name} works on {' or '.join(self.kinds)} data, "
                f"but dataset {dataset.name} is {dataset.kind} data"
            )
        if self.dataset is not None and self.dataset.fingerprint == dataset.fingerprint:
            return self
        self._fit(dataset)
        self.dataset = dataset
        return self

    def _fit(self, dataset: Dataset) -> None:
        raise NotImplementedError

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        raise NotImplementedError

    def prepare(self, alpha_bars: Sequence[float]) -> None:
        """A run is about to visit these noise levels, in order: a denoiser with per-level setup may prepare the
        next levels while the current one runs (the default has nothing to prepare)."""

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.p}

    def _check_fitted(self) -> Dataset:
        if self.dataset is None:
            raise RuntimeError(f"{self.name}: call fit(dataset) before denoise()")
        return self.dataset
