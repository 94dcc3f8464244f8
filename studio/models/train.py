"""Train a small denoising network on a studio dataset: a diffusers UNet2DModel for images, the TimeMLP for
2-D points. Keeps EMA weights, writes resumable checkpoints, a loss curve (CSV + PNG), a sample grid and a model
card; `denoiser.model` accepts the output folder as it is, and for a UNet so does
`diffusers.DDPMPipeline.from_pretrained`.

Output folder (a UNet; the TimeMLP, which no diffusers pipeline loads, keeps the flat layout: the unet/ and
scheduler/ files directly in the folder):
    model_index.json                                        the diffusers DDPMPipeline index
    unet/config.json, unet/diffusion_pytorch_model.safetensors   the EMA network (save_pretrained, safetensors)
    scheduler/scheduler_config.json                         the training schedule and prediction type (diffusers)
    README.md                                               model card (ModelCard; front matter `studio:` is machine-read)
    loss.csv, loss.png, samples.png                    loss curve and a DDIM sample check
    resume/state.safetensors, resume/state.json        weights, EMA, optimiser, RNG and history for --resume
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from studio.cache import atomic_dir, atomic_write
from studio.data.dataset import Dataset
from studio.denoisers.unet import call_network
from studio.config import _SCHEDULE_PARAMS as SCHEDULE_PARAMS
from studio.diffusion.schedules import Schedule
from studio.models.card import write_card
from studio.models.checkpoints import FLAT_FILES, FLAT_NOTE, PIPELINE_NOTE, PIPELINE_TAG, PREDICTION_TYPES, save_checkpoint
from studio.models.framing import crop_center, pad_center, padded_side
from studio.params import Param, resolve

TRAIN_PARAMS = (
    Param("steps", int, 20_000, "optimiser steps", low=1, high=10_000_000),
    Param("batch", int, 256, "training examples per step", low=1, high=65_536),
    Param("lr", float, None, "peak learning rate (auto: 3e-4 for a UNet, 1e-3 for the MLP)", low=1e-7, high=1.0,
          optional=True),
    Param("warmup", int, 200, "linear warm-up steps, then cosine decay to 10% of the peak", low=0),
    Param("ema_decay", float, 0.999, "EMA decay of the saved weights (warmed up as min(d, (1+k)/(10+k)))",
          low=0.0, high=0.99999),
    Param("prediction_type", str, "epsilon", "what the network learns to predict", choices=PREDICTION_TYPES),
    Param("width", int, None, "UNet base channels (auto 32; levels get 1x, 2x, 2x) or MLP width (auto 256)",
          low=8, high=1024, optional=True),
    Param("depth", int, None, "UNet layers per block (auto 2) or MLP residual blocks (auto 3)", low=1, high=16,
          optional=True),
    Param("seed", int, 0, "seed of the initial weights, batches, timesteps and noise", low=0),
    Param("save_every", int, 2000, "steps between resumable checkpoints (0 = only at the end)", low=0),
    Param("log_every", int, 50, "steps per loss-curve point", low=1),
    Param("max_minutes", float, None, "training time budget: stop (and save) when it is spent; the learning rate "
          "decays over it when it ends before --steps", low=0.01, optional=True),
    Param("save_dtype", str, "fp32", "dtype of the saved weights (fp16 halves the size)", choices=("fp32", "fp16")),
    Param("sample_n", int, 64, "samples drawn for samples.png after training (0 = none)", low=0, high=4096),
    Param("device", str, "auto", "where to train", choices=("auto", "cpu", "cuda")),
    Param("compile", bool, False, "torch.compile the network (CUDA graphs on GPU): small networks train many "
          "times faster after a compile of a minute or two"),
)
RESUME = "resume"
_STATE = "state.safetensors"
_META = "state.json"


@dataclass
class TrainResult:
    folder: Path
    steps: int
    final_loss: float
    seconds: float
    stopped_early: bool


def unet_config(shape: tuple[int, ...], width: int = 32, depth: int = 2) -> dict[str, Any]:
    """A small UNet2DModel for [C, H, W] data: 3 levels below 32 px (4 from 32 up), attention below the top
    level, channels (w, 2w, 2w[, 2w]); the side is zero-padded up to a multiple of 2^(levels-1) (25 -> 28)."""
    c, h, w = shape
    levels = 3 if max(h, w) < 32 else 4
    down = ("DownBlock2D",) + ("AttnDownBlock2D",) * (levels - 1)
    return {
        "sample_size": padded_side(max(h, w), levels), "in_channels": c, "out_channels": c,
        "block_out_channels": (width,) + (2 * width,) * (levels - 1), "layers_per_block": depth,
        "down_block_types": down, "up_block_types": tuple(b.replace("Down", "Up") for b in reversed(down)),
        "norm_num_groups": min(8, width), "attention_head_dim": min(32, width),
    }


def build_network(dataset: Dataset, width: int | None, depth: int | None) -> nn.Module:
    if dataset.kind == "points":
        from studio.models.mlp import TimeMLP

        return TimeMLP(in_features=dataset.dim, hidden=width or 256, num_blocks=depth or 3)
    from diffusers import UNet2DModel

    return UNet2DModel(**unet_config(dataset.shape, width or 32, depth or 2))


def training_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the network regresses: ε, v = sqrt(ā) ε - sqrt(1-ā) x0 (Salimans & Ho 2022), or x0."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    return x0


def lr_at(step: int, peak: float, warmup: int, total: int, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak over the steps or, when a time budget ends first,
    over the time (`time_used` = share of --max-minutes spent), whichever is further along."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_used)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _Ema:
    """Exponential moving average of the weights; the decay warms up so short runs are not dominated by init."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.net = copy.deepcopy(net).requires_grad_(False)
        self.decay = decay
        self._src = list(net.parameters())
        self._dst = list(self.net.parameters())

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._dst, self._src, 1 - d)


def _device(name: str) -> torch.device:
    from studio.engine import resolve_device

    return resolve_device(name)


class Trainer:
    """One training run into `out`; `run()` trains from step 0 or from the saved resume state."""

    def __init__(self, dataset: Dataset, out: Path, options: dict[str, Any], schedule: dict[str, Any],
                 command: str = "") -> None:
        self.dataset = dataset
        self.out = Path(out)
        self.o = resolve(TRAIN_PARAMS, options, "train")
        self.schedule = resolve(SCHEDULE_PARAMS, schedule, "schedule")
        if self.schedule["beta_end"] < self.schedule["beta_start"]:
            raise ValueError("schedule.beta_end: must be >= schedule.beta_start")
        self.command = command
        self.device = _device(self.o["device"])
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(self.o["seed"])
        self.net = build_network(dataset, self.o["width"], self.o["depth"]).to(self.device)
        self.ema = _Ema(self.net, self.o["ema_decay"])
        self.peak_lr = self.o["lr"] or (1e-3 if dataset.kind == "points" else 3e-4)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.peak_lr, weight_decay=0.0,
                                     fused=self.device.type == "cuda")
        self.gen = torch.Generator(self.device).manual_seed(self.o["seed"])
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- resumable state
    def _identity(self) -> dict[str, Any]:
        return {"dataset": self.dataset.fingerprint, "network": json.loads(json.dumps(dict(self.net.config))),
                "schedule": self.schedule, "prediction_type": self.o["prediction_type"]}

    def save_state(self) -> None:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.net.state_dict().items()})
        opt = self.opt.state_dict()
        scalars: dict[str, Any] = {}
        for idx, slots in opt["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"opt.{idx}.{key}"] = value
                else:
                    scalars[f"{idx}.{key}"] = value
        tensors["rng"] = self.gen.get_state()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"step": self.step, "elapsed_s": self.elapsed, "history": self.history, "identity": self._identity(),
                "options": self.o, "param_groups": opt["param_groups"], "opt_scalars": scalars}

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp / _STATE))
            (tmp / _META).write_text(json.dumps(meta))

        atomic_dir(self.out / RESUME, write)

    def load_state(self) -> bool:
        folder = self.out / RESUME
        if not (folder / _STATE).is_file() or not (folder / _META).is_file():
            return False
        meta = json.loads((folder / _META).read_text())
        if meta["identity"] != self._identity():
            differs = [k for k in meta["identity"] if meta["identity"][k] != self._identity()[k]]
            raise ValueError(f"--resume: {self.out} was trained with another {', '.join(differs)}; "
                             "use the same dataset, options and architecture, or another --out folder")
        t = load_file(str(folder / _STATE))
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        self.ema.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
        state: dict[int, dict[str, Any]] = {}
        for key, value in t.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for key, value in meta["opt_scalars"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.gen.set_state(t["rng"])
        self.step, self.elapsed, self.history = meta["step"], meta["elapsed_s"], meta["history"]
        return True

    # ---------------------------------------------------------------- training
    def run(self, resume: bool = False, progress: bool = True,
            on_log: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out: {self.out} exists and is not a folder; choose a new or empty folder")
        if (self.out / RESUME).exists() and not resume:
            raise ValueError(f"--out: {self.out} already holds a training run; pass --resume to continue it "
                             "or choose another folder")
        if resume and not self.load_state():
            raise ValueError(f"--resume: {self.out} holds no saved training state; drop --resume to start from step 0")
        self.out.mkdir(parents=True, exist_ok=True)
        from tqdm import tqdm

        o = self.o
        data = self.dataset.x.to(self.device)
        frame = self.net.config.get("sample_size") if self.dataset.kind == "image" else None
        ab_all = Schedule.build(**self.schedule).alpha_bar.float().to(self.device)
        T, n = len(ab_all), data.shape[0]
        bar = tqdm(total=o["steps"], initial=self.step, desc=f"train {self.dataset.name}", unit="step",
                   file=sys.stderr, disable=not progress, mininterval=1.0)
        forward = self.net
        if o["compile"]:
            forward = torch.compile(self.net, mode="reduce-overhead" if self.device.type == "cuda" else None)
        running = torch.zeros((), device=self.device)
        counted = 0
        started = time.perf_counter() - self.elapsed
        budget = 60 * o["max_minutes"] if o["max_minutes"] is not None else None
        stopped_early = False
        self.net.train()
        while self.step < o["steps"]:
            idx = torch.randint(n, (o["batch"],), generator=self.gen, device=self.device)
            x0 = data[idx]
            t = torch.randint(T, (o["batch"],), generator=self.gen, device=self.device)
            eps = torch.randn(x0.shape, generator=self.gen, device=self.device)
            ab = ab_all[t].view(-1, *([1] * (x0.dim() - 1)))
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
            if o["compile"]:
                torch.compiler.cudagraph_mark_step_begin()
            if frame is not None:
                pred = crop_center(call_network(forward, pad_center(x_t, frame), t), *x0.shape[-2:])
            else:
                pred = call_network(forward, x_t, t)
            loss = F.mse_loss(pred, training_target(x0, eps, ab, o["prediction_type"]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            time_used = (time.perf_counter() - started) / budget if budget else 0.0
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, self.peak_lr, o["warmup"], o["steps"], time_used)
            self.opt.step()
            self.ema.update(self.step)
            running += loss.detach()
            counted += 1
            self.step += 1
            bar.update(1)
            if self.step % o["log_every"] == 0 or self.step == o["steps"]:
                self.elapsed = time.perf_counter() - started
                row = {"step": self.step, "loss": float(running) / counted, "lr": self.opt.param_groups[0]["lr"],
                       "seconds": self.elapsed}
                self.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if on_log is not None:
                    on_log(row)
                running.zero_()
                counted = 0
                if budget is not None and self.elapsed > budget:
                    stopped_early = self.step < o["steps"]
                    break
            if o["save_every"] and self.step % o["save_every"] == 0 and self.step < o["steps"]:
                self.save_state()
                self.export(final=False)
        bar.close()
        self.elapsed = time.perf_counter() - started
        self.save_state()
        self.export(final=True, stopped_early=stopped_early)
        final = self.history[-1]["loss"] if self.history else float("nan")
        return TrainResult(self.out, self.step, final, self.elapsed, stopped_early)

    # ---------------------------------------------------------------- export
    def export(self, final: bool, stopped_early: bool = False) -> None:
        """Write the EMA network, schedule, loss curve and card into `out` (each file replaced atomically)."""
        with tempfile.TemporaryDirectory(dir=self.out, prefix=".export.") as tmp:
            tmp = Path(tmp)
            written = tmp / "new"
            save_checkpoint(self.ema.net, written, self.schedule, self.o["prediction_type"],
                            half=self.o["save_dtype"] == "fp16")
            for name in os.listdir(written):
                if (self.out / name).is_dir():  # a folder cannot be replaced in one rename: retire the old one
                    os.replace(self.out / name, tmp / f"old-{name}")
                os.replace(written / name, self.out / name)
            if (self.out / "unet").is_dir():  # a folder first written flat (older versions) keeps one layout
                for name in FLAT_FILES:
                    (self.out / name).unlink(missing_ok=True)
        self._write_curve()
        self._write_card(final, stopped_early, {})  # the sample check reads the card (padding, schedule)
        if final and self.o["sample_n"]:
            self._write_card(final, stopped_early, self._sample_check())

    def _write_curve(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["step", "loss", "lr", "seconds"])
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.out / "loss.csv", lambda p: p.write_text(buf.getvalue()))
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in self.history]
        losses = [r["loss"] for r in self.history]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
        ax.plot(steps, losses, lw=0.8, color="#4c72b0", label=f"mean loss per {self.o['log_every']} steps")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"MSE ({self.o['prediction_type']})")
        ax.set_title(f"{self.dataset.name}: training loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png")
        plt.close(fig)
        atomic_write(self.out / "loss.png", lambda p: p.write_bytes(png.getvalue()))

    def _sample_check(self) -> dict[str, Any]:
        """Draw samples with the saved network (DDIM, 50 steps) and save a picture; returns neighbour facts."""
        from studio import images
        from studio.analysis.stats import summary
        from studio.denoisers.unet import Unet
        from studio.diffusion import loop
        from studio.diffusion.noise import NoiseSource
        from studio.diffusion.samplers import make_sampler

        schedule = Schedule.build(**self.schedule)
        denoiser = Unet(self.device, model=str(self.out)).fit(self.dataset)
        n = self.o["sample_n"]
        sampler = make_sampler("ddim", schedule, min(50, schedule.T))
        traj = loop.collect(loop.steps(denoiser, sampler, NoiseSource(0, n, self.dataset.shape, self.device)))
        picture = images.grid(traj.samples) if self.dataset.kind == "image" else \
            images.scatter(traj.samples, self.dataset.x)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        atomic_write(self.out / "samples.png", lambda p: p.write_bytes(buf.getvalue()))
        facts = summary(traj.samples, self.dataset)
        return {"n": n, "sampler": "ddim", "steps": len(sampler), "seed": 0,
                "final_nn_rms": round(facts["final_nn_rms"], 5), "memorisation_rate": facts["memorisation_rate"],
                "in_range": float(traj.samples.abs().le(1.05).float().mean())}

    def _write_card(self, final: bool, stopped_early: bool, samples: dict[str, Any]) -> None:
        ds = self.dataset
        n_params = sum(p.numel() for p in self.net.parameters())
        final_loss = self.history[-1]["loss"] if self.history else None
        studio = {
            "data_shape": list(ds.shape),
            "dataset": {"name": ds.name, "options": ds.options, "fingerprint": ds.fingerprint, "n": ds.n},
            "schedule": self.schedule,
            "prediction_type": self.o["prediction_type"],
            "network": type(self.net).__name__,
            "parameters": n_params,
            "training": {
                "steps": self.step, "target_steps": self.o["steps"], "complete": final and not stopped_early,
                "final_loss": final_loss, "seconds": round(self.elapsed, 1), "device": str(self.device),
                "batch": self.o["batch"], "lr": self.peak_lr, "warmup": self.o["warmup"],
                "ema_decay": self.o["ema_decay"], "seed": self.o["seed"], "save_dtype": self.o["save_dtype"],
                "command": self.command,
            },
        }
        if samples:
            studio["sample_check"] = samples
        frame = self.net.config.get("sample_size") if ds.kind == "image" else None
        padding = (f" Images are zero-padded (centred) from {ds.shape[-1]} to {frame} px so the UNet's "
                   f"{len(self.net.config['block_out_channels'])} levels halve evenly; the loss covers the data "
                   "window only, and the studio pads and crops the same way when sampling."
                   if frame and frame != max(ds.shape[-2:]) else "")
        status = ("finished" if not stopped_early else "ended by the --max-minutes time budget") if final else "in progress"
        loss_text = f"{final_loss:.5f}" if final_loss is not None else "n/a"
        files = PIPELINE_NOTE if type(self.net).__name__ == "UNet2DModel" else FLAT_NOTE
        check = (f"\n\nSample check ({samples['n']} DDIM samples, {samples['steps']} steps): RMS distance to the "
                 f"nearest training item {samples['final_nn_rms']}, memorised share {samples['memorisation_rate']}."
                 if samples else "")
        body = f"""# {type(self.net).__name__} for `{ds.name}` (Analytic Diffusion Studio)

A small denoising network trained by `python -m studio train`, the trained reference the studio compares its
analytic denoisers against. It predicts `{self.o['prediction_type']}`; its timestep input is the integer t of the
schedule below.

| | |
|---|---|
| data | {ds.name} {ds.options}, N={ds.n}, item shape {'x'.join(map(str, ds.shape))}, fingerprint `{ds.fingerprint}` |
| schedule | {self.schedule['name']}, T={self.schedule['T']}, β {self.schedule['beta_start']:g}..{self.schedule['beta_end']:g} |
| network | {type(self.net).__name__}, {n_params:,} parameters, weights saved as {self.o['save_dtype']} (EMA, decay {self.o['ema_decay']}) |
| training | {self.step} of {self.o['steps']} steps ({status}), batch {self.o['batch']}, AdamW lr {self.peak_lr:g}, {self.elapsed:.0f} s on {self.device} |
| final loss | {loss_text} (mean over the last {self.o['log_every']} steps) |
| command | `{self.command}` |
{padding}{check}

Use it: `python -m studio sample --dataset {ds.name} --denoiser unet --set denoiser.model=THIS_FOLDER --out run/`.
Files: {files}, loss.csv / loss.png, samples.png.
"""
        image = ds.kind == "image"
        repo = ds.options.get("repo")
        write_card(self.out, studio, body, tags=(ds.name, type(self.net).__name__),
                   pipeline_tag=PIPELINE_TAG if image else None, datasets=(repo,) if isinstance(repo, str) else ())
