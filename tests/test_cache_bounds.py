"""The in-memory dataset memo and the disk cache stay within their byte limits, least recently used dropped."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from studio import cache
from studio.data import registry
from studio.data.registry import load_dataset


def test_dataset_memo_keeps_within_its_byte_limit_and_drops_the_least_recently_used(monkeypatch):
    registry._MEMO.clear()
    one = load_dataset("digits", size=100)  # 100 x 64 8-bit codes = 6,400 bytes (no float view made yet)
    monkeypatch.setenv("STUDIO_MAX_MEMO_BYTES", str(2 * one.nbytes + 10))
    two = load_dataset("digits", size=100, subset="random", subset_seed=1)
    assert load_dataset("digits", size=100) is one  # a hit: now the most recent
    three = load_dataset("digits", size=100, subset="random", subset_seed=2)
    assert list(registry._MEMO.values()) == [one, three]  # `two` was the least recently used
    assert sum(d.nbytes for d in registry._MEMO.values()) <= 2 * one.nbytes + 10
    assert load_dataset("digits", size=100, subset="random", subset_seed=1) is not two  # rebuilt, equal
    assert torch.equal(load_dataset("digits", size=100, subset="random", subset_seed=1).x, two.x)


def test_disk_cache_trims_to_its_byte_limit_oldest_use_first(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))
    block = {"x": torch.zeros(1000)}  # 4,000 bytes of data per entry
    paths = []
    for i in range(3):
        cache.cached_tensors("unit", f"k{i}", lambda: block)
        paths.append(cache.entry_path("unit", f"k{i}"))
        os.utime(paths[-1], (time.time() - 100 + i, time.time() - 100 + i))
    size = paths[0].stat().st_size
    cache.cached_tensors("unit", "k0", lambda: block)  # a hit marks k0 as recently used
    monkeypatch.setenv("STUDIO_MAX_CACHE_BYTES", str(3 * size))
    cache.cached_tensors("unit", "k3", lambda: block)  # a fourth entry: one must go
    assert [p.exists() for p in paths] == [True, False, True]  # k1 was the least recently used
    assert cache.entry_path("unit", "k3").exists()
    pulled = tmp_path / "hub-runs" / "alice" / "run" / "tensors.safetensors"
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(b"x" * 10 * size)  # a pulled run is not a cache entry: never trimmed
    monkeypatch.setenv("STUDIO_MAX_CACHE_BYTES", "1")
    removed = cache.trim_cache(keep=cache.entry_path("unit", "k3"))
    assert pulled.exists() and cache.entry_path("unit", "k3").exists() and len(removed) == 2


def test_a_background_store_is_awaited_by_readers_and_never_builds_twice(tmp_path, monkeypatch):
    """Large entries (Gaussian fits, dataset builds) are written from a thread; readers in the process wait for
    the write instead of building again, and the stored value equals the built one."""
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))
    builds = []
    import threading

    import safetensors.torch

    release = threading.Event()
    real_save = safetensors.torch.save_file

    def slow_save(tensors, path):
        release.wait(5)  # hold the write until the caller has its value back
        real_save(tensors, path)

    monkeypatch.setattr(safetensors.torch, "save_file", slow_save)

    def build():
        builds.append(1)
        return {"x": torch.arange(10.0)}

    first = cache.cached_tensors("fits", "k", build, in_background=True)
    assert torch.equal(first["x"], torch.arange(10.0)) and not (tmp_path / "fits" / "k.safetensors").exists()
    release.set()
    assert cache.is_cached("fits", "k")  # waits for the writer
    again = cache.cached_tensors("fits", "k", build, in_background=True)
    assert torch.equal(again["x"], first["x"]) and builds == [1]


def test_a_failed_background_store_warns_and_costs_only_a_rebuild(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))

    def full_disk(tensors, path):
        raise OSError(28, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = cache.cached_tensors("fits", "k", lambda: {"x": torch.ones(3)}, in_background=True)
    cache.finish_writes()
    assert torch.equal(out["x"], torch.ones(3)) and not cache.is_cached("fits", "k")
    assert "No space left on device" in caplog.text and not list((tmp_path / "fits").iterdir())


def test_a_key_being_made_is_made_once_and_a_failed_make_is_retried_by_the_waiter():
    """Two threads asking for one key (a run and its levels prepared ahead) share one make; if that make fails,
    the waiting caller makes the key itself (and sees its own error, if any)."""
    kept, calls = cache.Recent(), []

    def slow():
        calls.append(threading.current_thread().name)
        time.sleep(0.3)
        return "value"

    other = threading.Thread(target=lambda: kept.get_or_make("k", slow), name="first")
    other.start()
    time.sleep(0.05)
    assert kept.get_or_make("k", slow) == "value"
    other.join()
    assert calls == ["first"]

    def failing():
        time.sleep(0.3)
        raise RuntimeError("taken meanwhile")

    seen = []
    other = threading.Thread(target=lambda: seen.append(pytest.raises(RuntimeError, kept.get_or_make, "j", failing)))
    other.start()
    time.sleep(0.05)
    assert kept.get_or_make("j", lambda: "mine") == "mine" and not kept.making
    other.join()
    assert "taken meanwhile" in str(seen[0].value)
