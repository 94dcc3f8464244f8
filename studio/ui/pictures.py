"""Pictures for the page (PIL, nearest-neighbour upscaled by studio.images): live grids, trajectory pairs,
neighbour rows, a sample with a pixel marker, dataset strips. 2-D data are drawn as scatters."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

from studio import images

GAP = 6
MEMORISED = (214, 39, 40)
NOVEL = (44, 160, 44)


def _side(x: torch.Tensor) -> int:
    return max(x.shape[-1], x.shape[-2])


def view(x: torch.Tensor, background: torch.Tensor | None = None, target: int = 64) -> Image.Image:
    """A batch as one picture: an image grid ([N, C, H, W]) or a scatter over the training points ([N, 2])."""
    if x.dim() == 2:
        return images.scatter(x, background, size=320)
    return images.grid(x, scale=images.upscale_for(_side(x), target))


def pairs(x_t: torch.Tensor, x0: torch.Tensor, background: torch.Tensor | None = None) -> Image.Image:
    """For every sample, x_t | x̂0 next to each other (points: the two scatters side by side)."""
    if x_t.dim() == 2:
        return hstack([images.scatter(x_t, background, 320), images.scatter(x0, background, 320)])
    n = x_t.shape[0]
    per_row = math.ceil(math.sqrt(n))
    cells = [hstack([view(x_t[i:i + 1], target=48), view(x0[i:i + 1], target=48)], gap=1) for i in range(n)]
    rows = [hstack(cells[i:i + per_row], gap=GAP * 2) for i in range(0, n, per_row)]
    return vstack(rows, gap=GAP)


def hstack(pictures: list[Image.Image], gap: int = GAP) -> Image.Image:
    mode = "RGB" if any(p.mode == "RGB" for p in pictures) else pictures[0].mode
    out = Image.new(mode, (sum(p.width for p in pictures) + gap * (len(pictures) - 1),
                           max(p.height for p in pictures)), "white" if mode == "RGB" else 255)
    x = 0
    for p in pictures:
        out.paste(p.convert(mode), (x, 0))
        x += p.width + gap
    return out


def vstack(pictures: list[Image.Image], gap: int = GAP) -> Image.Image:
    mode = "RGB" if any(p.mode == "RGB" for p in pictures) else pictures[0].mode
    out = Image.new(mode, (max(p.width for p in pictures),
                           sum(p.height for p in pictures) + gap * (len(pictures) - 1)),
                    "white" if mode == "RGB" else 255)
    y = 0
    for p in pictures:
        out.paste(p.convert(mode), (0, y))
        y += p.height + gap
    return out


def neighbour_rows(queries: torch.Tensor, data: torch.Tensor, indices: torch.Tensor,
                   memorised: torch.Tensor, rows_per_column: int = 8) -> Image.Image:
    """One row per query: the query in a frame (red = memorised, green = new), then its neighbours in order;
    long lists continue in a second column."""
    rows = []
    for q, idx, flag in zip(queries, indices, memorised.tolist()):
        query = view(q[None], target=56).convert("RGB")
        framed = Image.new("RGB", (query.width + 6, query.height + 6), MEMORISED if flag else NOVEL)
        framed.paste(query, (3, 3))
        side = _side(data)
        found = images.grid(data[idx], ncol=len(idx), scale=images.upscale_for(side, 56)).convert("RGB")
        rows.append(hstack([framed, found], gap=GAP * 2))
    columns = [vstack(rows[i:i + rows_per_column], gap=GAP) for i in range(0, len(rows), rows_per_column)]
    return hstack(columns, gap=GAP * 6)


def with_marker(x: torch.Tensor, px: int, py: int, scale: int) -> Image.Image:
    """One image [C, H, W] upscaled by `scale`, with a red square around pixel (px, py)."""
    picture = images.grid(x[None], scale=scale, pad=0).convert("RGB")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((px * scale, py * scale, (px + 1) * scale - 1, (py + 1) * scale - 1), outline=(230, 30, 30),
                   width=max(1, scale // 8))
    return picture


def strip(x: torch.Tensor, count: int = 16) -> Image.Image:
    """The first training items in one row (points: a scatter of all of them)."""
    if x.dim() == 2:
        return images.scatter(x[:0], x[:4000], size=160)
    return images.grid(x[:count], ncol=min(count, len(x)), scale=images.upscale_for(_side(x), 36))
