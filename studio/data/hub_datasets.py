"""Image datasets downloaded from Hugging Face Hub dataset repositories (parquet shards of encoded images).

Each is fetched once through huggingface_hub (progress bar on stderr, optional callback for the UI, complete
shards never fetched twice), decoded, resized and stored as one uint8 safetensors array in the studio cache,
keyed by repository + revision + split + resolution + channels (+ row limit). Later loads, offline too,
read that array. Pin `dataset.revision` to a commit id for exact reproducibility.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from studio.cache import cached_tensors, digest, is_cached
from studio.data.dataset import Dataset
from studio.data.imageopts import apply_image_options, image_params, select_indices, unit_table
from studio.data.registry import Built, DatasetEntry, dataset_names, get_entry, load_dataset, register, resolve_options
from studio.params import Param

if TYPE_CHECKING:  # huggingface_hub is imported only when a download happens (0.5 s of every start)
    from studio.data.hub_client import Progress, RemoteFile

CACHE_NAMESPACE = "hub-datasets"
_DECODE_BATCH = 512
_PROGRESS: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("hub_dataset_progress", default=None)


class HubDatasetUnavailable(ValueError):
    """A Hub dataset is neither cached nor downloadable; the message says which repository and what to do."""


@dataclass(frozen=True)
class HubSource:
    name: str
    repo: str
    splits: tuple[str, ...]
    resolution: int
    channels: int
    summary: str
    source: str
    license: str
    class_names: tuple[str, ...] | None = None


SOURCES = (
    HubSource("mnist", "ylecun/mnist", ("train", "test"), 28, 1,
              "70,000 handwritten digits (60k train / 10k test), 28x28 gray, labels 0-9; ~20 MB download",
              "MNIST (LeCun, Cortes, Burges), Hugging Face dataset ylecun/mnist", "MIT (as listed on the Hub card)",
              tuple(str(i) for i in range(10))),
    HubSource("fashion_mnist", "zalando-datasets/fashion_mnist", ("train", "test"), 28, 1,
              "70,000 Zalando article images (60k train / 10k test), 28x28 gray, 10 classes; ~35 MB download",
              "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), Hugging Face dataset zalando-datasets/fashion_mnist",
              "MIT", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot")),
    HubSource("cifar10", "uoft-cs/cifar10", ("train", "test"), 32, 3,
              "60,000 tiny natural images (50k train / 10k test), 32x32 RGB, 10 classes; ~145 MB download",
              "CIFAR-10 (Krizhevsky 2009), Hugging Face dataset uoft-cs/cifar10",
              "unknown (research use; see https://www.cs.toronto.edu/~kriz/cifar.html)",
              ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    HubSource("celeba_hq", "mattymchen/celeba-hq", ("train", "validation"), 64, 3,
              "CelebA-HQ faces (about 28k train / 2k validation), resized to 64x64 RGB; ~2.5 GB download for the "
              "whole train split (a small `size` fetches only the first shards)",
              "CelebA-HQ (Karras et al. 2018, from CelebA by Liu et al. 2015), Hugging Face dataset "
              "mattymchen/celeba-hq",
              "CelebA terms: non-commercial research and educational use only"),
    HubSource("afhq", "huggan/AFHQv2", ("train",), 64, 3,
              "AFHQ v2 animal faces (cat, dog, wild; about 15k images, 512x512 source) resized to 64x64 RGB; ~7 GB "
              "download for everything (a small `size` fetches only the first shards)",
              "AFHQ v2 (Choi et al. 2020, StarGAN v2), Hugging Face dataset huggan/AFHQv2", "CC BY-NC 4.0",
              ("cat", "dog", "wild")),
)


@contextlib.contextmanager
def download_progress(progress: Progress | None) -> Iterator[None]:
    """Within this block, Hub dataset downloads report progress(fraction, message) to `progress`."""
    token = _PROGRESS.set(progress)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def load_hub_dataset(name: str, progress: Progress | None = None, **options: Any) -> Dataset:
    """`load_dataset` for a Hub dataset, reporting download progress to `progress` (for the UI)."""
    with download_progress(progress):
        return load_dataset(name, **options)


def _row_limit(opts: dict[str, Any]) -> int | None:
    """Rows needed from the start of the split: only `size` first-rows with no class filter can stop early."""
    if opts.get("size") and opts.get("subset", "first") == "first" and not opts.get("classes"):
        return int(opts["size"])
    return None


def _cache_key(opts: dict[str, Any]) -> str:
    return digest("hub-dataset/v1", opts["repo"], opts["revision"], opts["split"], opts["resolution"],
                  opts["channels"], _row_limit(opts))


_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d+)-of-(?P<count>\d+)(?:-[0-9a-f]+)?\.parquet$")


def split_files(listing: list[RemoteFile], split: str, first: int | None = None) -> list[RemoteFile]:
    """The parquet shards of `split` in order: `split-00000-of-0000N*.parquet`, `split.parquet` or `split/*.parquet`.

    Raises ValueError when none exist or shards are missing (all of them, or the first `first`).
    """
    def belongs(path: str) -> bool:
        parts = path.split("/")
        return path.endswith(".parquet") and (parts[-1].startswith((f"{split}-", f"{split}.")) or split in parts[:-1])

    files = sorted((f for f in listing if belongs(f.path)), key=lambda f: f.path)
    if not files:
        raise ValueError(f"no parquet files for split {split!r}")
    groups: dict[tuple[str, int], set[int]] = {}
    for f in files:
        match = _SHARD.match(f.path.rsplit("/", 1)[-1])
        if match:
            key = (f.path.rsplit("/", 1)[0] + "/" + match["stem"], int(match["count"]))
            groups.setdefault(key, set()).add(int(match["index"]))
    for (stem, count), have in groups.items():
        need = set(range(count if first is None else min(first, count)))
        if not need <= have:
            raise ValueError(f"missing shards {sorted(need - have)[:5]} of {count} for {stem.lstrip('/')}")
    return files if first is None else files[:first]


def _image_and_label_columns(schema) -> tuple[str, str | None, list[str] | None]:
    """The encoded-image column ({bytes, path} struct), the label column and its class names if declared."""
    import pyarrow as pa

    images = [f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0]
    if not images:
        raise ValueError(f"no image column (a struct with 'bytes') among: {', '.join(schema.names)}")
    image = next((c for c in ("image", "img") if c in images), images[0])
    label = next((c for c in ("label", "labels", "fine_label") if c in schema.names), None)
    names = None
    features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    if label and isinstance(features.get(label), dict):
        names = features[label].get("names")
    return image, label, names


def _decode(paths: list[Path], resolution: int, channels: int, limit: int | None) -> dict[str, torch.Tensor]:
    """Decode, crop and resize every image of the parquet shards into uint8 [N, C, R, R] (+ labels, class names)."""
    import pyarrow.parquet as pq

    from studio.data.folder import open_picture

    chunks, labels, class_names, has_labels = [], [], None, True
    done = 0
    for path in paths:
        table = pq.ParquetFile(path)
        image_col, label_col, names = _image_and_label_columns(table.schema_arrow)
        class_names = class_names or names
        has_labels = has_labels and label_col is not None
        columns = [image_col] + ([label_col] if label_col else [])
        for batch in table.iter_batches(batch_size=_DECODE_BATCH, columns=columns):
            if limit is not None and done >= limit:
                break
            rows = batch.num_rows if limit is None else min(batch.num_rows, limit - done)
            encoded = batch.column(image_col).field("bytes").to_pylist()[:rows]
            pictures = [open_picture(io.BytesIO(blob), f"{path.name} image", formats=None) for blob in encoded]
            x, _, _ = apply_image_options(pictures, None, None, {"resolution": resolution, "channels": channels})
            chunks.append(((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8))
            if label_col:
                labels.append(torch.tensor(batch.column(label_col).to_pylist()[:rows], dtype=torch.int64))
            done += rows
    if not chunks:
        raise ValueError("the parquet files hold no images")
    out = {"images": torch.cat(chunks)}
    if has_labels and labels:
        out["labels"] = torch.cat(labels)
    if class_names:
        out["class_names"] = torch.frombuffer(bytearray(json.dumps(class_names).encode()), dtype=torch.uint8)
    return out


def _download_and_decode(src: HubSource, opts: dict[str, Any]) -> dict[str, torch.Tensor]:
    from studio.data.hub_client import HubError, fetch_files

    repo, revision, split, limit = opts["repo"], opts["revision"], opts["split"], _row_limit(opts)
    what = f"dataset {src.name}"
    progress = _PROGRESS.get()
    try:
        if limit is None:
            files = fetch_files(repo, "dataset", revision, lambda listing: split_files(listing, split),
                                what=what, progress=progress)
            return _decode([files[p] for p in sorted(files)], opts["resolution"], opts["channels"], None)
        shards = 1
        while True:  # fetch shard after shard until the first `limit` rows are there
            files = fetch_files(repo, "dataset", revision, lambda listing: split_files(listing, split, shards),
                                what=what, progress=progress)
            paths = [files[p] for p in sorted(files)]
            if len(paths) < shards or _rows(paths) >= limit:
                return _decode(paths, opts["resolution"], opts["channels"], limit)
            shards += 1
    except HubError as err:
        raise unavailable(src.name, repo, revision, str(err)) from None
    except ValueError as err:
        raise HubDatasetUnavailable(f"dataset {src.name}: repository {repo}@{revision} does not look like a parquet "
                                    f"image dataset: {err}") from None


def _rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def unavailable(name: str, repo: str, revision: str, reason: str) -> HubDatasetUnavailable:
    """The one message for a Hub dataset that cannot be had: what was needed and three ways to get it."""
    from studio.data.hub_client import hf_cache_dir

    bundled = ", ".join(n for n in dataset_names() if get_entry(n).bundled) or "none"
    pinned = "" if revision == "main" else f" --revision {revision}"
    return HubDatasetUnavailable(
        f"dataset {name} needs the Hugging Face dataset repository {repo} (revision {revision}) and it is not "
        f"available: {reason.rstrip('.')}. To make it available: connect to the network (or set HF_ENDPOINT to a "
        f"reachable Hub mirror); or on a connected machine run `hf download {repo} --repo-type dataset{pinned}` "
        f"(older clients: `huggingface-cli download ...`) and bring that Hugging Face cache here (HF_HOME, now "
        f"{hf_cache_dir()}); or pick a bundled dataset: {bundled}."
    )


def _build(src: HubSource, **opts: Any) -> Built:
    """The cached uint8 images (already at the resolution and channels asked for), filtered and subset, as codes."""
    tensors = cached_tensors(CACHE_NAMESPACE, _cache_key(opts), lambda: _download_and_decode(src, opts))
    images = tensors["images"]  # uint8 [M, C, R, R]
    labels = tensors["labels"] if "labels" in tensors else None
    names = json.loads(tensors["class_names"].numpy().tobytes()) if "class_names" in tensors else src.class_names
    keep = select_indices(len(images), labels, names, opts)
    note = f"{opts['repo']}@{opts['revision']} split {opts['split']}: {len(keep)} of {len(images)} images"
    return Built.from_codes(images[keep], 255, opts["channels"], table=unit_table(),
                            labels=None if labels is None else labels[keep],
                            class_names=None if names is None else list(names), notes=(note,))


def _entry(src: HubSource) -> DatasetEntry:
    params = (
        Param("repo", str, src.repo, "Hugging Face dataset repository (namespace/name) holding parquet image shards"),
        Param("revision", str, "main", "branch, tag or commit id of the repository (a commit id pins the data)"),
        *image_params(src.resolution, src.channels, splits=src.splits),
    )
    return DatasetEntry(
        name=src.name, kind="image", summary=src.summary, source=src.source, license=src.license, params=params,
        build=lambda **opts: _build(src, **opts), bundled=False,
        cached=lambda opts: is_cached(CACHE_NAMESPACE, _cache_key(resolve_options(src.name, opts))),
    )


for _src in SOURCES:
    register(_entry(_src))
