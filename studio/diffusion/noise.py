"""Per-sample noise streams: CPU generators seeded with seed + sample index, moved to the device after,
so the same seed gives the same samples on CPU and GPU and at any batch size."""

from __future__ import annotations

import torch


class NoiseSource:
    def __init__(self, seed: int, n: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(n)]

    def draw(self) -> torch.Tensor:
        """One standard normal tensor [n, *shape], each row from its own sample's stream."""
        rows = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])  # [n, *shape] CPU
        if self.device.type != "cuda":
            return rows.to(self.device)
        # From pinned memory the copy is queued without waiting for the GPU (the host allocator keeps the block
        # until the copy has run): no host synchronisation per draw.
        return rows.pin_memory().to(self.device, non_blocking=True)
