"""CPU work as fixed parts run by worker threads that each run single-threaded torch operations.

torch's own intra-op threads wait at every operation for all of their cores; on a shared 2-core machine a core
held by another process stalls each operation 10-30x. Independent parts in worker threads do not wait on each
other. The parts are fixed by the caller, so results do not depend on how many threads ran them.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch

P = TypeVar("P")
R = TypeVar("R")

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)
_POOL_LOCK = threading.Lock()


@contextlib.contextmanager
def one_thread() -> Iterator[int]:
    """This thread's torch operations single-threaded for a while (the setting is per thread); yields the
    thread count set before, the workers its parts may use."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield before
    finally:
        torch.set_num_threads(before)


def run_parts(fn: Callable[[P], R], parts: Sequence[P], threads: int) -> list[R]:
    """[fn(p) for p in parts], on up to `threads` single-threaded workers; in this thread, with its own thread
    setting, when one is enough (a CPU caller runs inside one_thread)."""
    if threads <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    return list(_pool(threads).map(lambda p: _single_threaded(fn, p), parts))


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] < threads:
            if _POOL is not None:
                _POOL[1].shutdown(wait=False)
            _POOL = (threads, ThreadPoolExecutor(threads, thread_name_prefix="cpu-part"))
        return _POOL[1]


def _single_threaded(fn: Callable[[P], R], part: P) -> R:
    torch.set_num_threads(1)  # this worker thread's own setting (OpenMP and MKL keep it per thread)
    return fn(part)
