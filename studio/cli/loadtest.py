"""`loadtest`: many browser-like sessions against a studio on this machine (studio.serving.loadtest)."""

from __future__ import annotations

import argparse

from studio.serving.loadtest import MAX_CLIENTS, MAX_DURATION_S, MAX_JOBS, run_load


def cmd_loadtest(args: argparse.Namespace) -> int:
    report = run_load(args.url, args.clients, args.duration, args.steps, args.n, args.max_jobs, args.seed,
                      args.job_timeout, args.slow_every, args.slow_steps or 20 * args.steps, args.server_pid)
    print("\n".join(report.lines()), flush=True)
    return 0 if report.ok else 1


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loadtest", help="concurrent sessions against a studio on this machine; checks every "
                                        "client gets its own results")
    p.add_argument("--url", default="http://127.0.0.1:7860", help="the studio (loopback only)")
    p.add_argument("--clients", type=int, default=16, help=f"concurrent sessions (1..{MAX_CLIENTS})")
    p.add_argument("--duration", type=float, default=60, help=f"seconds to keep submitting (1..{MAX_DURATION_S})")
    p.add_argument("--steps", type=int, default=5, help="sampler steps per job")
    p.add_argument("--n", type=int, default=4, help="samples per job")
    p.add_argument("--max-jobs", type=int, default=1000, help=f"jobs in all, at most (1..{MAX_JOBS})")
    p.add_argument("--seed", type=int, default=1000, help="client i uses seed + i")
    p.add_argument("--job-timeout", type=float, default=120, help="seconds one job may take")
    p.add_argument("--slow-every", type=int, default=0, help="every k-th client runs a slow job (0: none)")
    p.add_argument("--slow-steps", type=int, help="steps of a slow job (default 20 x --steps)")
    p.add_argument("--server-pid", type=int, help="the studio's process id: report its peak RSS (default: none, "
                                                  "no RSS report)")
    p.set_defaults(func=cmd_loadtest)
