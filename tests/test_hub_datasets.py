"""Hub datasets through the real huggingface_hub client against the local fake Hub (tests/fake_hub.py)."""

from __future__ import annotations

import io
import json
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from studio.data import get_entry, load_dataset
from studio.data.hub_datasets import HubDatasetUnavailable, load_hub_dataset, split_files
from studio.data.imageopts import apply_image_options
from studio.data.registry import resolve_options
from studio.data.hub_client import RemoteFile


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def parquet_shard(images: list[np.ndarray], labels: list[int], image_col: str = "image",
                  class_names: list[str] | None = None) -> bytes:
    """A parquet file laid out like the Hub's converted datasets: {bytes, path} image structs + int labels."""
    column = pa.array([{"bytes": png(a), "path": None} for a in images],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({image_col: column, "label": pa.array(labels, type=pa.int64())})
    if class_names is not None:
        features = {image_col: {"_type": "Image"}, "label": {"names": class_names, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=3)
    return buf.getvalue()


@pytest.fixture
def hub_env(fake_hub, monkeypatch):
    """Point the loaders at the fake hub and give each test its own repository name."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    return fake_hub, f"alice/tiny-{uuid.uuid4().hex[:8]}"


def gray_images(n: int, side: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side), dtype=np.uint8) for _ in range(n)]


def test_mnist_layout_decodes_exactly_and_second_load_uses_the_cache(hub_env):
    hub, repo = hub_env
    images, labels = gray_images(7), [3, 1, 4, 1, 5, 9, 2]
    hub.add_file("dataset", repo, "mnist/train-00000-of-00001.parquet",
                 parquet_shard(images, labels, class_names=[f"digit {i}" for i in range(10)]))
    hub.add_file("dataset", repo, "mnist/test-00000-of-00001.parquet", parquet_shard(gray_images(2, seed=1), [0, 0]))

    ds = load_dataset("mnist", repo=repo, resolution=8)
    expected = torch.from_numpy(np.stack(images)).float().div(255).mul(2).sub(1)[:, None]
    assert ds.x.shape == (7, 1, 8, 8)
    assert torch.equal(ds.codes.codes, torch.from_numpy(np.stack(images))[:, None])  # kept as the 8-bit codes
    assert torch.equal(ds.x, expected)  # decoded bit for bit as the float pipeline decodes 8-bit images
    assert ds.labels.tolist() == labels
    assert ds.class_names == [f"digit {i}" for i in range(10)]  # names come from the parquet's own metadata
    assert not any("test-0000" in r.path for r in hub.requests)  # only the requested split was fetched

    opts = resolve_options("mnist", {"repo": repo, "resolution": 8})
    assert get_entry("mnist").cached(opts)
    hub.stop()  # the converted array is all a second build needs
    again = get_entry("mnist").build(**opts)
    assert torch.equal(again.floats(), expected)
    assert again.labels.tolist() == labels


def test_cifar_layout_resizes_like_imageopts_and_filters_classes(hub_env):
    hub, repo = hub_env
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)]
    labels = [0, 3, 3, 5, 3, 9]
    hub.add_file("dataset", repo, "plain_text/train-00000-of-00001.parquet",
                 parquet_shard(images, labels, image_col="img"))

    ds = load_dataset("cifar10", repo=repo, resolution=8, classes=["cat"])
    reference, _, _ = apply_image_options([Image.fromarray(a) for a in images], None, None,
                                          {"resolution": 8, "channels": 3})
    keep = [i for i, y in enumerate(labels) if y == 3]
    assert ds.x.shape == (3, 3, 8, 8)
    assert ds.labels.tolist() == [3, 3, 3]
    assert ds.class_names[3] == "cat"  # no metadata in this file: the built-in CIFAR-10 names
    # stored as uint8: within half a quantisation step (1/255 in [-1, 1] units) of the float pipeline
    assert (ds.x - reference[keep]).abs().max().item() <= 1 / 255 + 1e-6


def test_server_down_gives_one_clear_message_quickly(hub_env):
    hub, repo = hub_env
    hub.stop()
    start = time.monotonic()
    with pytest.raises(HubDatasetUnavailable) as info:
        load_dataset("fashion_mnist", repo=repo)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert repo in message and "cannot reach" in message
    assert f"hf download {repo} --repo-type dataset" in message and "HF_ENDPOINT" in message
    assert "digits" in message  # a bundled alternative is named
    assert isinstance(info.value, ValueError)


def test_unknown_repository_names_it(hub_env):
    _, repo = hub_env
    with pytest.raises(HubDatasetUnavailable, match=f"{repo}.*not found"):
        load_dataset("mnist", repo=repo)


def test_first_rows_fetch_only_first_shard_then_full_load_reuses_it_and_resumes(hub_env, monkeypatch):
    hub, repo = hub_env
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64)  # resume works per received chunk
    first, second = gray_images(4, seed=5), gray_images(4, seed=6)
    shard0 = parquet_shard(first, [0, 1, 2, 3])
    shard1 = parquet_shard(second, [4, 5, 6, 7])
    hub.add_file("dataset", repo, "data/train-00000-of-00002-abc123.parquet", shard0)
    hub.add_file("dataset", repo, "data/train-00001-of-00002-def456.parquet", shard1)

    small = load_dataset("celeba_hq", repo=repo, resolution=8, channels=1, size=3)
    assert small.labels.tolist() == [0, 1, 2]
    assert not any("00001-of-00002" in r.path for r in hub.requests)

    hub.cut_next_download("data/train-00001-of-00002-def456.parquet", after_bytes=200)
    full = load_dataset("celeba_hq", repo=repo, resolution=8, channels=1)
    assert full.labels.tolist() == list(range(8))
    expected = torch.from_numpy(np.stack(first + second)).float().div(255).mul(2).sub(1)[:, None]
    torch.testing.assert_close(full.x, expected, atol=1e-6, rtol=0)
    shard0_gets = [r for r in hub.requests if r.method == "GET" and "00000-of-00002" in r.path]
    assert len(shard0_gets) == 1  # the complete shard was not downloaded again
    resumed = [r for r in hub.requests if "00001-of-00002" in r.path and r.range]
    assert resumed and resumed[0].range == "bytes=192-"  # continued after the 3 whole chunks received


def test_offline_build_uses_the_huggingface_cache_and_refuses_a_partial_copy(hub_env, monkeypatch, tmp_path):
    hub, repo = hub_env
    hub.add_file("dataset", repo, "data/train-00000-of-00002.parquet", parquet_shard(gray_images(2), [0, 1]))
    hub.add_file("dataset", repo, "data/train-00001-of-00002.parquet", parquet_shard(gray_images(2, seed=9), [2, 3]))
    load_dataset("afhq", repo=repo, resolution=8, channels=1, size=1)  # downloads shard 0 only
    full_online = load_dataset("afhq", repo=repo, resolution=8, channels=1, subset="random", size=4)

    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "fresh-cache"))  # converted arrays gone, HF cache kept
    hub.stop()
    opts = resolve_options("afhq", {"repo": repo, "resolution": 8, "channels": 1})
    rebuilt = get_entry("afhq").build(**opts)
    assert sorted(rebuilt.labels.tolist()) == sorted(full_online.labels.tolist()) == [0, 1, 2, 3]

    other = f"{repo}-partial"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-partial"))
    with pytest.raises(HubDatasetUnavailable, match="not in the local cache"):
        get_entry("afhq").build(**resolve_options("afhq", {"repo": other}))


def test_progress_callback_reports_to_completion(hub_env):
    hub, repo = hub_env
    hub.add_file("dataset", repo, "mnist/train-00000-of-00001.parquet", parquet_shard(gray_images(5), [0] * 5))
    seen: list[float] = []
    load_hub_dataset("mnist", progress=lambda fraction, message: seen.append(fraction), repo=repo, resolution=8)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_shards_download_together_through_one_snapshot_download(hub_env, monkeypatch):
    from studio.data import hub_client

    hub, repo = hub_env
    for i in range(4):
        hub.add_file("dataset", repo, f"data/train-0000{i}-of-00004.parquet",
                     parquet_shard(gray_images(2, seed=i), [2 * i, 2 * i + 1]))
    hub.add_file("dataset", repo, "data/test-00000-of-00001.parquet", parquet_shard(gray_images(2), [0, 1]))
    calls = []
    real = hub_client.snapshot_download

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(hub_client, "snapshot_download", spy)
    full = load_dataset("afhq", repo=repo, resolution=8, channels=1)
    assert sorted(full.labels.tolist()) == list(range(8))
    assert len(calls) == 1 and calls[0]["max_workers"] == 4 and len(calls[0]["allow_patterns"]) == 4
    assert not any("test-0000" in r.path for r in hub.requests)  # allow_patterns kept the other split out
    listings = [r for r in hub.requests if r.path.startswith("/api/") and "/resolve/" not in r.path]
    assert len(listings) <= 3  # our listing, snapshot_download's revision and tree: not one per shard


def test_no_private_huggingface_hub_imports():
    """Only huggingface_hub's public API: no module path with a _private part."""
    import ast
    from pathlib import Path

    bad = []
    for path in (Path(__file__).resolve().parents[1] / "studio").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [(path.name, n) for n in names
                    if n.startswith("huggingface_hub") and any(part.startswith("_") for part in n.split("."))]
    assert bad == []


def test_split_files_layouts_and_missing_shards():
    listing = [RemoteFile(p, 1) for p in (
        "mnist/train-00000-of-00001.parquet", "mnist/test-00000-of-00001.parquet", "README.md",
        "data/validation-00000-of-00001-a4.parquet", "default/train/0000.parquet", "default/train/0001.parquet",
    )]
    assert [f.path for f in split_files(listing, "test")] == ["mnist/test-00000-of-00001.parquet"]
    assert [f.path for f in split_files(listing, "validation")] == ["data/validation-00000-of-00001-a4.parquet"]
    assert [f.path for f in split_files(listing, "train")] == [
        "default/train/0000.parquet", "default/train/0001.parquet", "mnist/train-00000-of-00001.parquet"]
    gappy = [RemoteFile("data/train-00000-of-00003.parquet", 1), RemoteFile("data/train-00002-of-00003.parquet", 1)]
    with pytest.raises(ValueError, match=r"missing shards \[1\] of 3"):
        split_files(gappy, "train")
    assert [f.path for f in split_files(gappy, "train", first=1)] == ["data/train-00000-of-00003.parquet"]
    with pytest.raises(ValueError, match="no parquet files for split 'test'"):
        split_files(gappy, "test")
