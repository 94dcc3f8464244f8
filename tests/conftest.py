"""Shared fixtures: every test gets its own cache folder; GPU tests are skipped without CUDA."""

from __future__ import annotations

import socket
import time

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path_factory.mktemp("studio-cache")))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def offline_fresh(monkeypatch):
    """No network, and no in-process dataset memo: every load really builds or reads the disk cache."""
    from studio.data import registry

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    registry._MEMO.clear()
    yield
    registry._MEMO.clear()


@pytest.fixture
def fake_hub():
    """A local server speaking the Hub's HTTP API (tests/fake_hub.py); stopped after the test."""
    from fake_hub import FakeHub

    hub = FakeHub.start()
    yield hub
    hub.stop()


@pytest.fixture
def slow_wiener(monkeypatch):
    """slow_wiener(seconds): every wiener denoise call sleeps that long first (a slow job, little work)."""
    from studio.denoisers.wiener import Wiener

    def apply(seconds: float) -> None:
        original = Wiener.denoise

        def slow(self, x_t, t, ab):
            time.sleep(seconds)
            return original(self, x_t, t, ab)

        monkeypatch.setattr(Wiener, "denoise", slow)

    return apply
