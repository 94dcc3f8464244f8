"""The engine loads in the background: the page is served before torch, the registries and the engine are imported,
and the handlers that compute call `load()` first, which returns at once when the engine is loaded and otherwise
loads it or waits for the load under way (`ready()` tells a handler whether to say "loading the engine…" first).

The background thread starts when the server listens but gives the first page FIRST_SCREEN_S to show before it
imports (an import holds the interpreter and slows the server's answers to the browser); the first page's dataset
preview needs the engine and loads it as soon as that page has shown."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any, Callable, Iterator

from studio.ui.session import progress_html

log = logging.getLogger("studio.ui")

# what the handlers compute with, loaded once before any handler needs it; pandas first: the start defers it
# (studio.ui.gradio_startup), Gradio's queue imports it later in its own thread, and plotly takes whatever
# sys.modules holds, so a figure drawn while pandas is half imported fails
ENGINE = ("pandas", "studio.engine", "studio.serving.worker", "studio.runs", "studio.analysis.neighbours",
          "studio.analysis.locality", "studio.diffusion.inversion", "studio.ui.results", "plotly.graph_objects")
LOADING = "loading the engine… (once after the studio starts; the run follows)"
FIRST_SCREEN_S = 3.0  # what the first page takes to show here (two CPU cores), with room

_lock = threading.Lock()
_ready = threading.Event()


def ready() -> bool:
    """Whether the engine is loaded (a handler can compute at once)."""
    return _ready.is_set()


def load() -> None:
    """Import the engine; the first caller does it, the others wait for it."""
    if _ready.is_set():
        return
    with _lock:
        if not _ready.is_set():
            started = time.perf_counter()
            for name in ENGINE:
                importlib.import_module(name)
            _ready.set()
            log.info("engine loaded in %.1f s", time.perf_counter() - started)


def load_visibly(progress: Any) -> Iterator[dict]:
    """For a run's handler: while the engine still loads, the progress bar `progress` says so; then wait."""
    if not ready():
        yield {progress: progress_html("preparing", 0, 0, LOADING)}
        load()


def warm_gpu_kernels() -> None:
    """Pay the GPU's first-use costs (CUDA libraries, the Triton kernels of pca_locality and optimal, for data
    counts of both divisibility classes) ahead of the first run, where there is a GPU outside ZeroGPU calls."""
    import torch

    from studio.diffusion.warm import warm_up
    from studio.serving import zerogpu

    if zerogpu.enabled() or not torch.cuda.is_available():
        return
    for n_multiple_of_16 in (True, False):
        warm_up("pca_locality", "cuda", 3, n_multiple_of_16)


def prepare_default_run(cfg: Any = None) -> None:
    """Load the default dataset, fit the default denoiser and build its neighbour index, so the first Run
    streams at once (on ZeroGPU on the CPU: the GPU exists only inside spaces.GPU calls)."""
    from studio import engine
    from studio.config import RunConfig
    from studio.serving import zerogpu
    from studio.ui import charts

    device = "cpu" if zerogpu.enabled() else "auto"
    run = engine.execute(cfg or RunConfig.from_dict({"sampler": {"steps": 3}, "device": device}))
    charts.per_step(run.metrics["per_step"])


def start(warm_up: bool = True, on_loaded: Callable[[], None] | None = None,
          delay: float = FIRST_SCREEN_S) -> threading.Thread:
    """In a background thread, after `delay` seconds: load the engine (then call `on_loaded`), warm the GPU kernels
    and, with `warm_up`, the default run."""

    def work() -> None:
        time.sleep(delay)
        try:
            load()
            if on_loaded is not None:
                on_loaded()
            warm_gpu_kernels()
            if warm_up:
                prepare_default_run()
        except Exception:  # noqa: BLE001 - a handler that needs the engine loads it again and reports the error
            log.exception("loading the engine in the background failed")

    thread = threading.Thread(target=work, name="studio-engine", daemon=True)
    thread.start()
    return thread
