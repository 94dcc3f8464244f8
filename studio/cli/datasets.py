"""`python -m studio datasets [NAME]`: every dataset's size, shape, classes, provenance and cache state.

Bundled datasets are loaded (from the cache when built before); others are only loaded when
already cached, so listing never downloads or builds anything large.
"""

from __future__ import annotations

import argparse
from typing import Any

from studio.data.registry import dataset_names, get_entry, load_dataset, resolve_options

COLUMNS = ("name", "N", "shape", "classes", "source", "license", "cached")
_CELL = 44  # widest source/license cell; `datasets NAME` prints them in full


def dataset_row(name: str) -> dict[str, str]:
    """One table row at the dataset's default options, loading it only when that is cheap and offline."""
    entry = get_entry(name)
    row = {"name": name, "N": "-", "shape": "-", "classes": "-",
           "source": entry.source.splitlines()[0], "license": entry.license.splitlines()[0]}
    opts = resolve_options(name, {})
    was_cached = entry.cached(opts) if entry.cached else None
    if was_cached is None:
        row["cached"] = "-"
    elif was_cached:
        row["cached"] = "yes"
    else:
        row["cached"] = "no, built now" if entry.bundled else "no"
    if not (entry.bundled or was_cached):
        row["N"] = "not built"
        return row
    try:
        ds = load_dataset(name)
    except (ValueError, OSError) as err:
        row["N"] = f"error: {err}"
        return row
    row["N"] = str(ds.n)
    row["shape"] = "x".join(map(str, ds.shape))
    row["classes"] = str(len(ds.class_names)) if ds.class_names else "-"
    return row


def format_table(rows: list[dict[str, str]]) -> str:
    """Left-aligned columns, long cells cut with an ellipsis."""
    cut = [{c: _clip(r[c]) for c in COLUMNS} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in cut)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in cut]
    return "\n".join(lines)


def describe_dataset(name: str) -> str:
    """Everything about one dataset: summary, options with their help, full source and license, state."""
    entry = get_entry(name)
    row = dataset_row(name)
    lines = [f"{name} ({entry.kind}): {entry.summary}",
             f"N={row['N']}  shape={row['shape']}  classes={row['classes']}  cached={row['cached']}",
             "options:"]
    lines += [f"  {p.describe()}  {p.help}".rstrip() for p in entry.params]
    lines += ["source:"] + [f"  {line}" for line in entry.source.splitlines()]
    lines += ["license:"] + [f"  {line}" for line in entry.license.splitlines()]
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text if len(text) <= _CELL else text[:_CELL - 1] + "…"


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.name:
        print(describe_dataset(args.name))
    else:
        print(format_table([dataset_row(name) for name in dataset_names()]))
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("datasets", help="list datasets: N, shape, classes, source, license, cached")
    p.add_argument("name", nargs="?", help="show one dataset in full (options, every source file, licenses)")
    p.set_defaults(func=cmd_datasets)
