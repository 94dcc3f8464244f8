"""`list` (what can be chosen) and `sample` (one run, written to a run folder)."""

from __future__ import annotations

import argparse
import sys

from studio.cli.flags import add_run_flags, config_from_args
from studio.data.registry import dataset_names, get_entry, load_dataset
from studio.denoisers.registry import denoiser_class, denoiser_names
from studio.diffusion.samplers import SAMPLERS
from studio.diffusion.schedules import SCHEDULES
from studio.diffusion.spacing import SPACINGS


def _print_section(title: str, rows: list[tuple[str, str, tuple]], label: str = "params") -> None:
    print(f"{title}:")
    for name, summary, params in rows:
        print(f"  {name:<16}{summary}")
        if params:
            print(f"  {'':<16}{label}: {', '.join(p.describe() for p in params)}")


def cmd_list(args: argparse.Namespace) -> int:
    entries = [get_entry(name) for name in dataset_names()]
    _print_section("datasets", [(e.name, f"{e.kind:<8}{e.summary}", e.params) for e in entries], "options")
    classes = [denoiser_class(name) for name in denoiser_names()]
    _print_section("denoisers", [(c.name, c.summary, c.params) for c in classes])
    _print_section("samplers", [(name, c.summary, c.params) for name, c in SAMPLERS.items()])
    print(f"schedules: {', '.join(SCHEDULES)}")
    print(f"spacings: {', '.join(SPACINGS)}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from studio.engine import execute
    from studio.runs import check_out_folder, save_run

    cfg = config_from_args(args)
    out = check_out_folder(args.out, args.overwrite)
    bars: list[tqdm] = []  # made at the first step, so an error before sampling prints one line only

    def progress(step) -> None:
        if not bars:
            bars.append(tqdm(total=step.K, desc=f"{cfg.denoiser.name}/{cfg.sampler.name}", unit="step",
                             file=sys.stderr))
        bars[0].update(1)

    try:
        run = execute(cfg, progress)
    finally:
        for bar in bars:
            bar.close()
    background = None
    if not run.is_image:
        background = load_dataset(cfg.dataset.name, **cfg.dataset.options).x
    folder = save_run(run, out, background)
    t = run.metrics["timings"]
    s = run.metrics["summary"]
    print(f"wrote {folder} | sampling {t['sampling_s']:.3f} s ({t['ms_per_step']:.2f} ms/step), fit {t['fit_s']:.2f} s"
          f" | final nearest-neighbour RMS {s['final_nn_rms']:.4f}, memorised {s['memorisation_rate']}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="datasets, denoisers (with parameters), samplers, schedules")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("sample", help="sample with a denoiser and write a run folder")
    add_run_flags(p)
    p.add_argument("--out", required=True, help="run folder to write (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it holds an earlier studio run")
    p.set_defaults(func=cmd_sample)
