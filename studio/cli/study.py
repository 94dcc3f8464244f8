"""`study`: the published comparison in one command: nearest, optimal, wiener, scfdm, pca_locality, ls and els
against a reference (the bundled UNet by default) from the same noise, repeated with fresh noise."""

from __future__ import annotations

import argparse
import sys

from studio.cli.flags import add_run_flags, config_from_args, parse_pairs
from studio.studies.study import STUDY_DENOISERS, run_study, save_study, table_markdown


def cmd_study(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    cfg = config_from_args(args)
    names = [n.strip() for n in args.denoisers.split(",") if n.strip()]
    bar = tqdm(desc="study", unit="step", file=sys.stderr)
    study = run_study(cfg, names, args.reference, dict(parse_pairs(args.reference_set, "--reference-set")), args.repeats,
                      not args.no_single_step, lambda step: bar.update(1))
    bar.close()
    save_study(study, args.out)
    print(table_markdown(study.rows()))
    print(f"wrote {args.out} (table.md, table.json, r2_vs_t.png, one folder per repeat seed and denoiser)")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="which denoiser behaves like a trained network: every denoiser against a "
                                     "reference, r² per noise level, repeated with fresh noise")
    add_run_flags(p)
    p.add_argument("--denoisers", default=",".join(STUDY_DENOISERS),
                   help=f"comma-separated denoisers (default: {','.join(STUDY_DENOISERS)})")
    p.add_argument("--reference", default="unet", help="reference denoiser (default: unet, the bundled checkpoint)")
    p.add_argument("--reference-set", action="append", metavar="KEY=VALUE", help="reference denoiser parameter (repeatable; default: none, its defaults)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs with fresh noise for mean ± sd: repeat r uses seed + r·n (default 1)")
    p.add_argument("--no-single-step", action="store_true", help="skip the single-step comparison")
    p.add_argument("--out", required=True, help="folder for the table, the chart and the per-run folders")
    p.set_defaults(func=cmd_study)
