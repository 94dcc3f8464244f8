"""Denoiser registry: name -> class; the CLI, config validation and UI all read it."""

from __future__ import annotations

from typing import Any

import torch

from studio.denoisers.base import Denoiser

_REGISTRY: dict[str, type[Denoiser]] = {}


def register(cls: type[Denoiser]) -> type[Denoiser]:
    _REGISTRY[cls.name] = cls
    return cls


def denoiser_names() -> list[str]:
    return list(_REGISTRY)


def denoiser_class(name: str) -> type[Denoiser]:
    if name not in _REGISTRY:
        raise ValueError(f"denoiser.name: unknown denoiser {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_denoiser(name: str, device: str | torch.device = "cpu", **params: Any) -> Denoiser:
    return denoiser_class(name)(device=device, **params)
