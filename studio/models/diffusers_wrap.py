"""An analytic denoiser as the `unet` of a diffusers pipeline: a torch module that predicts ε from x̂0.

    from diffusers import DDIMPipeline, DDIMScheduler
    scheduler = DDIMScheduler(clip_sample=False)
    unet = AnalyticUNet(make_denoiser("optimal").fit(load_dataset("digits")), scheduler)
    images = DDIMPipeline(unet=unet, scheduler=scheduler)(batch_size=4, num_inference_steps=50).images

The pipeline's scheduler sees ε̂ = (x_t − √ā x̂0)/√(1−ā), with ā the scheduler's `alphas_cumprod[t]`, so every
diffusers scheduler that takes ε predictions samples from the analytic denoiser.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from studio.denoisers.base import Denoiser


def _alphas_cumprod(schedule: Any) -> torch.Tensor:
    """ā per training timestep from a diffusers scheduler, or the tensor itself ([T] float64)."""
    alphas = getattr(schedule, "alphas_cumprod", schedule)
    if not isinstance(alphas, torch.Tensor) or alphas.ndim != 1:
        raise ValueError("AnalyticUNet: pass a diffusers scheduler or a 1-D tensor of alphas_cumprod")
    return alphas.detach().to("cpu", torch.float64)


class AnalyticUNet(nn.Module):
    """A fitted image denoiser wrapped as an ε-predicting UNet: `forward(sample, timestep).sample` is ε̂."""

    def __init__(self, denoiser: Denoiser, schedule: Any) -> None:
        super().__init__()
        dataset = denoiser._check_fitted()
        if dataset.kind != "image":
            raise ValueError(f"AnalyticUNet: {dataset.name} holds {dataset.kind}, not images; diffusers image "
                             "pipelines need C×H×W items")
        channels, height, width = dataset.shape
        self.denoiser = denoiser
        self.alphas_cumprod = _alphas_cumprod(schedule)  # [T]; a plain attribute, never moved or saved
        self.config = FrozenDict(sample_size=height if height == width else (height, width), in_channels=channels,
                                 out_channels=channels, num_train_timesteps=len(self.alphas_cumprod))

    @property
    def device(self) -> torch.device:
        return torch.device(self.denoiser.device)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True
                ) -> UNet2DOutput | tuple[torch.Tensor]:
        """ε̂ for x_t = `sample` [B, C, H, W] at integer `timestep` (one, or one per sample)."""
        steps = torch.as_tensor(timestep).flatten().to("cpu", torch.int64).expand(sample.shape[0])  # [B]
        eps = torch.empty_like(sample)  # [B, C, H, W]
        for t in steps.unique().tolist():
            rows = (steps == t).to(sample.device)  # [B] bool
            ab = float(self.alphas_cumprod[t])
            x_t = sample[rows].float()  # [b, C, H, W]
            x0 = self.denoiser.denoise(x_t.to(self.device), t, ab).x0.to(x_t)  # [b, C, H, W]
            eps[rows] = ((x_t - ab ** 0.5 * x0) / (1 - ab) ** 0.5).to(sample.dtype)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)
