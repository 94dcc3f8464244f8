"""The policy gate of a shared instance: what a request may ask for (the instance limits) and which server
folders it may read, checked before any work is queued."""

from __future__ import annotations

import os
from pathlib import Path

from studio.config import RunConfig
from studio.data.registry import get_entry, resolve_options
from studio.limits import LimitError, Limits


def shared_instance() -> bool:
    """Whether strangers use this server: a Hugging Face Space (SPACE_ID set)."""
    return bool(os.environ.get("SPACE_ID"))


def space_oauth() -> bool:
    """Whether Hugging Face OAuth really runs here (on a Space with `hf_oauth: true`); elsewhere Gradio mocks the
    sign-in with the server's own saved token, which a visitor must never get."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


def visitor_token(typed: str | None, oauth_token: str | None = None) -> str | bool | None:
    """The Hub token a page action may use. Locally: the typed one, else None (HF_TOKEN, then the saved login).
    On a shared instance: the visitor's typed token, else their OAuth sign-in, else False (anonymous), never
    the server's HF_TOKEN or saved login."""
    typed = (typed or "").strip()
    if not shared_instance():
        return typed or None
    if typed:
        return typed
    return oauth_token if oauth_token and space_oauth() else False


def check_config(limits: Limits, cfg: RunConfig) -> None:
    """Everything a web request can be checked for before it is queued (the job checks the loaded size)."""
    limits.check_run(cfg.n, cfg.sampler.steps, dataset_size_hint(cfg))
    if cfg.dataset.name == "folder":
        check_data_path(cfg.dataset.options.get("path", ""))


def dataset_size_hint(cfg: RunConfig) -> int | None:
    """Training items a config asks for, known before loading: its `size` option, else the full bundled set
    (the option's upper bound); None when only loading can tell (Hub datasets, folders)."""
    size = resolve_options(cfg.dataset.name, cfg.dataset.options).get("size")
    if size is not None:
        return int(size)
    declared = next((p for p in get_entry(cfg.dataset.name).params if p.name == "size"), None)
    return None if declared is None or declared.high is None else int(declared.high)


DATA_ROOTS_ENV = "STUDIO_DATA_ROOTS"


def data_roots() -> list[Path] | None:
    """Server folders a web request may read a folder dataset from ($STUDIO_DATA_ROOTS, os.pathsep-separated);
    None = anywhere (a local studio); on a Space (SPACE_ID set) the default is none at all."""
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is None:
        return [] if os.environ.get("SPACE_ID") else None
    return [Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip()]


def check_data_path(path: str) -> None:
    """Refuse a folder dataset path outside the allowed roots: visitors of a shared instance must not read
    the server's files."""
    roots = data_roots()
    if roots is None:
        return
    target = Path(str(path)).expanduser().resolve()
    if not any(target.is_relative_to(root) for root in roots):
        where = f"only from {', '.join(map(str, roots))}" if roots else "from no server folder"
        raise LimitError(f"dataset.path: this instance reads folder datasets {where} "
                         f"(set {DATA_ROOTS_ENV} to change it)")
