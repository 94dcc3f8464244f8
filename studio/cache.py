"""Content-keyed cache under $STUDIO_CACHE: every entry is keyed by a fingerprint, never by a name alone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file


def cache_root() -> Path:
    root = Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "analytic-diffusion-studio"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(*parts: Any) -> str:
    """A stable hash of JSON-able parts, tensors and bytes."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(part, (bytes, bytearray)):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


def entry_path(namespace: str, key: str, suffix: str = ".safetensors") -> Path:
    folder = cache_root() / namespace
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then swap it into place; a crash leaves no half folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        for child in tmp.rglob("*"):
            os.chmod(child, 0o755 if child.is_dir() else 0o644)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_tensors(namespace: str, key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load the tensors stored under (namespace, key), building and storing them on a miss."""
    path = entry_path(namespace, key)
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:
            path.unlink(missing_ok=True)
    tensors = build()
    atomic_write(path, lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(p)))
    return tensors


def is_cached(namespace: str, key: str) -> bool:
    return (cache_root() / namespace / f"{key}.safetensors").exists()
