"""A small time-conditioned MLP for 2-D data, called like diffusers' UNet2DModel: net(x_t, t).sample.

It is a diffusers ModelMixin/ConfigMixin, so `save_pretrained` writes config.json and safetensors weights and
`from_pretrained` reads them back without unpickling anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class TimeMLPOutput(BaseOutput):
    sample: torch.Tensor


class _Block(nn.Module):
    """Pre-norm residual block whose hidden activation is shifted by the time embedding."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.time(F.silu(emb))
        return h + self.fc2(F.silu(z))


class TimeMLP(ModelMixin, ConfigMixin):
    """ε/v/x0 predictor for points [B, features]; the timestep gets the sinusoidal embedding UNet2DModel uses."""

    @register_to_config
    def __init__(self, in_features: int = 2, hidden: int = 256, num_blocks: int = 3, time_channels: int = 64) -> None:
        super().__init__()
        self.time_proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_channels, hidden)
        self.inp = nn.Linear(in_features, hidden)
        self.res_blocks = nn.ModuleList(_Block(hidden) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, in_features)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                return_dict: bool = True) -> TimeMLPOutput | tuple[torch.Tensor]:
        t = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32).reshape(-1)
        t = t.expand(sample.shape[0]) if t.numel() == 1 else t
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        h = self.inp(sample)
        for block in self.res_blocks:
            h = block(h, emb)
        out = self.out(F.silu(self.out_norm(h)))
        return TimeMLPOutput(sample=out) if return_dict else (out,)
