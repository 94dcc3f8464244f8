"""`compare`: agreement (MSE, r², memorisation) of one or several denoisers with a reference such as the
trained UNet, from the same noise."""

from __future__ import annotations

import argparse
import sys

from studio.cli.flags import add_run_flags, config_from_args, parse_pairs


def denoiser_list(text: str) -> list[str]:
    """The names of --denoisers; ValueError when it names none."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--denoisers: no denoiser named in {text!r}; give comma-separated names")
    return names


def cmd_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from studio.runs import check_out_folder
    from studio.studies import compare as cmp

    cfg = config_from_args(args)
    out = check_out_folder(args.out, args.overwrite)
    ref_params = dict(parse_pairs(args.reference_set, "--reference-set"))
    names = None if args.denoisers is None else denoiser_list(args.denoisers)  # refused before any work
    bar = tqdm(desc="compare", unit="step", file=sys.stderr)

    def progress(step) -> None:
        bar.update(1)

    single = not args.no_single_step
    if names:
        tests = [(n, cfg.denoiser.params if n == cfg.denoiser.name else {}) for n in names]
        comps = cmp.compare_many(cfg, tests, args.reference, ref_params, single, progress)
        bar.close()
        cmp.save_table(comps, out)
        print(cmp.table_markdown([cmp.summary_row(c) for c in comps]))
    else:
        comp = cmp.compare(cfg, args.reference, ref_params, single, progress)
        bar.close()
        cmp.save_comparison(comp, out)
        print(cmp.table_markdown([cmp.summary_row(comp)]))
    print(f"wrote {out}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="agreement (MSE, r², memorisation) of a denoiser with a reference")
    add_run_flags(p)
    p.add_argument("--reference", default="unet", help="reference denoiser (default: unet, the bundled checkpoint)")
    p.add_argument("--reference-set", action="append", metavar="KEY=VALUE", help="reference denoiser parameter (repeatable; default: none, its defaults)")
    p.add_argument("--denoisers", help="comma-separated denoisers to compare against one shared reference run (default: none, only "
                   "--denoiser)")
    p.add_argument("--no-single-step", action="store_true", help="skip the single-step comparison")
    p.add_argument("--out", required=True, help="folder for metrics.json and plots (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it holds an earlier comparison or run")
    p.set_defaults(func=cmd_compare)
