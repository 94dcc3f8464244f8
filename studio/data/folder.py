"""`folder`: the user's own png/jpg/webp images from a folder or an uploaded .zip.

Images are center-cropped and resized like every image dataset; class labels come from the
first subfolder level (single wrapping folders, as zips often have, are stepped into). Files
that are not images or do not decode are skipped and counted in the dataset's notes. Zips are
checked entry by entry before anything is written (no absolute paths, no '..', file count and
unpacked bytes within the limits) and extracted into the cache under their content hash.
Nothing is ever unpickled: only PIL's PNG/JPEG/WebP decoders read user bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO

import torch
from PIL import Image, ImageOps

from studio.cache import atomic_dir, cache_root, digest
from studio.data.buildcache import cached_built
from studio.data.imageopts import apply_image_options, fit_codes, image_params, select_indices, unit_table
from studio.data.registry import Built, DatasetEntry, register
from studio.limits import LimitError, Limits
from studio.params import Param

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DECODERS = ("PNG", "JPEG", "WEBP")  # the only decoders that ever read user bytes
FILES_ENV, BYTES_ENV = "STUDIO_MAX_UPLOAD_FILES", "STUDIO_MAX_UPLOAD_BYTES"
TOP_LEVEL_CLASS = "(top level)"  # class of images lying beside the class subfolders
_BUILD_VERSION = "folder-2"  # 2: 8-bit images that need no resampling are kept as codes
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def open_picture(source: str | Path | IO[bytes], what: str, formats: tuple[str, ...] | None = DECODERS) -> Image.Image:
    """Open a user picture (PNG, JPEG or WebP only) reading just its header, and refuse it before a pixel is
    decoded when it declares more than STUDIO_MAX_IMAGE_PIXELS: a small file can unpack to gigabytes."""
    image = Image.open(source, formats=formats)
    try:
        width, height = image.size
        Limits.from_env().check("max_image_pixels", width * height, f"{what} ({width}x{height} pixels)")
    except BaseException:
        image.close()
        raise
    return image


def upload_limits() -> tuple[int, int]:
    """(max files, max bytes) of one folder or archive: the instance limits (studio.limits)."""
    lim = Limits.from_env()
    return lim.max_upload_files, lim.max_upload_bytes


def _hidden(name: str) -> bool:
    """Dot files and macOS resource forks: archive litter, skipped without a warning."""
    return name.startswith(".") or name == "__MACOSX"


def _safe_member(name: str) -> PurePosixPath:
    """The entry's path inside the target folder, or ValueError if it would land outside it."""
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in path.parts or not path.parts:
        raise ValueError(
            f"dataset.path: zip entry {name!r} escapes the target folder (absolute path or '..'); archive rejected")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract_zip(path: Path) -> Path:
    """Check every entry against the limits and the target folder, then extract once per content hash."""
    max_files, max_bytes = upload_limits()
    packed = path.stat().st_size
    if packed > max_bytes:
        raise ValueError(f"dataset.path: {path.name} is {packed} bytes, over the limit of {max_bytes} bytes ({BYTES_ENV})")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"dataset.path: {path.name} is not a valid .zip archive") from None
    with archive:
        checked = [(info, _safe_member(info.filename)) for info in archive.infolist()]
        members = [(info, inner) for info, inner in checked if not info.is_dir()]
        if len(members) > max_files:
            raise ValueError(f"dataset.path: {path.name} holds {len(members)} files, over the limit of "
                             f"{max_files} files ({FILES_ENV})")
        unpacked = sum(info.file_size for info, _ in members)
        if unpacked > max_bytes:
            raise ValueError(f"dataset.path: {path.name} unpacks to {unpacked} bytes, over the limit of "
                             f"{max_bytes} bytes ({BYTES_ENV})")
        target = cache_root() / "uploads" / _file_sha256(path)[:32]
        if not target.is_dir():
            atomic_dir(target, lambda tmp: _extract(archive, members, tmp, max_bytes, path.name))
    return target


def _extract(archive: zipfile.ZipFile, members: list, folder: Path, max_bytes: int, label: str) -> None:
    """Stream each checked entry to disk, counting real bytes: declared sizes may lie."""
    written = 0
    for info, inner in members:
        dest = folder.joinpath(*inner.parts)
        if not dest.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"dataset.path: zip entry {info.filename!r} escapes the target folder; archive rejected")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(dest, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    written += len(block)
                    if written > max_bytes:
                        raise ValueError(f"dataset.path: {label} unpacks to more than the limit of {max_bytes} "
                                         f"bytes ({BYTES_ENV})")
                    out.write(block)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
            raise ValueError(f"dataset.path: zip entry {info.filename!r} of {label} cannot be read "
                             f"(damaged, encrypted or an unsupported compression: {err})") from None
        except OSError as err:
            raise ValueError(f"dataset.path: zip entry {info.filename!r} of {label} cannot be written "
                             f"(it clashes with another entry: {err.strerror})") from None


def scan_folder(root: Path) -> tuple[Path, list[tuple[str, int, int]]]:
    """(base folder, sorted [(relative path, bytes, mtime_ns)]) within the limits.

    The base is `root` after stepping into single wrapping folders, so class folders sit directly under it.
    """
    max_files, max_bytes = upload_limits()
    base = root
    while True:
        entries = [e for e in base.iterdir() if not _hidden(e.name)]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            break
        base = entries[0]
    files, total = [], 0
    for folder, subfolders, names in os.walk(base):
        subfolders[:] = sorted(d for d in subfolders if not _hidden(d))
        for name in names:
            path = Path(folder) / name
            if _hidden(name) or not path.is_file():
                continue
            stat = path.stat()
            files.append((path.relative_to(base).as_posix(), stat.st_size, stat.st_mtime_ns))
            total += stat.st_size
            if len(files) > max_files:
                raise ValueError(f"dataset.path: {root} holds more than the limit of {max_files} files ({FILES_ENV})")
            if total > max_bytes:
                raise ValueError(f"dataset.path: {root} holds more than the limit of {max_bytes} bytes ({BYTES_ENV})")
    return base, sorted(files)


def _decode_all(base: Path, files: list[str], resolution: int, channels: int, labels: bool) -> Built:
    """Every readable image fitted to resolution x resolution; what was skipped goes into the notes."""
    pictures, folders, not_images, unreadable = [], [], [], []
    for rel in files:
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            not_images.append(rel)
            continue
        try:
            with open_picture(base / rel, f"dataset.path: {rel}") as image:
                pictures.append(_fit_picture(ImageOps.exif_transpose(image), resolution, channels))
        except LimitError:
            raise
        except UNREADABLE:
            unreadable.append(rel)
            continue
        folders.append(rel.split("/", 1)[0] if "/" in rel else None)
    notes = _skip_notes(len(files), not_images, unreadable)
    if not pictures:
        raise ValueError(f"dataset.path: no readable {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images found"
                         + (f" ({notes[0]})" if notes else ""))
    label_t, class_names = None, None
    if labels and any(folders):
        named = [f or TOP_LEVEL_CLASS for f in folders]
        class_names = sorted(set(named))
        label_t = torch.tensor([class_names.index(n) for n in named])
    rest = {"labels": label_t, "class_names": class_names, "notes": tuple(notes)}
    if all(p.dtype == torch.uint8 for p in pictures):
        return Built.from_codes(torch.cat(pictures), 255, channels, table=unit_table(), **rest)
    table = unit_table()
    return Built(x=torch.cat([table[p.to(torch.int32)] if p.dtype == torch.uint8 else p for p in pictures]), **rest)


def _fit_picture(image: Image.Image, resolution: int, channels: int) -> torch.Tensor:
    """One picture fitted: its 8-bit codes [1, C, R, R] where fitting is exact on them, else float32 in [-1, 1]."""
    codes = fit_codes(image, resolution, channels)
    if codes is not None:
        return codes
    return apply_image_options([image], None, None, {"resolution": resolution, "channels": channels})[0]


def _skip_notes(total: int, not_images: list[str], unreadable: list[str]) -> list[str]:
    if not (not_images or unreadable):
        return []
    parts = []
    for names, why in ((not_images, "not png/jpg/webp"), (unreadable, "unreadable or corrupt")):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{len(names)} {why} ({shown})")
    return [f"skipped {len(not_images) + len(unreadable)} of {total} files: " + "; ".join(parts)]


def _source_folder(path: str) -> Path:
    if not path.strip():
        raise ValueError("dataset.path: give a folder or a .zip of png/jpg/webp images")
    where = Path(path).expanduser()
    if where.is_dir():
        return where
    if where.is_file() and (where.suffix.lower() == ".zip" or zipfile.is_zipfile(where)):
        return extract_zip(where)
    if where.is_file():
        raise ValueError(f"dataset.path: {where} is a file but not a .zip archive; give a folder or a .zip")
    raise ValueError(f"dataset.path: {where} does not exist")


def _build(path: str, labels: bool, **opts) -> Built:
    base, listing = scan_folder(_source_folder(path))
    key = digest(_BUILD_VERSION, str(base.resolve()), listing, opts["resolution"], opts["channels"], labels)
    full = cached_built("datasets/folder", key, lambda: _decode_all(
        base, [rel for rel, _, _ in listing], opts["resolution"], opts["channels"], labels))
    for note in full.notes:
        log.warning("dataset folder %s: %s", path, note)
    keep = select_indices(full.n, full.labels, full.class_names, opts)
    return replace(full.take(keep), notes=(f"images from {path}",) + tuple(full.notes))


register(DatasetEntry(
    name="folder",
    kind="image",
    summary="your own png/jpg/webp images: a folder or a .zip, class labels from subfolders",
    source="user data: the folder or .zip archive given by the `path` option",
    license="the license of your images (not checked)",
    params=(
        Param("path", str, "", "a folder or a .zip of png/jpg/webp images"),
        Param("labels", bool, True, "label images by their first-level subfolder"),
        *image_params(resolution=32, channels=3, max_size=None),
    ),
    build=_build,
    bundled=False,
    memoise=False,
))
