"""Content-keyed cache under $STUDIO_CACHE: every entry is keyed by a fingerprint, never by a name alone.
Importing it does not import torch (the page reads its catalog from here before the engine loads)."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from studio.limits import Limits

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


def cache_root() -> Path:
    root = Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "analytic-diffusion-studio"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(*parts: Any) -> str:
    """A stable hash of JSON-able parts, tensors and bytes (or memoryviews of them)."""
    h = hashlib.sha256()
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    for part in parts:
        if torch is not None and isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(torch.uint8).reshape(-1).numpy())  # hashed in place: no copy of the data
        elif isinstance(part, (bytes, bytearray, memoryview)):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


class Recent(OrderedDict):
    """The most recently used values by key, kept in memory: made on a miss (outside the lock, so a slow make
    holds up no other key; a second caller of a key being made waits for that make, and makes it itself if that
    make failed) and dropped oldest first beyond `keep` entries, or beyond `max_bytes()` of `size` (the newest
    always stays). Used for fitted denoisers, loaded networks, fits, plans, datasets."""

    def __init__(self, keep: int | None = None, size: Callable[[Any], int] | None = None,
                 max_bytes: Callable[[], int] | None = None) -> None:
        super().__init__()
        self.keep, self.size, self.max_bytes = keep, size, max_bytes
        self.lock = threading.Lock()
        self.making: dict[Any, threading.Event] = {}  # keys being made, set when their make ends

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        while True:
            with self.lock:
                if key in self:
                    self.move_to_end(key)
                    return self[key]
                made = self.making.get(key)
                if made is None:
                    made = self.making[key] = threading.Event()
                    break
            made.wait()  # another caller is making it: its value, or our own try if it failed
        try:
            value = make()
            with self.lock:
                self[key] = value
                while len(self) > 1 and self._over():
                    self.popitem(last=False)
        finally:
            with self.lock:
                del self.making[key]
            made.set()
        return value

    def _over(self) -> bool:
        if self.keep is not None and len(self) > self.keep:
            return True
        return self.size is not None and sum(self.size(v) for v in self.values()) > self.max_bytes()


_SWEPT: set[Path] = set()


def entry_path(namespace: str, key: str, suffix: str = ".safetensors") -> Path:
    """Where a cache entry lives; the first use of a namespace in a process removes what killed writes left."""
    folder = cache_root() / namespace
    folder.mkdir(parents=True, exist_ok=True)
    if folder not in _SWEPT:
        _SWEPT.add(folder)
        sweep_leftovers(folder)
    return folder / f"{key}{suffix}"


_LEFTOVER = re.compile(r"^\..+\.studio-(\d+)-[a-z0-9_]+\.(tmp|old)$")


def _temp_prefix(path: Path) -> str:
    """Prefix of a temporary sibling of `path`; the writer's pid in it tells a live save from a leftover."""
    return f".{path.name}.studio-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def sweep_leftovers(folder: str | Path) -> list[Path]:
    """Remove temporary siblings left in `folder` by saves whose process died (named by `_temp_prefix`)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if not match or _pid_alive(int(match.group(1))) or entry.is_symlink():
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _plain_target(path: str | Path) -> Path:
    """An absolute, normalised target (so `.` has a name and a parent); refuses a path that is not a folder."""
    path = Path(os.path.abspath(path))
    if path.parent == path:
        raise ValueError(f"{path}: cannot write over a filesystem root")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{path}: exists and is not a folder; refusing to replace it")
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then swap it into place; a crash leaves no half folder, and the next
    save in that folder removes what a killed save left. Never replaces a file, FIFO or symlink."""
    path = _plain_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    old: Path | None = None
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        for child in tmp.rglob("*"):
            os.chmod(child, 0o755 if child.is_dir() else 0o644)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".old"))
            os.replace(path, old / "previous")
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old / "previous", path)
                raise
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (path.exists() or not (old / "previous").exists()):  # never lose the only copy
            shutil.rmtree(old, ignore_errors=True)


_WRITING: dict[Path, threading.Thread] = {}  # entries being stored in the background, by path
_WRITING_LOCK = threading.Lock()


def _written(path: Path) -> None:
    """Wait until a background store of `path` (if any) has finished."""
    with _WRITING_LOCK:
        writer = _WRITING.get(path)
    if writer is not None:
        writer.join()


@atexit.register
def finish_writes() -> None:
    """Wait for the entries still being stored: a process leaves its cache complete when it ends normally."""
    with _WRITING_LOCK:
        writers = list(_WRITING.values())
    for writer in writers:
        writer.join()


def _store(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file  # imported here: importing the cache does not import torch

    atomic_write(path, lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(p)))
    trim_cache(keep=path)


def _store_behind(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    try:
        _store(path, tensors)
    except Exception as err:  # noqa: BLE001 - the value is in use already; a failed store only costs a rebuild
        log.warning("cache: could not store %s: %s", path, err)
    finally:
        with _WRITING_LOCK:
            _WRITING.pop(path, None)


def cached_tensors(namespace: str, key: str, build: Callable[[], dict[str, torch.Tensor]],
                   in_background: bool = False) -> dict[str, torch.Tensor]:
    """Load the tensors stored under (namespace, key), building and storing them on a miss; a hit marks the
    entry as recently used, a store trims the cache to STUDIO_MAX_CACHE_BYTES. `in_background` stores a built
    value from a thread (copy to the host and write: 2.7 s for a 3x64x64 Gaussian fit) while the caller goes on;
    the tensors must then not be changed in place. Stores still running are awaited at exit and by readers."""
    from safetensors.torch import load_file

    path = entry_path(namespace, key)
    _written(path)
    if path.exists():
        try:
            tensors = load_file(str(path))
            os.utime(path)
            return tensors
        except Exception:
            path.unlink(missing_ok=True)
    tensors = build()
    if not in_background:
        _store(path, tensors)
        return tensors
    writer = threading.Thread(target=_store_behind, args=(path, tensors), name=f"store-{namespace}", daemon=True)
    with _WRITING_LOCK:
        _WRITING[path] = writer
    writer.start()
    return tensors


def trim_cache(keep: Path | None = None) -> list[Path]:
    """Remove the least recently used tensor entries (dataset builds, fits, masks) until the cache holds at most
    STUDIO_MAX_CACHE_BYTES; never `keep`, and never pulled runs or extracted uploads (they are not entries)."""
    budget = Limits.from_env().max_cache_bytes
    entries = []
    for path in cache_root().glob("*/*.safetensors"):
        try:
            entries.append((path.stat().st_mtime, path.stat().st_size, path))
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries):
        if total <= budget:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def is_cached(namespace: str, key: str) -> bool:
    path = cache_root() / namespace / f"{key}.safetensors"
    _written(path)
    return path.exists()
