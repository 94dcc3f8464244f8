"""`python -m studio COMMAND ...`: one module per command group, each exposing `register_cli(subparsers)`;
the run flags they share live in studio.cli.flags."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from studio import __version__

# Each module adds its sub-command(s) with `sub.add_parser(...)` and `set_defaults(func=handler)`,
# where handler(args) -> int. Bad input raises ValueError: it is printed as one line, exit status 2.
COMMAND_MODULES: tuple[str, ...] = (
    "studio.cli.run",
    "studio.cli.bench",
    "studio.cli.train",
    "studio.cli.compare",
    "studio.cli.study",
    "studio.cli.calibrate",
    "studio.cli.datasets",
    "studio.cli.hub",
    "studio.cli.loadtest",
)


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line instead of usage + message
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from studio.cli.flags import HelpFormatter

    parser = _Parser(prog="python -m studio", description="Analytic Diffusion Studio command line")
    parser.add_argument("--version", action="version", version=f"analytic-diffusion-studio {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    for command in sub.choices.values():  # help text, choices and defaults, the same layout everywhere
        command.formatter_class = HelpFormatter
    return parser


def one_line(message: str) -> str:
    """An error message as one line, with anything shaped like a Hub token removed."""
    from studio.data.hub_client import scrub

    return scrub(" ".join(part.strip() for part in message.splitlines() if part.strip()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except ValueError as err:  # includes UsageError
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
