"""The run player: every step of a run (x_t and x̂0, each a small PNG at the data's own resolution) sent to the
page as data URLs in one hidden feed, and played there by assets/player.js at a chosen pace (play/pause, speed,
step scrubber), upscaled nearest-neighbour by the browser, labelled with step k/K, t and ā.

The feed is one HTML string that only grows while a run streams (a header, then one element per step), so the
page receives each new step once; the finished run's trajectory completes it, so every step reaches the player
however fast the run computed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SAMPLE_PX = 160  # every 8x8 sample is shown at least this wide
FEED_BYTES = 24_000_000  # a run's feed stays under this; beyond it the player gets every n-th step (and the last)
POINTS_PX = 320
EMPTY_FEED = '<div class="studio-feed" data-run="" data-total="0"></div>'

SHELL = """
<div class="studio-player" id="player-root" data-playing="0">
  <div class="studio-player-bar">
    <button type="button" id="player-play" class="studio-player-btn" aria-label="play">▶ Play</button>
    <label class="studio-player-speed">speed
      <select id="player-speed" aria-label="speed (steps per second)">
        <option value="1">1 step/s</option><option value="3">3 steps/s</option>
        <option value="8" selected>8 steps/s</option><option value="20">20 steps/s</option>
        <option value="60">60 steps/s</option>
      </select></label>
    <input type="range" id="player-step" min="1" max="1" value="1" step="1" aria-label="step">
  </div>
  <div id="player-label" class="studio-player-label">Press Run: the samples form here, step by step.</div>
  <div class="studio-player-views">
    <figure id="live-xt" class="studio-player-view"><figcaption>x_t — where the samples are now</figcaption>
      <img alt="x_t at this step"></figure>
    <figure id="live-x0" class="studio-player-view"><figcaption>x̂0 — the denoiser's guess of the clean image
      </figcaption><img alt="x̂0 at this step"></figure>
  </div>
</div>
"""


def data_url(picture) -> str:
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def picture(x: torch.Tensor, background: torch.Tensor | None = None):
    """One step's batch at its own resolution (images) or as a scatter (2-D points)."""
    from studio import images  # imports torch: the page is built before the engine loads

    if x.dim() == 2:
        return images.scatter(x, background, size=POINTS_PX)
    return images.grid(x, scale=1)


def scale_for(x: torch.Tensor) -> int:
    """How many screen pixels per data pixel: at least SAMPLE_PX per sample (1 for scatters)."""
    return 1 if x.dim() == 2 else max(1, math.ceil(SAMPLE_PX / max(x.shape[-1], x.shape[-2])))


def frame(k: int, K: int, t: int, alpha_bar: float, x_t: torch.Tensor, x0: torch.Tensor,
          background: torch.Tensor | None = None) -> str:
    """One step (1-based k of K) as a feed element."""
    return (f'<i class="studio-frame" data-k="{k}" data-total="{K}" data-t="{int(t)}" '
            f'data-ab="{float(alpha_bar):.5g}" data-scale="{scale_for(x_t)}" '
            f'data-xt="{data_url(picture(x_t, background))}" data-x0="{data_url(picture(x0, background))}"></i>')


class Feed:
    """The feed of one run: frames by step, rendered as one growing HTML string."""

    def __init__(self, K: int, label: str = "") -> None:
        self.token = uuid.uuid4().hex[:12]
        self.K = K
        self.label = label
        self.stride = 0  # set by the first frame: 1 = every step
        self.frames: dict[int, str] = {}

    def add(self, k: int, t: int, alpha_bar: float, x_t, x0, background=None) -> None:
        if k in self.frames or (self.stride > 1 and (k - 1) % self.stride and k != self.K):
            return
        self.frames[k] = frame(k, self.K, t, alpha_bar, x_t, x0, background)
        if not self.stride:  # every step, unless the whole run would be a very large page update
            self.stride = max(1, math.ceil(len(self.frames[k]) * self.K / FEED_BYTES))
            if self.stride > 1:
                self.label = f"one step in {self.stride} of this large run" + (f" · {self.label}" if self.label else "")

    def complete(self, trajectory, background=None) -> None:
        """Every step of a finished run's trajectory (steps already sent are kept as they were)."""
        for i, t in enumerate(trajectory.timesteps):
            self.add(i + 1, int(t), float(trajectory.alpha_bar[i]), trajectory.x_t[i], trajectory.x0[i], background)

    def html(self) -> str:
        head = (f'<div class="studio-feed" data-run="{self.token}" data-total="{self.K}" '
                f'data-label="{html.escape(self.label)}">')
        return head + "".join(self.frames[k] for k in sorted(self.frames))


def of_trajectory(trajectory, background=None, label: str = "") -> str:
    """The whole feed of a finished run."""
    feed = Feed(len(trajectory.timesteps), label)
    feed.complete(trajectory, background)
    return feed.html()
