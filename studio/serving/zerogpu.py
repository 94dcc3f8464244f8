"""ZeroGPU Spaces: the GPU exists only inside a `spaces.GPU` call, so there the job's steps run inside one.

The `spaces` package runs a decorated function in a forked process: the arguments go in serialised and every
yielded value comes back serialised. So the GPU call takes plain config dicts and yields the job's events
without the (large, server-side) datasets; what belongs to the page — the session's state, the Cancel
button, writing the run folder — stays in the server process. Off ZeroGPU (or without `spaces`) `stream`
is `worker.stream`: nothing changes.

Requested GPU time (seconds), from the request, per part of the job (a comparison has two):
    BASE_S + steps · (STEP_S + n · N · D / RATE)
with n samples, N training items (the `size` option or the full bundled set; the instance's dataset limit
when only loading can tell) and D values per item (channels · resolution², 2 for points); the sum over the
parts is clamped to [FLOOR_S, CEILING_S]. RATE budgets the optimal denoiser's two GEMMs per step with a wide
margin for the costlier local denoisers; a shorter request gets a visitor a GPU sooner.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # the worker imports torch; this module is imported when the page is built
    from studio.config import RunConfig
    from studio.serving.worker import Event, Job, SaveTo

log = logging.getLogger("studio.serving.zerogpu")

BASE_S = 10.0        # load the data, fit the denoiser, neighbour summary
STEP_S = 0.05        # per step: kernel launches, copying x_t and x̂0 back for the live view
RATE = 5e9           # sample × training item × value products per second
FLOOR_S, CEILING_S = 20, 120


@lru_cache(maxsize=1)
def _spaces() -> Any:
    """The `spaces` module on a ZeroGPU Space (SPACES_ZERO_GPU true, as `spaces.config` reads it), else None."""
    if os.environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "t", "true"):
        return None
    try:
        import spaces
    except ImportError:
        log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing: running without ZeroGPU")
        return None
    config = getattr(getattr(spaces, "config", None), "Config", None)
    return spaces if config is None or getattr(config, "zero_gpu", True) else None


def enabled() -> bool:
    """True on a ZeroGPU Space with `spaces` importable: jobs then run inside `spaces.GPU` calls."""
    return _spaces() is not None


def _as_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    from studio.config import RunConfig

    return cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(dict(cfg))


def estimate_seconds(configs: Sequence[RunConfig | Mapping[str, Any]]) -> int:
    """GPU seconds to request for a job (the formula in the module docstring); bad input gets the floor,
    since the job will only report the error."""
    from studio.limits import Limits
    from studio.serving.policy import dataset_size_hint, values_per_item

    try:
        parts = [_as_config(c) for c in configs]
    except ValueError:
        return FLOOR_S
    total = 0.0
    for cfg in parts:
        n_items = dataset_size_hint(cfg) or Limits.from_env().max_dataset
        total += BASE_S + cfg.sampler.steps * (STEP_S + cfg.n * n_items * values_per_item(cfg) / RATE)
    return int(min(max(round(total), FLOOR_S), CEILING_S))


def gpu(fn: Callable, duration: int | Callable[..., int] | None = None) -> Callable:
    """`spaces.GPU(fn, duration=...)` on ZeroGPU, `fn` everywhere else. `fn` must take and return plain,
    serialisable values (no gr.State objects): it runs in another process."""
    spaces = _spaces()
    if spaces is None:
        return fn
    return spaces.GPU(fn, duration=duration) if duration is not None else spaces.GPU(fn)


def _job_on_gpu(configs: list[dict[str, Any]]) -> Iterator[Event]:
    """Inside the GPU call: the whole job, inline; the datasets stay behind (the server reloads its copy)."""
    from studio.config import RunConfig
    from studio.serving import worker

    for event in worker.job_events(worker.Job([RunConfig.from_dict(c) for c in configs])):
        yield replace(event, dataset=None)


@lru_cache(maxsize=1)
def _gpu_job() -> Callable[[list[dict[str, Any]]], Iterator[Event]]:
    return gpu(_job_on_gpu, duration=estimate_seconds)


def stream(configs: Sequence[RunConfig], save_to: SaveTo | None = None,
           on_job: Callable[[Job], None] | None = None) -> Iterator[Event]:
    """The events of a job, like `worker.stream`: on ZeroGPU its steps run in one `spaces.GPU` call sized by
    `estimate_seconds`, and Cancel closes that call within one step."""
    from studio.serving import worker

    if not enabled():
        yield from worker.stream(configs, save_to, on_job=on_job)
        return
    try:
        worker.admit(configs)
    except ValueError as err:
        yield worker.Event("error", message=str(err))
        return
    job = worker.Job(list(configs))  # the page's handle: nothing runs on it here, cancel() closes the GPU call
    if on_job:
        on_job(job)
    events = _gpu_job()([cfg.to_dict() for cfg in job.configs])
    last_k = 0
    try:
        for event in events:
            if event.kind in ("ready", "result"):
                event = _server_side(event, job.configs[event.part], save_to)
            last_k = event.k if event.kind == "step" else last_k
            yield event
            if event.kind in worker.TERMINAL:
                return
            if job.cancelled:
                yield worker.Event("cancelled", k=last_k, message=f"cancelled after {last_k} step(s)")
                return
    finally:
        events.close()


def _server_side(event: Event, cfg: RunConfig, save_to: SaveTo | None) -> Event:
    """Give a `ready`/`result` event back its dataset and write the finished run here, in the server."""
    from studio.data.registry import load_dataset
    from studio.serving import worker

    try:
        dataset = load_dataset(cfg.dataset.name, **cfg.dataset.options)
        folder = None
        if event.kind == "result" and save_to is not None:
            folder = worker.save_result(event.run, dataset, save_to(event.part, event.run))
    except (OSError, ValueError) as err:
        log.exception("could not finish part %s on the server", event.part)
        return worker.Event("error", part=event.part, message=f"the run could not be saved: {type(err).__name__}: {err}")
    return replace(event, dataset=dataset, folder=folder)


_gpu_job()  # ZeroGPU looks for its decorated functions when the app starts
