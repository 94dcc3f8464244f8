"""First-use costs paid off the critical path: a new process's first GPU run spends a second or more creating the
CUDA context and the cuBLAS/cuSOLVER handles, loading kernels lazily and compiling or loading Triton kernels.
One tiny run of the same denoiser and loop on synthetic data pays all of them, in a background thread, while the
real data load (or, in the studio, while the page is idle)."""

from __future__ import annotations

import logging
import threading

import torch

from studio.data.dataset import Dataset
from studio.denoisers.registry import make_denoiser
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.diffusion.samplers import Sampler, make_sampler
from studio.diffusion.schedules import Schedule

log = logging.getLogger(__name__)

# Denoisers that fit any data (no checkpoint, no download): the ones a warm-up can run.
WARMABLE = ("optimal", "nearest", "wiener", "pca_locality", "scfdm", "ls", "els")
STEPS = 3  # a DDIM run of 3 steps: the loop's own kernels and end-of-run copies, and three noise levels
# What each warm-up runs (denoiser, parameters), where not the denoiser alone. The masked denoisers send all-ones
# mask columns to `optimal`'s kernel. ELS sends its whole-image windows there too, but its own kernel's variants
# follow the image size and the run's patch sizes, which synthetic 8x8 data do not meet (H200: a cold 3x32x32 run
# waited 2.6 s for an 8x8 warm-up and still compiled its own): its warm-up runs the torch kernel (the GPU's linear
# algebra libraries, the masks of its automatic patch sizes) and a run compiles the variants its levels need,
# together, at its first call.
RUNS: dict[str, tuple[tuple[str, dict], ...]] = {
    "pca_locality": (("pca_locality", {}), ("optimal", {})),
    "ls": (("ls", {}), ("optimal", {})),
    "els": (("els", {"kernel": "torch"}), ("optimal", {})),
}
_WARMED: set[tuple[str, str, bool]] = set()  # (denoiser, device, n a multiple of 16): the channels change no kernel
_LOCK = threading.Lock()


def synthetic(channels: int, n: int) -> Dataset:
    """n white-noise images [C, 8, 8] in [-1, 1]: near-diagonal covariance, so locality masks have sparse tiles."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, 8, 8, generator=g) * 2 - 1
    return Dataset(x, name="warm-up", kind="image", fingerprint=f"warm-up-v1-{channels}x8x8-{n}")


def warm_sampler() -> Sampler:
    """The warm-up's sampler: DDIM over the default schedule in STEPS steps."""
    return make_sampler("ddim", Schedule.build(), STEPS)


def warm_up(name: str, device: torch.device | str, channels: int = 3, n_multiple_of_16: bool = True) -> bool:
    """Sample with `name` for STEPS DDIM steps on synthetic data on `device` (a CUDA device; no-op elsewhere),
    once per process and kind of run. `n_multiple_of_16` matches the real data's count: Triton compiles one kernel per
    divisibility class of its integer arguments. True when it ran, False when there was nothing to do."""
    device = torch.device(device)
    key = (name, str(device), n_multiple_of_16)
    if device.type != "cuda" or name not in WARMABLE:
        return False
    with _LOCK:  # one warm-up of a kind at a time; a second caller waits for the first and returns
        if key in _WARMED:
            return False
        data = synthetic(channels, 64 if n_multiple_of_16 else 65)
        for each, params in RUNS.get(name, ((name, {}),)):
            denoiser = make_denoiser(each, device=device, **params).fit(data)
            noise = NoiseSource(0, 8, data.shape, device)
            loop.collect(loop.steps(denoiser, warm_sampler(), noise, clock={}))
        torch.cuda.synchronize(device)
        _WARMED.add(key)
        return True


def warm_up_in_background(name: str, device: torch.device | str, channels: int = 3,
                          n_multiple_of_16: bool = True) -> threading.Thread | None:
    """Start warm_up in a daemon thread (None when there is nothing to warm). A failure is logged, never raised:
    the real run then simply pays its first-use costs itself."""
    device = torch.device(device)
    if device.type != "cuda" or name not in WARMABLE or (name, str(device), n_multiple_of_16) in _WARMED:
        return None

    def work() -> None:
        try:
            warm_up(name, device, channels, n_multiple_of_16)
        except Exception as err:  # noqa: BLE001 - best effort: the run itself reports any real error
            log.warning("warm-up of %s on %s failed: %s", name, device, err)

    thread = threading.Thread(target=work, name=f"warm-up-{name}", daemon=True)
    thread.start()
    return thread
