"""The trained reference: a diffusers UNet2DModel (or the 2-D TimeMLP, or any module called as net(x_t, t))
predicting ε, v or x0, turned into x̂0 so it runs in every sampler beside the analytic denoisers.

The network's timestep input is the integer t of the schedule it was trained with (read from its
scheduler_config.json). When a run uses another schedule, the network gets the (fractional) timestep of its
own schedule that has the run's ā, and a note says so; `timestep_map=as_given` passes the run's t unchanged.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from studio.data.dataset import Dataset
from studio.data.imageopts import convert_channels
from studio.denoisers.base import Denoised, Denoiser
from studio.denoisers.registry import register
from studio.diffusion.schedules import Schedule
from studio.models.checkpoints import PREDICTION_TYPES, label, load_network, locate, trained_info
from studio.models.framing import crop_center, pad_center
from studio.params import Param

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AUTO_TOLERANCE = 1e-2  # largest |Δx̂0| against fp32 that `precision=auto` accepts for bf16/fp16


def x0_from_prediction(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, prediction_type: str) -> torch.Tensor:
    """x̂0 from the network output: ε: (x_t - sqrt(1-ā) ε̂)/sqrt(ā); v: sqrt(ā) x_t - sqrt(1-ā) v̂; sample: x̂0."""
    s, r = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    if prediction_type == "epsilon":
        return (x_t - r * pred) / s
    if prediction_type == "v_prediction":
        return s * x_t - r * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"denoiser.prediction_type: {prediction_type!r} is not allowed; choose one of: "
                     f"{', '.join(PREDICTION_TYPES)}")


def call_network(net: torch.nn.Module, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """net(x, t) for diffusers models (`.sample`), tuple outputs and plain tensors alike."""
    out = net(x, timestep)
    if hasattr(out, "sample"):
        return out.sample
    return out[0] if isinstance(out, tuple) else out


@register
class Unet(Denoiser):
    name = "unet"
    summary = "trained network (diffusers UNet2DModel; an MLP for 2-D data) predicting ε, v or x0"
    params = (
        Param("model", str, None, "local save_pretrained folder, bundled name (e.g. patches/rgb16) or Hub id "
              "owner/name[@revision] (auto = the bundled checkpoint of the dataset)", optional=True),
        Param("prediction_type", str, None, "what the network predicts (auto = from its scheduler_config.json)",
              choices=PREDICTION_TYPES, optional=True),
        Param("precision", str, "auto", "autocast dtype; auto = bf16/fp16 on GPU where x̂0 stays within 1e-2 of "
              "fp32, else fp32", choices=PRECISIONS),
        Param("timestep_map", str, "match_noise", "network timestep: match_noise = the t of its own schedule with "
              "the run's ā; as_given = the run's t", choices=("match_noise", "as_given")),
    )

    def _fit(self, dataset: Dataset) -> None:
        folder = locate(self.p["model"], dataset)
        info = trained_info(folder)
        self.notes: list[str] = list(info.notes)
        self.source = label(folder)
        self.net = load_network(folder, self.device)
        self.prediction_type = self.p["prediction_type"] or info.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"denoiser.prediction_type: {folder} declares {self.prediction_type!r}; choose one "
                             f"of: {', '.join(PREDICTION_TYPES)}")
        self.schedule = info.schedule
        self.model_ab = Schedule.build(**info.schedule).alpha_bar
        self._neg_log_ab = (-torch.log(self.model_ab)).numpy()
        self._learned_time = getattr(self.net, "config", {}).get("time_embedding_type") == "learned"
        self._frame(dataset, info.data_shape)
        self._compare_training_data(info.dataset, dataset)
        self.autocast = self._choose_precision(dataset)

    def _compare_training_data(self, trained: dict[str, Any], dataset: Dataset) -> None:
        """Note when this run's data are not the bytes the network was trained on."""
        fingerprint = trained.get("fingerprint")
        if not fingerprint or fingerprint == dataset.fingerprint:
            return
        if trained.get("name") == dataset.name and trained.get("options") == dataset.options:
            self._note(f"{self.source} was trained on {dataset.name} with these options, but this build's bytes "
                       f"differ (fingerprint {fingerprint} vs {dataset.fingerprint}), e.g. from other package versions")
        else:
            self._note(f"{self.source} was trained on {trained.get('name')} {trained.get('options')}; this run uses "
                       f"{dataset.name} {dataset.options}, so 'memorised' refers to other images than it saw")

    def _frame(self, dataset: Dataset, trained_shape: tuple[int, ...] | None) -> None:
        """Decide how data meet the network: as they are, zero-padded (as in training) or resized."""
        config = getattr(self.net, "config", {})
        is_mlp = type(self.net).__name__ == "TimeMLP"
        self.pad_to = self.resize_to = None
        self.channels_in = None
        if dataset.kind == "points":
            width = config.get("in_features")
            if width is not None and width != dataset.dim:
                raise ValueError(f"denoiser.model: {self.source} takes {width}-D points; dataset {dataset.name} "
                                 f"has {dataset.dim}-D points")
            return
        if is_mlp:
            raise ValueError(f"denoiser.model: {self.source} is a 2-D point model; dataset {dataset.name} is images")
        c, h, w = dataset.shape
        side = config.get("sample_size") or max(h, w)
        side = side[0] if isinstance(side, (list, tuple)) else side
        channels = config.get("in_channels", c)
        if channels != c:
            if {channels, c} != {1, 3}:
                raise ValueError(f"denoiser.model: {self.source} takes {channels} channels; dataset {dataset.name} "
                                 f"has {c}")
            self.channels_in = channels
            self._note(f"{self.source} takes {channels}-channel images; this {c}-channel data is converted in and "
                       "out (gray = BT.601 luma of RGB, RGB = repeated gray)")
        if (h, w) == (side, side):
            return
        if trained_shape is not None and tuple(trained_shape[1:]) == (h, w) and side >= max(h, w):
            self.pad_to = side
            return
        self.resize_to = side
        self._note(f"{self.source} expects {side}x{side} images; this {h}x{w} data is resized in and out "
                   "(antialiased bilinear). Approximate: resizing changes the noise statistics the network saw")

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            warnings.warn(f"unet: {text}", stacklevel=3)

    def _choose_precision(self, dataset: Dataset) -> torch.dtype | None:
        """The autocast dtype (None = fp32); `auto` probes bf16 then fp16 against fp32 on training data."""
        mode = self.p["precision"]
        if mode == "fp32" or (mode == "auto" and self.device.type != "cuda"):
            return None
        if mode != "auto":
            return _DTYPES[mode]
        probe = dataset.x[:8].to(self.device)
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(probe.shape, generator=g).to(self.device)
        T = len(self.model_ab)
        levels = [T - 1, T // 2, T // 10]
        exact = [self._x0_at(probe, noise, t, None) for t in levels]
        for name, dtype in _DTYPES.items():
            err = max(float((self._x0_at(probe, noise, t, dtype) - ref).abs().max()) for t, ref in zip(levels, exact))
            if err <= AUTO_TOLERANCE:
                self.notes.append(f"precision auto: {name} autocast (max |Δx̂0| vs fp32 on a probe: {err:.2g})")
                return dtype
        self.notes.append(f"precision auto: fp32 (bf16/fp16 moved x̂0 by more than {AUTO_TOLERANCE:g})")
        return None

    def _x0_at(self, x0: torch.Tensor, noise: torch.Tensor, t: int, dtype: torch.dtype | None) -> torch.Tensor:
        ab = float(self.model_ab[t])
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
        return self._x0(x_t, torch.full((len(x0),), t, device=self.device), ab, dtype)

    def _network_time(self, t: int, alpha_bar: float) -> torch.Tensor | int | float:
        """The timestep to feed the network for a run's (t, ā); notes a schedule mismatch once."""
        T = len(self.model_ab)
        same = 0 <= t < T and abs(float(self.model_ab[t]) - alpha_bar) <= 1e-6 * alpha_bar
        if same:
            return t
        shown = ", ".join(f"{k}={v}" for k, v in self.schedule.items())
        if self.p["timestep_map"] == "as_given":
            if not 0 <= t < T:
                raise ValueError(f"denoiser.timestep_map: t={t} is outside the network's 0..{T - 1}; use match_noise")
            self._note(f"this run's schedule differs from the network's training schedule ({shown}); the network "
                       "gets the run's t unchanged (timestep_map=as_given), so it sees another noise level than ā")
            return t
        target = -math.log(alpha_bar)
        if not self._neg_log_ab[0] <= target <= self._neg_log_ab[-1]:
            self._note(f"ā={alpha_bar:.3g} lies outside the network's training range; its nearest level is used")
        self._note(f"this run's schedule differs from the network's training schedule ({shown}); the network gets "
                   "the (fractional) timestep of its own schedule with the run's ā")
        tau = float(np.interp(target, self._neg_log_ab, np.arange(T)))
        return round(tau) if self._learned_time else tau

    def _to_network(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return x
        if self.channels_in is not None:
            x = convert_channels(x, self.channels_in)
        if self.pad_to is not None:
            return pad_center(x, self.pad_to)
        if self.resize_to is not None:
            return F.interpolate(x, size=(self.resize_to,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return x

    def _from_network(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if y.dim() != 4:
            return y
        h, w = like.shape[-2:]
        if self.pad_to is not None:
            y = crop_center(y, h, w)
        elif self.resize_to is not None:
            y = F.interpolate(y, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return convert_channels(y, like.shape[1]) if self.channels_in is not None else y

    def _x0(self, x_t: torch.Tensor, timestep: torch.Tensor, alpha_bar: float, dtype: torch.dtype | None) -> torch.Tensor:
        x = self._to_network(x_t.float())
        cast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.no_grad(), cast:
            pred = call_network(self.net, x, timestep)
        x0 = x0_from_prediction(pred.float(), x, alpha_bar, self.prediction_type)
        return self._from_network(x0, x_t)

    def denoise(self, x_t: torch.Tensor, t: int, alpha_bar: float) -> Denoised:
        self._check_fitted()
        tin = self._network_time(t, alpha_bar)
        dtype = torch.int64 if isinstance(tin, int) else torch.float32
        timestep = torch.full((x_t.shape[0],), tin, dtype=dtype, device=x_t.device)
        x0 = self._x0(x_t, timestep, alpha_bar, self.autocast)
        shared: dict[str, Any] = {"notes": list(self.notes)} if self.notes else {}
        return Denoised(x0.reshape(x_t.shape), shared=shared)
