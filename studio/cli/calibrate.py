"""`calibrate`: fit the patch-size schedule of `ls`/`els` to a target denoiser (studio.studies.calibrate)."""

from __future__ import annotations

import argparse

from studio.cli.flags import add_run_flags, config_from_args, parse_pairs
from studio.denoisers.patch_schedule import save_schedule
from studio.studies.calibrate import calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    if not args.denoiser and not args.config:
        raise ValueError("--denoiser: required; choose one of: ls, els")
    if args.steps is None and not args.config:
        args.steps = 10
    cfg = config_from_args(args)
    target_params = dict(parse_pairs(args.target_set, "--target-set"))
    sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else None
    schedule, path = calibrate(cfg, args.target, target_params, sizes)
    for e in schedule.entries:
        print(f"t={e['t']:>5}  ā={e['alpha_bar']:.5f}  patch_size={e['patch_size']:>3}  mse={e['mse']:.3e}")
    if args.out:
        save_schedule(schedule, args.out)
        print(f"wrote {args.out} (set denoiser.patch_schedule={args.out}); cache: {path}")
    else:
        print(f"cached at {path} (set denoiser.patch_schedule={path})")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit the patch-size schedule of ls/els to a target denoiser")
    p.add_argument("--target", required=True, help="any registered denoiser, e.g. unet, optimal, wiener")
    p.add_argument("--target-set", action="append", metavar="KEY=VALUE",
                   help="a parameter of the target (repeatable; default: none, its defaults)")
    add_run_flags(p, {"steps": "noise levels (sampler.steps of the spacing; default 10)", "n": "probe images per level",
                      "denoiser": "the denoiser to calibrate (choices: ls, els; required unless --config names it)",
                      "set": "dotted config path, e.g. dataset.size=500"},
                  without=("sampler", "eta"))
    p.add_argument("--sizes", help="comma-separated odd patch sizes to try (default: all odd sizes)")
    p.add_argument("--out", help="also write the schedule here (.yaml or .json) (default: only the cache)")
    p.set_defaults(func=cmd_calibrate)
