"""Core sub-commands: `list`, `sample`, `bench`."""

from __future__ import annotations

import argparse
import sys

from studio.config import RunConfig, parse_value
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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """--config first, then the explicit flags, then every --set, validated once at the end."""
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    flags = {
        "dataset.name": args.dataset, "denoiser.name": args.denoiser, "sampler.name": args.sampler,
        "sampler.steps": args.steps, "n": args.n, "seed": args.seed, "sampler.eta": args.eta,
        "schedule.name": args.schedule, "sampler.spacing": args.spacing, "device": args.device,
    }
    for path, value in flags.items():
        if value is not None:
            cfg.set(path, value)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        cfg.set(key.strip(), parse_value(value))
    return cfg.validate()


def cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from studio.engine import execute
    from studio.runs import save_run

    cfg = config_from_args(args)
    bar = tqdm(total=None, desc=f"{cfg.denoiser.name}/{cfg.sampler.name}", unit="step", file=sys.stderr)

    def progress(step) -> None:
        bar.total = step.K
        bar.update(1)

    run = execute(cfg, progress)
    bar.close()
    background = None
    if not run.is_image:
        background = load_dataset(cfg.dataset.name, **cfg.dataset.options).x
    folder = save_run(run, args.out, background)
    t = run.metrics["timings"]
    s = run.metrics["summary"]
    print(f"wrote {folder} | sampling {t['sampling_s']:.3f} s ({t['ms_per_step']:.2f} ms/step), fit {t['fit_s']:.2f} s"
          f" | final nearest-neighbour RMS {s['final_nn_rms']:.4f}, memorised {s['memorisation_rate']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from studio.bench import main
    from studio.engine import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    opts = {
        "n_data": args.n_data or (50_000 if gpu else 5_000),
        "shape": [int(v) for v in (args.shape or "3x32x32").split("x")],
        "batch": args.batch,
        "levels": args.levels,
        "repeats": args.repeats or (20 if gpu else 3),
    }
    torch.manual_seed(0)
    return main(device, opts, args.only.split(",") if args.only else None, args.json)


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="datasets, denoisers (with parameters), samplers, schedules")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("sample", help="sample with a denoiser and write a run folder")
    p.add_argument("--dataset")
    p.add_argument("--denoiser")
    p.add_argument("--sampler")
    p.add_argument("--steps", type=int)
    p.add_argument("--n", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--eta", type=float)
    p.add_argument("--schedule")
    p.add_argument("--spacing")
    p.add_argument("--device")
    p.add_argument("--config", help="a RunConfig YAML (flags and --set override it)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted config path, e.g. denoiser.temperature=0.5")
    p.add_argument("--out", required=True, help="run folder to write")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("bench", help="ms/step of each denoiser beside a naive float64 reference")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--n-data", type=int, help="training points (default 50,000 on GPU, 5,000 on CPU)")
    p.add_argument("--shape", help="item shape CxHxW (default 3x32x32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--levels", type=int, default=10, help="noise levels of a trailing schedule")
    p.add_argument("--repeats", type=int)
    p.add_argument("--only", help="comma-separated case labels")
    p.set_defaults(func=cmd_bench)


