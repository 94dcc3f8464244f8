"""Pictures of tensors: grids with nearest-neighbour upscaling, trajectory strips, GIFs, 2-D scatters."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] images [N, C, H, W] -> uint8 [N, H, W, C] (C = 1 or 3)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def upscale_for(side: int, target: int = 64) -> int:
    """Integer factor that brings a small image near `target` pixels (nearest-neighbour keeps pixels crisp)."""
    return max(1, target // max(side, 1))


def grid(x: torch.Tensor, ncol: int | None = None, scale: int | None = None, pad: int = 1) -> Image.Image:
    """Tile images [N, C, H, W] into one picture."""
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    ncol = ncol or min(n, max(1, math.ceil(math.sqrt(n))))
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = imgs[i]
    scale = scale or upscale_for(max(h, w))
    if scale > 1:
        canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    return Image.fromarray(canvas.squeeze(-1) if c == 1 else canvas)


def column_indices(K: int, max_columns: int = 25) -> list[int]:
    """At most `max_columns` evenly spaced step indices, always including the first and last."""
    if K <= max_columns:
        return list(range(K))
    return sorted({round(i * (K - 1) / (max_columns - 1)) for i in range(max_columns)})


def trajectory_strip(x_t: torch.Tensor, x0: torch.Tensor, max_samples: int = 8, max_columns: int = 25) -> Image.Image:
    """For each sample, an x_t row above an x̂0 row, across (subsampled) steps; x_t/x0 are [K, N, C, H, W]."""
    cols = column_indices(x_t.shape[0], max_columns)
    n = min(max_samples, x_t.shape[1])
    rows = []
    for i in range(n):
        rows.append(x_t[cols, i])
        rows.append(x0[cols, i])
    return grid(torch.cat(rows), ncol=len(cols))


def side_by_side(x_t: torch.Tensor, x0: torch.Tensor, scale: int | None = None) -> Image.Image:
    """One frame: the x_t grid and the x̂0 grid next to each other."""
    a, b = grid(x_t, scale=scale), grid(x0, scale=scale)
    gap = max(4, a.width // 40)
    frame = Image.new(a.mode, (a.width + gap + b.width, max(a.height, b.height)), "white")
    frame.paste(a, (0, 0))
    frame.paste(b, (a.width + gap, 0))
    return frame


def gif_bytes(frames: list[Image.Image], ms_per_frame: int = 80, hold_last_ms: int = 1200) -> bytes:
    """An animated GIF; colour frames get their own 256 colours by fast octree without dithering (faithful on
    smooth images, no speckle that would read as noise; PIL's default median cut took ~0.4 s a frame)."""
    buf = io.BytesIO()
    durations = [ms_per_frame] * (len(frames) - 1) + [hold_last_ms]
    if frames[0].mode == "RGB":
        frames = [f.quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in frames]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buf.getvalue()


def trajectory_frames(x_t: torch.Tensor, x0: torch.Tensor, max_frames: int = 60) -> list[Image.Image]:
    return [side_by_side(x_t[k], x0[k]) for k in column_indices(x_t.shape[0], max_frames)]


def scatter(points: torch.Tensor, background: torch.Tensor | None = None, size: int = 384) -> Image.Image:
    """2-D points (in [-1, 1]²) as a PNG-ready picture: training data in grey, samples in red."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    to_px = lambda p: ((p[0] + 1.1) / 2.2 * size, (1.1 - p[1]) / 2.2 * size)  # noqa: E731
    for pts, colour, r in ((background, (170, 170, 170), 1.2), (points, (210, 40, 40), 2.2)):
        if pts is None:
            continue
        for p in pts.detach().cpu().double().tolist():
            x, y = to_px(p)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return img


def grid_of_scatters(rows: list[torch.Tensor], background: torch.Tensor | None, max_columns: int = 10,
                     size: int = 160) -> Image.Image:
    """2-D trajectories: one row per tensor [K, N, 2] (x_t row above x̂0 row), columns over steps."""
    cols = column_indices(rows[0].shape[0], max_columns)
    canvas = Image.new("RGB", (len(cols) * size, len(rows) * size), "white")
    for r, traj in enumerate(rows):
        for c, k in enumerate(cols):
            canvas.paste(scatter(traj[k], background, size), (c * size, r * size))
    return canvas
