"""Data that came from 8-bit images, kept as their codes: a quarter of float32, decoded only on demand.

ImageNet-64 (1.28 M x 3x64x64) is 15.7 GB as codes and 63 GB as float32: the float view of such data is
produced only when asked for, after a check that it fits the host's free memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

HOST_FREE_FRACTION = 0.8  # share of the host's available memory one float view may take
_DECODE_ROWS_BYTES = 64 * 2**20  # float32 bytes decoded at once (bounds the int32 index copy)


@dataclass(frozen=True)
class ImageCodes:
    """uint8 codes [N, C, H, W] whose values are 2 c / levels - 1 (scale = 2/levels, offset = -1), with `table`
    the float32 value of each code exactly as the builder's float path gives it (bit for bit)."""

    codes: torch.Tensor  # uint8 [N, C, H, W]
    levels: int          # the largest code: 255 for 8-bit images, 16 for the digits' counts
    table: torch.Tensor  # float32 [256]

    def __post_init__(self) -> None:
        if self.codes.dtype != torch.uint8 or self.codes.dim() != 4:
            raise ValueError(f"dataset codes: must be uint8 [N, C, H, W], got {self.codes.dtype} "
                             f"{tuple(self.codes.shape)}")
        if self.table.dtype != torch.float32 or self.table.shape != (256,):
            raise ValueError(f"dataset codes: table must be float32 [256], got {self.table.dtype} "
                             f"{tuple(self.table.shape)}")

    @property
    def scale(self) -> float:
        return 2.0 / self.levels

    @property
    def offset(self) -> float:
        return -1.0

    @property
    def float_bytes(self) -> int:
        """Size of the float32 view."""
        return 4 * self.codes.numel()

    def decode(self, what: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 [N, C, H, W] in [-1, 1] on `device`, block by block: to a GPU the codes travel (a quarter of the
        bytes) and are looked up there. On the host refused (ValueError naming `what` and the size) when it would not
        fit the free memory; a device's budget is the caller's to check."""
        device = torch.device(device)
        if device.type == "cpu":
            require_host(self.float_bytes, f"{what}: the float32 view of its 8-bit data "
                         f"({self.codes.shape[0]:,} x {'x'.join(map(str, self.codes.shape[1:]))} = "
                         f"{_gib(self.float_bytes)})")
        N = self.codes.shape[0]
        out = torch.empty(self.codes.shape, dtype=torch.float32, device=device)
        table = self.table.to(device)
        rows = max(1, _DECODE_ROWS_BYTES // max(4 * self.codes[0].numel(), 1))
        for lo in range(0, N, rows):
            out[lo:lo + rows] = table[self.codes[lo:lo + rows].to(device).to(torch.int32)]  # [rows, C, H, W]
        return out


def host_available_bytes() -> int:
    """Memory the host can still give this process: MemAvailable (Linux), else the free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def host_budget() -> int:
    """Bytes one float view of the data may take: HOST_FREE_FRACTION of the host's available memory."""
    return int(host_available_bytes() * HOST_FREE_FRACTION)


def host_fits(n_bytes: int) -> bool:
    return n_bytes <= host_budget()


def require_host(n_bytes: int, what: str) -> None:
    """Raise a ValueError naming `what` when `n_bytes` exceed the host budget."""
    budget = host_budget()
    if n_bytes > budget:
        raise ValueError(f"{what} needs {_gib(n_bytes)} of host memory but {_gib(budget)} is free for it; the "
                         "optimal and nearest denoisers read the codes directly (denoiser.storage: uint8), or "
                         "use fewer images (dataset.size) or a smaller dataset.resolution")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"
