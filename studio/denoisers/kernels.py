"""Which implementation a GPU-capable denoiser runs: the `kernel` choice, checked once for all of them."""

from __future__ import annotations

import os

import torch

KERNELS = ("auto", "torch", "triton")


def use_triton(device: torch.device, kernel: str) -> bool:
    """Whether the Triton kernels run for `device` and `kernel` (a clear error where they cannot). Forcing
    "triton" off CUDA is allowed only under TRITON_INTERPRET=1 (Triton's CPU interpreter: for tests)."""
    if kernel not in KERNELS:
        raise ValueError(f"denoiser.kernel: {kernel!r} is not allowed; choose one of: {', '.join(KERNELS)}")
    if kernel == "torch":
        return False
    interpreted = kernel == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    if torch.device(device).type != "cuda" and not interpreted:
        if kernel == "triton":
            raise ValueError("denoiser.kernel: triton needs a CUDA device (or TRITON_INTERPRET=1); choose auto or "
                             "torch")
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        if kernel == "triton":
            raise ValueError("denoiser.kernel: triton is not installed; choose auto or torch") from None
        return False
    return True
