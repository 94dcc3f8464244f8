"""How image data meet a network's input: UNet2DModel halves the side (levels - 1) times, so data whose side
is not divisible by 2^(levels-1) are zero-padded (centred) to the next multiple and cropped back.

Training and sampling use the same two functions, so the padding is part of the model's input contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padded_side(side: int, levels: int) -> int:
    """The smallest side >= `side` that `levels` resolution levels can halve evenly."""
    step = 2 ** (levels - 1)
    return -(-side // step) * step


def _margins(side: int, target: int) -> tuple[int, int]:
    before = (target - side) // 2
    return before, target - side - before


def pad_center(x: torch.Tensor, target: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, target, target] with zeros around the centred data."""
    (top, bottom), (left, right) = _margins(x.shape[-2], target), _margins(x.shape[-1], target)
    return F.pad(x, (left, right, top, bottom)) if (top, bottom, left, right) != (0, 0, 0, 0) else x


def crop_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Undo pad_center: the centred height x width window."""
    top, _ = _margins(height, x.shape[-2])
    left, _ = _margins(width, x.shape[-1])
    return x[..., top:top + height, left:left + width]
