"""The load test, short: 4 clients for ~10 s against the app in this process; no errors and no cross-talk.
Also: its checker catches a result that belongs to another client, and it refuses non-loopback URLs."""

import io
import zipfile

import pytest
import torch
import yaml
from safetensors.torch import save

from space_app import served
from studio.serving import loadtest
from studio.cli import main


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with served(tmp_path_factory.mktemp("outputs")) as running:
        yield running


def test_short_load_test_passes_with_every_client_getting_its_own_results(app, capsys):
    report = loadtest.run_load(app.url, clients=4, duration_s=10, steps=3, n=2, max_jobs=16, seed=500)
    print("\n".join(report.lines()))
    assert report.errors == [] and report.wrong == []
    assert all(c.latencies for c in report.clients) and report.ok
    assert {c.seed for c in report.clients} == {500, 501, 502, 503}
    assert len({c.preset for c in report.clients}) == 4  # different presets side by side
    assert 4 <= len(report.latencies) <= 16
    lines = report.lines()
    assert lines[-1].startswith("result: PASS") and any(line.startswith("latency: p50") for line in lines)


def test_a_mix_of_quick_and_slow_jobs_reports_the_quick_ones_and_the_servers_peak(app, monkeypatch):
    import os

    from studio.serving import worker

    monkeypatch.setenv("STUDIO_SCHEDULING", "fair")
    monkeypatch.setattr(worker, "_WORKERS", {})
    report = loadtest.run_load(app.url, clients=4, duration_s=8, steps=3, n=2, max_jobs=16, seed=700,
                               slow_every=4, slow_steps=60, server_pid=os.getpid())
    print("\n".join(report.lines()))
    assert report.ok and report.errors == [] and report.wrong == []
    assert [c.preset.endswith("(slow)") for c in report.clients] == [False, False, False, True]
    assert report.quick_latencies and report.server_peak_mb > 100
    lines = report.lines()
    assert any(line.startswith("quick jobs (beside the slow ones): p50") for line in lines)
    assert any(line.startswith("server peak RSS:") for line in lines)


def run_zip(tmp_path, seed: int, samples: torch.Tensor):
    path = tmp_path / f"run-{seed}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("run/config.yaml", yaml.safe_dump({"seed": seed}))
        zf.writestr("run/tensors.safetensors", save({"samples": samples}))
    return str(path)


def test_the_checker_catches_another_clients_result(tmp_path):
    mine, theirs = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)
    assert loadtest.check_result(["<html>", run_zip(tmp_path, 7, mine)], 7, mine) is None
    assert loadtest.check_result([run_zip(tmp_path, 8, theirs)], 7, mine) == "got the run of seed 8, expected seed 7"
    assert loadtest.check_result([run_zip(tmp_path, 7, theirs)], 7, mine) == "the samples differ from seed 7's"
    assert loadtest.check_result(["<html>", None], 7, mine) == "no run zip among the outputs"


@pytest.mark.parametrize("args,message", [
    (["--url", "http://192.168.1.20:7860"], "--url: the load test only targets a studio on this machine"),
    (["--url", "https://huggingface.co/spaces/x/y"], "--url: the load test only targets a studio on this machine"),
    (["--clients", "65"], "--clients: expected 1..64, got 65"),
    (["--duration", "601"], "--duration: expected 1..600, got 601"),
    (["--max-jobs", "0"], "--max-jobs: expected 1..10000, got 0"),
])
def test_bounds_and_loopback_only(capsys, args, message):
    assert main(["loadtest", *args]) == 2
    assert message in capsys.readouterr().err
