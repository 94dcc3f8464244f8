"""`bench`: ms per denoise step of each denoiser beside a naive float64 reference."""

from __future__ import annotations

import argparse


def parse_shape(text: str) -> list[int]:
    """CxHxW as three positive whole numbers; ValueError naming --shape otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shape: expected CxHxW, three positive whole numbers (e.g. 3x32x32), got {text!r}")
    return [int(p) for p in parts]


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from studio.studies.bench import main
    from studio.engine import resolve_device

    shape = parse_shape(args.shape or "3x32x32")
    for flag in ("n_data", "batch", "levels", "repeats", "float_n"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: must be a positive whole number, got {value}")
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    shapes = None
    if args.shape and (args.e2e or args.setup):
        dims = [int(v) for v in args.shape.split("x")]
        shapes = [(*dims, args.n_data or (50_000 if gpu else 5_000))]
    if args.setup:
        from studio.studies.bench import setup_main

        return setup_main(device, shapes, args.json)
    if args.e2e:
        from studio.studies.bench import e2e_main

        steps = [int(v) for v in (args.steps or ("10,50" if gpu else "10")).split(",")]
        only = args.only.split(",") if args.only else None
        return e2e_main(device, steps, shapes, only, args.json, args.code, args.timeout)
    if args.scale:
        from studio.studies.bench import SCALE_FLOAT_N, SCALE_N, scale_main

        return scale_main(device, {"n_data": args.n_data or SCALE_N[device.type],
                                   "shape": parse_shape(args.shape or "3x64x64"), "batch": args.batch,
                                   "levels": args.levels, "repeats": args.repeats or (20 if gpu else 2),
                                   "float_n": args.float_n or SCALE_FLOAT_N[device.type],
                                   "skip_fallback": args.skip_fallback}, args.json)
    if args.neighbours:
        from studio.studies.bench import neighbours_main

        return neighbours_main(device, {"n_data": args.n_data or (50_000 if gpu else 5_000), "shape": shape,
                                        "repeats": args.repeats or (20 if gpu else 3)}, args.json)
    opts = {
        "n_data": args.n_data or (50_000 if gpu else 5_000),
        "shape": shape,
        "batch": args.batch,
        "levels": args.levels,
        "repeats": args.repeats or (20 if gpu else 3),
    }
    torch.manual_seed(0)
    return main(device, opts, args.only.split(",") if args.only else None, args.json)


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="ms/step of each denoiser beside a naive float64 reference")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--n-data", type=int, help="training points (default 50,000 on GPU, 5,000 on CPU)")
    p.add_argument("--shape", help="item shape CxHxW (default 3x32x32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--levels", type=int, default=10, help="noise levels of a trailing schedule")
    p.add_argument("--repeats", type=int)
    p.add_argument("--only", help="comma-separated case labels (with --e2e: denoiser names)")
    p.add_argument("--e2e", action="store_true",
                   help="whole runs as a user meets them: cold (fresh process, empty cache), warm cache, warm process, "
                        "split into load, fit, per-level setup, denoise, loop overhead, analysis and the rest")
    p.add_argument("--setup", action="store_true",
                   help="pca_locality's one-off costs: Gaussian fit, mask recomputed vs stored bit-packed, plan")
    p.add_argument("--neighbours", action="store_true",
                   help="the neighbour search both ways (exact matrix products, faiss IVF index): build time, ms per "
                        "search of 64 queries, recall@8 against a float64 brute force")
    p.add_argument("--scale", action="store_true",
                   help="optimal and nearest over training data kept as 8-bit codes: ImageNet-64 size by default "
                        "(1,280,000 x 3x64x64 made on the device as uint8), ms/step and fit time, then beside "
                        "float32 storage and a float64 reference at --float-n points")
    p.add_argument("--float-n", type=int,
                   help="--scale: points where float32 storage and the float64 reference run (default 100,000 on GPU)")
    p.add_argument("--skip-fallback", action="store_true", help="--scale: leave out the chunked torch path at full N")
    p.add_argument("--steps", help="--e2e: comma-separated DDIM step counts (default 10,50 on GPU, 10 on CPU)")
    p.add_argument("--code", help="--e2e: a checkout whose studio package the runs use (default: this one)")
    p.add_argument("--timeout", type=float, default=300.0, help="--e2e: seconds per run before it is given up")
    p.set_defaults(func=cmd_bench)
