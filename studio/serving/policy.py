"""The policy gate of a shared instance: what a request may ask for (the instance limits), which server files
it may read (folder datasets, `unet` model folders, patch schedules; symlinks resolved) and which Hub token a
visitor's action may use. Every path calls it before any work: the worker (Run, /run_config, Compare), the
dataset preview and the Forward tab."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig
from studio.data.registry import get_entry, resolve_options
from studio.limits import LimitError, Limits, shared_instance, space_oauth

__all__ = ["check_config", "check_dataset", "check_loaded", "check_sources", "data_roots", "shared_instance",
           "space_oauth", "visitor_token"]


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
    limits.check_run(cfg.n, cfg.sampler.steps)
    check_sources(cfg, limits)
    check_cost(limits, cfg)


# The cost model of one run (README, "Limits"): memory and CPU seconds from n samples, K steps, N training items,
# D values per item and the denoiser. Memory: the data (float32), x_t and x̂0 of every step kept for the
# trajectory, a working set, and pca_locality's D x D filter. Seconds: the softmax denoisers' n·N·D products per
# step, times a factor for the costlier local denoisers, at CPU_RATE products per second.
BYTES = 4
WORKING_COPIES = 16       # n·D float32 tensors alive at once inside a step (noise, x̂0, ε̂, chunks)
CPU_RATE = 2e9            # n·N·D products per second on a 2-vCPU Space
BASE_S = 2.0              # load, fit and analysis of a small run
GIB = 2**30


@dataclass(frozen=True)
class Cost:
    gib: float
    seconds: float


def values_per_item(cfg: RunConfig) -> int:
    """D: values per training item (channels · resolution², 2 for points)."""
    if get_entry(cfg.dataset.name).kind == "points":
        return 2
    opts = cfg.dataset.options
    return int(opts.get("channels") or 3) * int(opts.get("resolution") or 32) ** 2


def _work_factor(cfg: RunConfig, D: int) -> float:
    """How many times the optimal denoiser's n·N·D products a step of this denoiser costs (roughly)."""
    name, params = cfg.denoiser.name, cfg.denoiser.params
    pixels = max(D // int(cfg.dataset.options.get("channels") or 1), 1)
    return {"scfdm": float(params.get("copies") or 10), "pca_locality": max(D / 4, 1.0), "ls": 25.0,
            "els": 25.0 * pixels}.get(name, 1.0)


def estimate_cost(cfg: RunConfig, n_items: int | None = None) -> Cost:
    """Memory (GiB) and CPU seconds a run will take, from n, steps, N, D and the denoiser (see above)."""
    N = n_items or dataset_size_hint(cfg) or Limits.from_env().max_dataset
    D, n, K = values_per_item(cfg), cfg.n, cfg.sampler.steps
    memory = BYTES * (N * D + (2 * K + WORKING_COPIES) * n * D)
    if cfg.denoiser.name == "pca_locality":
        memory += BYTES * D * D
    seconds = BASE_S + K * n * N * D * _work_factor(cfg, D) / CPU_RATE
    return Cost(gib=memory / GIB, seconds=seconds)


def check_cost(limits: Limits, cfg: RunConfig) -> None:
    """Refuse a run whose estimated memory or time is over STUDIO_MAX_JOB_GIB / STUDIO_MAX_JOB_SECONDS."""
    cost = estimate_cost(cfg)
    what = f"estimated {{}} of this run (n {cfg.n}, {cfg.sampler.steps} steps, {cfg.denoiser.name})"
    limits.check("max_job_gib", math.ceil(cost.gib * 10) / 10, what.format("memory in GiB"))
    limits.check("max_job_seconds", math.ceil(cost.seconds), what.format("seconds"))


def check_sources(cfg: RunConfig, limits: Limits | None = None) -> None:
    """What a (validated) config would read, for paths that do not sample (dataset preview, Forward): the
    dataset's known size and folder, and the server files of its denoiser."""
    check_dataset(cfg.dataset.name, cfg.dataset.options, limits)
    check_denoiser_files(cfg.denoiser.params)


def check_dataset(name: str, options: dict, limits: Limits | None = None) -> None:
    """A dataset request: its known size within STUDIO_MAX_DATASET, a folder only under the data roots."""
    limits = limits or Limits.from_env()
    size = _size_hint(name, options)
    if size is not None:
        limits.check("max_dataset", size, "dataset size")
    if name == "folder":
        check_data_path(options.get("path", ""))


def check_loaded(n_items: int) -> None:
    """After loading (folders and Hub datasets tell their size only then), before any fitting."""
    Limits.from_env().check("max_dataset", n_items, "dataset size")


def dataset_size_hint(cfg: RunConfig) -> int | None:
    """Training items a config asks for, known before loading: its `size` option, else the full bundled set
    (the option's upper bound); None when only loading can tell (Hub datasets, folders)."""
    return _size_hint(cfg.dataset.name, cfg.dataset.options)


def _size_hint(name: str, options: dict) -> int | None:
    size = resolve_options(name, options).get("size")
    if size is not None:
        return int(size)
    declared = next((p for p in get_entry(name).params if p.name == "size"), None)
    return None if declared is None or declared.high is None else int(declared.high)


def check_denoiser_files(params: dict) -> None:
    """Server files a denoiser would read: a `unet` model folder, an ls/els `patch_schedule`."""
    schedule = params.get("patch_schedule")
    if schedule and str(schedule).strip() != "auto":
        check_server_path(str(schedule), "denoiser.patch_schedule", "patch schedules")
    model = params.get("model")
    if model is not None and _is_local_model(str(model)):
        check_server_path(str(model), "denoiser.model", "model folders (else a bundled name or a Hub id owner/name)")


def _is_local_model(text: str) -> bool:
    """Whether `unet` would read `text` as a server folder rather than a bundled checkpoint or a Hub id."""
    from studio.models.checkpoints import CHECKPOINTS, is_checkpoint

    text = text.strip()
    if is_checkpoint(CHECKPOINTS / text) and ".." not in Path(text).parts:
        return False
    return Path(text).expanduser().exists() or text.startswith((".", "~", "/")) or text.count("/") != 1


DATA_ROOTS_ENV = "STUDIO_DATA_ROOTS"


def data_roots() -> list[Path] | None:
    """Server folders a web request may read a folder dataset from ($STUDIO_DATA_ROOTS, os.pathsep-separated);
    None = anywhere (a local studio); on a Space (SPACE_ID set) the default is none at all."""
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is None:
        return [] if shared_instance() else None
    return [Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip()]


def check_data_path(path: str) -> None:
    """Refuse a folder dataset path outside the allowed roots, or one holding a symlink that leads out of them:
    visitors of a shared instance must not read the server's files."""
    root = check_server_path(str(path), "dataset.path", "folder datasets")
    if root is not None and root.is_dir():
        _refuse_escaping_links(root)


def check_server_path(path: str, field: str, what: str) -> Path | None:
    """The resolved `path` when it lies under the data roots (None when any path is allowed); LimitError naming
    `field` otherwise. The message is the same whether the path exists or not, and never holds its content."""
    roots = data_roots()
    if roots is None:
        return None
    target = Path(str(path)).expanduser().resolve()
    if not any(target.is_relative_to(root) for root in roots):
        where = f"only from {', '.join(map(str, roots))}" if roots else "from no server folder"
        raise LimitError(f"{field}: this instance reads {what} {where} (set {DATA_ROOTS_ENV} to change it)")
    return target


def _refuse_escaping_links(folder: Path) -> None:
    """LimitError when a symlink under `folder` resolves outside the data roots (at most the upload file limit)."""
    roots, seen = data_roots() or [], 0
    limit = Limits.from_env().max_upload_files
    for base, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            entry = Path(base) / name
            seen += 1
            if seen > limit:
                return  # the dataset's own file-count check refuses it
            if entry.is_symlink() and not any(entry.resolve().is_relative_to(root) for root in roots):
                raise LimitError(f"dataset.path: {entry.relative_to(folder)} is a link that leads outside the "
                                 f"allowed folders (set {DATA_ROOTS_ENV} to change them)")
