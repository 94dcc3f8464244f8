"""Locality of the Wiener filter, pixel by pixel, for heatmaps in the UI and in notebooks.

    locality_view(dataset, pixel, t=None, alpha_bar=None, channel=0, schedule=None,
                  mask_threshold=None, mask_normalization="self", device="cpu") -> LocalityView
    locality_stack(dataset, pixel, timesteps=None, alpha_bars=None, channel=0, schedule=None,
                   mask_threshold=None, mask_normalization="self", device="cpu") -> LocalityStack

`pixel` is (row, column) and `channel` the channel of the output coordinate m. Give the noise level as a
timestep t of `schedule` (default: linear, T = 1000) or directly as ā. For a run, pass
`timesteps=run.trajectory.timesteps.tolist(), alpha_bars=run.trajectory.alpha_bar.tolist()`.
Every array comes shaped like one image, [C, H, W] (a stack adds a leading step axis), on the CPU:
- mask: bool, the inputs n that output m's softmax compares (column m of the pca_locality mask, the very
  mask the denoiser uses: same cache key);
- wiener_row: float64, W[m, :], the weights of the Wiener estimate of x0[m] on x_t / sqrt(ā);
- projection: float64, P[:, m], the normalised values the threshold θ · max|P| cuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from studio.data.dataset import Dataset
from studio.denoisers.masked.masks import NORMALIZATIONS, DEGENERATE, default_threshold, locality_mask
from studio.denoisers.wiener import gaussian_fit, wiener_gains
from studio.diffusion.schedules import Schedule


@dataclass
class LocalityView:
    """One output coordinate at one noise level; arrays are [C, H, W]."""

    mask: torch.Tensor
    wiener_row: torch.Tensor
    projection: torch.Tensor
    coordinate: tuple[int, int, int]
    t: int | None
    alpha_bar: float
    mask_threshold: float
    mask_normalization: str
    mask_density: float  # fraction of ones in the whole D x D mask at this level


@dataclass
class LocalityStack:
    """One output coordinate across noise levels; arrays are [K, C, H, W], per-level facts are [K]."""

    masks: torch.Tensor
    wiener_rows: torch.Tensor
    projections: torch.Tensor
    coordinate: tuple[int, int, int]
    timesteps: list[int | None]
    alpha_bars: list[float]
    mask_threshold: float
    mask_normalization: str
    mask_densities: list[float]


def _coordinate(dataset: Dataset, pixel: tuple[int, int], channel: int) -> int:
    if dataset.kind != "image":
        raise ValueError(f"dataset.name: locality maps need image data; {dataset.name} is {dataset.kind} data")
    C, H, W = dataset.shape
    if not (isinstance(pixel, (tuple, list)) and len(pixel) == 2):
        raise ValueError(f"pixel: expected (row, column), got {pixel!r}")
    y, x = (int(v) for v in pixel)
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"pixel: ({y}, {x}) is outside the {H}x{W} image")
    if not 0 <= channel < C:
        raise ValueError(f"channel: {channel} is out of range [0, {C - 1}]")
    return (channel * H + y) * W + x


def _level(t: int | None, alpha_bar: float | None, schedule: Schedule | None) -> tuple[int | None, float]:
    if alpha_bar is not None:
        if not 0 < alpha_bar < 1:
            raise ValueError(f"alpha_bar: {alpha_bar} must lie in (0, 1)")
        return t, float(alpha_bar)
    if t is None:
        raise ValueError("t: give a timestep or alpha_bar")
    schedule = schedule or Schedule.build()
    if not 0 <= t < schedule.T:
        raise ValueError(f"t: {t} is out of range [0, {schedule.T - 1}]")
    return int(t), schedule.ab(int(t))


def locality_view(
    dataset: Dataset,
    pixel: tuple[int, int],
    t: int | None = None,
    alpha_bar: float | None = None,
    channel: int = 0,
    schedule: Schedule | None = None,
    mask_threshold: float | None = None,
    mask_normalization: str = "self",
    device: str | torch.device = "cpu",
) -> LocalityView:
    """Mask, Wiener row and normalised column of output coordinate (channel, *pixel) at one noise level."""
    stack = locality_stack(dataset, pixel, None if t is None else [t], None if alpha_bar is None else [alpha_bar],
                           channel, schedule, mask_threshold, mask_normalization, device)
    return LocalityView(stack.masks[0], stack.wiener_rows[0], stack.projections[0], stack.coordinate,
                        stack.timesteps[0], stack.alpha_bars[0], stack.mask_threshold, stack.mask_normalization,
                        stack.mask_densities[0])


def locality_stack(
    dataset: Dataset,
    pixel: tuple[int, int],
    timesteps: Sequence[int] | None = None,
    alpha_bars: Sequence[float] | None = None,
    channel: int = 0,
    schedule: Schedule | None = None,
    mask_threshold: float | None = None,
    mask_normalization: str = "self",
    device: str | torch.device = "cpu",
) -> LocalityStack:
    """The same maps at every level given (timesteps, or alpha_bars, or both in step with each other)."""
    m = _coordinate(dataset, pixel, channel)
    if mask_normalization not in NORMALIZATIONS:
        raise ValueError(f"mask_normalization: {mask_normalization!r} is not allowed; "
                         f"choose one of: {', '.join(NORMALIZATIONS)}")
    if timesteps is None and alpha_bars is None:
        raise ValueError("timesteps: give timesteps or alpha_bars")
    count = len(alpha_bars if alpha_bars is not None else timesteps)
    if timesteps is not None and alpha_bars is not None and len(timesteps) != len(alpha_bars):
        raise ValueError("alpha_bars: must have as many entries as timesteps")
    theta = default_threshold(dataset.shape) if mask_threshold is None else float(mask_threshold)
    fit = gaussian_fit(dataset)
    u, lam = fit["u"], fit["lam"]
    levels = [_level(None if timesteps is None else timesteps[k], None if alpha_bars is None else alpha_bars[k],
                     schedule) for k in range(count)]
    masks, rows, projections, densities = [], [], [], []
    for _, ab in levels:
        gains = wiener_gains(lam, ab)
        row = u @ (gains * u[m])
        diag = (u * u) @ gains
        safe = torch.where(diag > DEGENERATE * diag.max().clamp_min(1e-300), diag, torch.ones_like(diag))
        projections.append(row / safe[m] if mask_normalization == "self" else row / safe)
        rows.append(row)
        mask = locality_mask(dataset, ab, theta, mask_normalization, device)
        masks.append(mask[:, m])
        densities.append(float(mask.float().mean()))
    shape = (count, *dataset.shape)
    return LocalityStack(
        torch.stack(masks).reshape(shape), torch.stack(rows).reshape(shape), torch.stack(projections).reshape(shape),
        (channel, int(pixel[0]), int(pixel[1])), [lv[0] for lv in levels], [lv[1] for lv in levels], theta,
        mask_normalization, densities,
    )
