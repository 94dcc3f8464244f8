"""`train`: fit a small UNet (images) or MLP (2-D points) to a dataset and save it as a checkpoint folder."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from studio.cli.flags import param_help, parse_pairs, with_choices

_TRAIN_FLAGS = ("steps", "batch", "lr", "warmup", "ema_decay", "prediction_type", "width", "depth", "seed",
                "save_every", "log_every", "max_minutes", "save_dtype", "sample_n", "device", "compile")

# what "auto" means where the parameter's own help does not say it
_SHOWN_DEFAULTS = {"max_minutes": "none, no time budget"}


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
    from studio.models.train import TRAIN_PARAMS

    params = {param.name: param for param in TRAIN_PARAMS}
    p = sub.add_parser("train", help="train a small UNet (images) or MLP (2-D points) with EMA weights")
    p.add_argument("--dataset", required=True, help=with_choices("dataset to train on", "dataset"))
    p.add_argument("--out", required=True, help="output folder (a diffusers DDPMPipeline folder for a UNet, a "
                                                "save_pretrained folder for the MLP, + model card)")
    for name in _TRAIN_FLAGS:
        param = params[name]
        flag = "--samples" if name == "sample_n" else f"--{name.replace('_', '-')}"
        if param.kind is bool:
            p.add_argument(flag, dest=name, action="store_true", default=None, help=param_help(param))
        else:
            p.add_argument(flag, dest=name, type=param.kind, help=param_help(param, _SHOWN_DEFAULTS.get(name)))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dataset.KEY=VALUE or schedule.KEY=VALUE (repeatable; default: none, the dataset's default "
                        "options and a linear schedule, T=1000)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.set_defaults(func=cmd_train)
