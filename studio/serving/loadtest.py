"""Many browser-like sessions against a studio running on this machine.

Each client is its own gradio_client session that runs one small preset (digits, faces or 2-D toys, a few
steps, a few samples) with its own seed through the app's `/run_config` endpoint, again and again until the
time is up; with `--slow-every k` every k-th client runs a slow job (`--slow-steps`) instead, and the report
gives the quick jobs' latency beside them (and, with `--server-pid`, the server's peak RSS). Every result is checked against the same config computed here: the run's zip (the page's
download) must hold this client's seed in config.yaml and exactly the samples that seed gives, so a result
that reached the wrong session, or a mixed-up one, is caught. Bounded in clients, time and jobs; loopback
URLs only, so it can never be pointed at someone else's server.
"""

from __future__ import annotations

import ipaddress
import shutil
import statistics
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import yaml

ENDPOINT = "/run_config"
PRESETS = ("optimal_memorises", "wiener_blurs", "swissroll_paths", "ddpm_vs_ddim_digits", "faces_memorisation")
MAX_CLIENTS, MAX_DURATION_S, MAX_JOBS = 64, 600, 10_000
ATOL = 1e-4  # same machine, same code: only thread-count rounding may differ


def check_url(url: str) -> str:
    """`url` if it points at this machine (127.0.0.0/8, ::1, localhost); ValueError otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise ValueError(f"--url: the load test only targets a studio on this machine (http://127.0.0.1:PORT, "
                         f"http://[::1]:PORT or http://localhost:PORT), got {url!r}")
    return url.rstrip("/")


def _bounded(name: str, value: int, high: int) -> int:
    if not 1 <= value <= high:
        raise ValueError(f"--{name}: expected 1..{high}, got {value}")
    return value


def client_configs(clients: int, steps: int, n: int, seed: int, slow_every: int = 0,
                   slow_steps: int = 0) -> list[tuple[str, Any]]:
    """(preset name, RunConfig) per client: the small presets in turn, shortened, on the CPU, seed + client;
    with `slow_every` k, every k-th client runs `slow_steps` steps instead (a slow job among quick ones)."""
    from studio.presets import load_preset, override, presets_dir

    found = [name for name in PRESETS if (presets_dir() / f"{name}.yaml").is_file()]
    if not found:
        raise ValueError(f"loadtest: none of the presets {', '.join(PRESETS)} is in {presets_dir()}")
    out = []
    for i in range(clients):
        name = found[i % len(found)]
        base = load_preset(presets_dir() / f"{name}.yaml").config
        slow = slow_every > 0 and i % slow_every == slow_every - 1
        changes = {"sampler": {"steps": slow_steps if slow else steps}, "n": n, "seed": seed + i, "device": "cpu"}
        out.append((f"{name} (slow)" if slow else name, override(base, changes)))
    return out


@dataclass
class ClientReport:
    index: int
    preset: str
    seed: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def _zip_of(outputs: Any) -> Path | None:
    values = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for value in values:
        if isinstance(value, str) and value.endswith(".zip") and Path(value).is_file():
            return Path(value)
    return None


def check_result(outputs: Any, seed: int, expected: torch.Tensor) -> str | None:
    """None if the returned run is this client's (its seed and its samples), else what is wrong."""
    from safetensors.torch import load as load_tensors

    archive = _zip_of(outputs)
    if archive is None:
        return "no run zip among the outputs"
    with zipfile.ZipFile(archive) as zf:
        names = {Path(n).name: n for n in zf.namelist()}
        if "config.yaml" not in names or "tensors.safetensors" not in names:
            return f"{archive.name} lacks config.yaml or tensors.safetensors"
        got_seed = yaml.safe_load(zf.read(names["config.yaml"])).get("seed")
        samples = load_tensors(zf.read(names["tensors.safetensors"]))["samples"]
    if got_seed != seed:
        return f"got the run of seed {got_seed}, expected seed {seed}"
    if samples.shape != expected.shape or not torch.allclose(samples, expected, atol=ATOL):
        return f"the samples differ from seed {seed}'s"
    return None


def run_client(report: ClientReport, url: str, config_yaml: str, expected: torch.Tensor, deadline: float,
               jobs_left: list[int], lock: threading.Lock, job_timeout: float, downloads: Path) -> None:
    """One session: submit, wait, check, until the deadline or the shared job budget is spent."""
    import httpx
    from gradio_client import Client

    try:
        # like a browser, wait for a busy server (the library's 5 s default would count slowness as errors);
        # each job is still bounded by `job_timeout`
        client = Client(url, verbose=False, download_files=str(downloads / str(report.index)),
                        httpx_kwargs={"timeout": httpx.Timeout(60.0, read=None)})
    except Exception as err:  # noqa: BLE001 - reported, not raised: the other clients go on
        report.errors.append(f"connect: {type(err).__name__}: {err}")
        return
    while time.monotonic() < deadline:
        with lock:
            if jobs_left[0] <= 0:
                return
            jobs_left[0] -= 1
        started = time.monotonic()
        job = None
        try:
            job = client.submit(config_yaml, api_name=ENDPOINT)
            outputs = job.result(timeout=job_timeout)
        except Exception as err:  # noqa: BLE001 - an app error or a timeout is one counted error
            if job is not None:
                job.cancel()
            report.errors.append(f"{type(err).__name__}: {err}".strip()[:200])
            continue
        report.latencies.append(time.monotonic() - started)
        problem = check_result(outputs, report.seed, expected)
        if problem:
            report.wrong.append(problem)


@dataclass
class LoadReport:
    url: str
    clients: list[ClientReport]
    duration_s: float
    wall_s: float
    steps: int
    n: int
    server_peak_mb: float | None = None

    @property
    def latencies(self) -> list[float]:
        return sorted(x for c in self.clients for x in c.latencies)

    @property
    def errors(self) -> list[str]:
        return [e for c in self.clients for e in c.errors]

    @property
    def wrong(self) -> list[str]:
        return [w for c in self.clients for w in c.wrong]

    @property
    def quick_latencies(self) -> list[float]:
        return sorted(x for c in self.clients if not c.preset.endswith("(slow)") for x in c.latencies)

    @property
    def ok(self) -> bool:
        return bool(self.latencies) and not self.errors and not self.wrong and all(c.latencies for c in self.clients)

    def lines(self) -> list[str]:
        lat = self.latencies
        per_client = [len(c.latencies) for c in self.clients]
        presets = sorted({c.preset for c in self.clients})
        out = [
            f"load test: {len(self.clients)} clients x {self.duration_s:g} s against {self.url} ({ENDPOINT})",
            f"presets: {', '.join(presets)} ({self.steps} steps, {self.n} samples, seed per client)",
            f"jobs completed: {len(lat)}  errors: {len(self.errors)}  wrong results: {len(self.wrong)}  "
            f"wall time: {self.wall_s:.1f} s  throughput: {len(lat) / max(self.wall_s, 1e-9):.2f} jobs/s",
        ]
        if lat:
            out.append(f"latency: p50 {statistics.median(lat):.2f} s  p95 {_p95(lat):.2f} s  max {lat[-1]:.2f} s")
        quick = self.quick_latencies
        if quick and len(quick) < len(lat):
            out.append(f"quick jobs (beside the slow ones): p50 {statistics.median(quick):.2f} s  "
                       f"p95 {_p95(quick):.2f} s  max {quick[-1]:.2f} s")
        if self.server_peak_mb is not None:
            out.append(f"server peak RSS: {self.server_peak_mb:.0f} MB")
        out.append(f"jobs per client: min {min(per_client)}  max {max(per_client)}")
        for label, items in (("error", self.errors), ("wrong", self.wrong)):
            for message, count in sorted(_count(items).items(), key=lambda kv: -kv[1])[:5]:
                out.append(f"  {label} x{count}: {message}")
        idle = [c.index for c in self.clients if not c.latencies]
        if idle:
            out.append(f"  clients without a completed job: {idle}")
        out.append("result: PASS (every client got its own seed's samples)" if self.ok else "result: FAIL")
        return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory (VmHWM) of process `pid` on this machine, in MB; None when unreadable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((l for l in status.splitlines() if l.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) / 1024


def _count(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def run_load(url: str, clients: int = 4, duration_s: float = 15, steps: int = 5, n: int = 4,
             max_jobs: int = 1000, seed: int = 1000, job_timeout: float = 120, slow_every: int = 0,
             slow_steps: int = 0, server_pid: int | None = None) -> LoadReport:
    """Drive `clients` sessions for `duration_s` seconds (jobs already started may finish, up to `job_timeout`);
    every `slow_every`-th client runs `slow_steps` steps; `server_pid` adds the server's peak RSS."""
    from studio import engine

    url = check_url(url)
    _bounded("clients", clients, MAX_CLIENTS)
    _bounded("duration", int(duration_s), MAX_DURATION_S)
    _bounded("max-jobs", max_jobs, MAX_JOBS)
    if slow_every:
        _bounded("slow-every", slow_every, MAX_CLIENTS)
        _bounded("slow-steps", slow_steps, 1000)
    plans = client_configs(clients, steps, n, seed, slow_every, slow_steps)
    expected = [engine.execute(cfg).samples for _, cfg in plans]
    reports = [ClientReport(i, name, cfg.seed) for i, (name, cfg) in enumerate(plans)]
    downloads = Path(tempfile.mkdtemp(prefix="studio-loadtest-"))
    lock, jobs_left = threading.Lock(), [max_jobs]
    started = time.monotonic()
    deadline = started + duration_s
    threads = [threading.Thread(target=run_client, name=f"loadtest-{r.index}", daemon=True,
                                args=(r, url, cfg.to_yaml(), exp, deadline, jobs_left, lock, job_timeout, downloads))
               for r, (_, cfg), exp in zip(reports, plans, expected)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline + job_timeout + 5 - time.monotonic()))
        for report, thread in zip(reports, threads):
            if thread.is_alive():
                report.errors.append("client still waiting when the load test ended")
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    peak = None if server_pid is None else peak_rss_mb(server_pid)
    return LoadReport(url, reports, duration_s, time.monotonic() - started, steps, n, peak)
