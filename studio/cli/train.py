"""`train`: fit a small UNet (images) or MLP (2-D points) to a dataset and save it as a checkpoint folder."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from studio.cli.flags import parse_pairs

_TRAIN_FLAGS = ("steps", "batch", "lr", "warmup", "ema_decay", "prediction_type", "width", "depth", "seed",
                "save_every", "log_every", "max_minutes", "save_dtype", "sample_n", "device", "compile")


def _train_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this training (for the model card)."""
    parts = ["python", "-m", "studio", "train", "--dataset", args.dataset, "--out", args.out]
    for name in _TRAIN_FLAGS:
        value = getattr(args, name)
        if value is True:
            parts.append(f"--{name}")
        elif value is not None and value is not False:
            parts += ["--samples" if name == "sample_n" else f"--{name.replace('_', '-')}", str(value)]
    for item in args.set or []:
        parts += ["--set", item]
    if args.resume:
        parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def cmd_train(args: argparse.Namespace) -> int:
    from studio.data.registry import load_dataset
    from studio.models.train import Trainer

    dataset_opts: dict[str, Any] = {}
    schedule: dict[str, Any] = {}
    for key, value in parse_pairs(args.set, "--set"):
        section, _, name = key.partition(".")
        if section not in ("dataset", "schedule") or not name:
            raise ValueError(f"--set: {key!r} is not allowed; use dataset.KEY=VALUE or schedule.KEY=VALUE")
        (dataset_opts if section == "dataset" else schedule)[name] = value
    options = {name: getattr(args, name) for name in _TRAIN_FLAGS if getattr(args, name) is not None}
    dataset = load_dataset(args.dataset, **dataset_opts)
    trainer = Trainer(dataset, args.out, options, schedule, _train_command(args))
    result = trainer.run(resume=args.resume)
    state = "stopped at --max-minutes" if result.stopped_early else "done"
    print(f"{state}: {result.steps} steps in {result.seconds:.1f} s, final loss {result.final_loss:.5f}; "
          f"wrote {result.folder} (use: --denoiser unet --set denoiser.model={result.folder})")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small UNet (images) or MLP (2-D points) with EMA weights")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output folder (a save_pretrained folder + model card)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--ema-decay", dest="ema_decay", type=float)
    p.add_argument("--prediction-type", dest="prediction_type", help="epsilon (default), v_prediction or sample")
    p.add_argument("--width", type=int, help="UNet base channels / MLP width")
    p.add_argument("--depth", type=int, help="UNet layers per block / MLP blocks")
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", dest="save_every", type=int, help="steps between resumable checkpoints")
    p.add_argument("--log-every", dest="log_every", type=int)
    p.add_argument("--max-minutes", dest="max_minutes", type=float, help="stop and save after this long")
    p.add_argument("--save-dtype", dest="save_dtype", help="fp32 (default) or fp16")
    p.add_argument("--samples", dest="sample_n", type=int, help="samples drawn for samples.png (0 = none)")
    p.add_argument("--device")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the network (CUDA graphs on GPU): much faster for small networks")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dataset.KEY=VALUE or schedule.KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.set_defaults(func=cmd_train)
