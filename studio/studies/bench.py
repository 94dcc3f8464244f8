"""`python -m studio bench`: ms per denoise step of each fast denoiser beside its naive float64 reference,
measured in the same process on the same inputs, with the max relative error between them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.denoisers.masked.masks import patch_mask
from studio.denoisers.patch_schedule import auto_patch_size, full_window
from studio.denoisers.reference import (
    els_ref,
    els_unfold_fp32,
    masked_softmax_ref,
    nearest_ref,
    optimal_ref,
    pca_locality_ref,
    scfdm_ref,
    wiener_ref,
)
from studio.denoisers.registry import make_denoiser
from studio.denoisers.scfdm import smoothing_noise
from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps

Reference = Callable[[torch.Tensor, Dataset, float, int], torch.Tensor]  # (x_t, data on the device, ā, t)


@dataclass
class BenchCase:
    """One benchmark row: a denoiser with parameters on a dataset maker, against a float64 reference."""

    label: str
    denoiser: str
    make_data: Callable[[dict[str, Any]], Dataset]
    reference: Reference | None  # None: timing only (no float64 reference is affordable at that size)
    params: dict[str, Any] = field(default_factory=dict)
    batch: int | None = None
    repeats: int | None = None  # timed calls per level (default: --repeats)
    runner: Callable[[dict[str, Any], torch.device], dict[str, Any]] | None = None  # a row timed its own way


def synthetic_images(opts: dict[str, Any]) -> Dataset:
    """Uniform random images at the requested shape (structure-free: the hardest case for pruning)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((opts["n_data"], *opts["shape"]), generator=g) * 2 - 1
    return Dataset(x=x, name="synthetic", kind="image", fingerprint=digest("synthetic", opts["n_data"], opts["shape"]))


def natural_images(opts: dict[str, Any]) -> Dataset:
    """Photo patches (the bundled `patches`) at the requested shape; where it cannot cut that shape,
    synthetic images with a natural-image 1/f amplitude spectrum (the dataset's name says which)."""
    from studio.data.registry import load_dataset

    C, H, W = opts["shape"]
    try:
        if H != W or C not in (1, 3):
            raise ValueError("patches are square, gray or RGB")
        return load_dataset("patches", resolution=H, channels=C, size=opts["n_data"])
    except ValueError:
        g = torch.Generator().manual_seed(0)
        fy = torch.fft.fftfreq(H)[:, None]
        fx = torch.fft.rfftfreq(W)[None, :]
        amp = 1.0 / torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / max(H, W))
        phase = torch.rand((opts["n_data"], C, H, W // 2 + 1), generator=g) * 2 * torch.pi
        x = torch.fft.irfft2(amp * torch.polar(torch.ones_like(phase), phase), s=(H, W))
        x = (x / x.abs().amax((1, 2, 3), keepdim=True)).float()
        key = digest("synthetic-1/f", opts["n_data"], opts["shape"])
        return Dataset(x=x, name="synthetic-1/f", kind="image", fingerprint=key)


def capped(n: int, shape: list[int] | None = None) -> Callable[[dict[str, Any]], Dataset]:
    """natural_images with at most n points (and a fixed shape, if given)."""
    return lambda opts: natural_images({**opts, "n_data": min(opts["n_data"], n), "shape": shape or opts["shape"]})


def _ls_ref(x: torch.Tensor, d: Dataset, ab: float, t: int) -> torch.Tensor:
    """LS with the default patch size of this level, as a dense float64 window mask."""
    return masked_softmax_ref(x, d.x, ab, patch_mask(d.shape, auto_patch_size(d, ab)))


_PREVIOUS_BANKS: dict[tuple[str, str], Any] = {}


def _els_previous(x: torch.Tensor, d: Dataset, ab: float, t: int) -> torch.Tensor:
    """The first release's fp32 ELS at this level's default patch size (the whole-image window is `optimal`'s
    posterior mean, as in both releases): the yardstick of the `els` row, whose error column is then the
    difference between the two fp32 implementations."""
    from studio.denoisers.softmax import DataBank, posterior_mean

    k = auto_patch_size(d, ab, x.device)
    if k < full_window(d.shape):
        return els_unfold_fp32(x, d.x, ab, k)
    key = (d.fingerprint, str(x.device))
    if key not in _PREVIOUS_BANKS:
        _PREVIOUS_BANKS.clear()
        _PREVIOUS_BANKS[key] = DataBank.from_flat(d.flat(), x.device)
    return posterior_mean(x.reshape(x.shape[0], -1), _PREVIOUS_BANKS[key], ab, k=1).mean.reshape(x.shape)


def digits_runs(opts: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """`ls` and `els` on the bundled digits (8x8 gray, N=1797): 16 samples x 50 DDIM steps through the engine,
    each run twice in this process (the first fits and prepares its windows); seconds of sampling."""
    from studio.config import RunConfig
    from studio.engine import execute

    secs: dict[str, list[float]] = {"ls": [], "els": []}
    for _ in range(2):
        for name in secs:
            cfg = RunConfig.from_dict({"dataset": {"name": "digits"}, "denoiser": {"name": name},
                                       "sampler": {"name": "ddim", "steps": 50}, "n": 16, "seed": 0,
                                       "device": device.type})
            secs[name].append(execute(cfg).metrics["timings"]["sampling_s"])
    els, ls = secs["els"], secs["ls"]
    note = (f"els {els[1]:.2f} s (first {els[0]:.2f}), ls {ls[1]:.2f} s (first {ls[0]:.2f}): "
            f"els/ls {els[1] / ls[1]:.1f}x")
    return {"case": "els vs ls digits 16x50", "denoiser": "els", "params": {}, "data": "digits", "n_data": 1797,
            "shape": [1, 8, 8], "batch": 16, "device": str(device), "ms_per_step": 1000 * els[1] / 50,
            "ls_ms_per_step": 1000 * ls[1] / 50, "els_s": els, "ls_s": ls, "ref_ms_per_step": None,
            "max_rel_err": None, "note": note}


def _scfdm_ref(x: torch.Tensor, d: Dataset, ab: float, t: int) -> torch.Tensor:
    eps = smoothing_noise(0, t, 10, tuple(d.shape)).to(x.device)
    return scfdm_ref(x, d.x, ab, eps, 0.1)


CASES: list[BenchCase] = [
    BenchCase("optimal", "optimal", synthetic_images, lambda x, d, ab, t: optimal_ref(x, d.x, ab)),
    BenchCase("nearest", "nearest", synthetic_images, lambda x, d, ab, t: nearest_ref(x, d.x, ab)),
    BenchCase("wiener", "wiener", synthetic_images, lambda x, d, ab, t: wiener_ref(x, d.x, ab)),
    BenchCase("pca_locality", "pca_locality", natural_images,
              lambda x, d, ab, t: pca_locality_ref(x, d.x, ab, 0.05), {"mask_threshold": 0.05}),
    BenchCase("pca_locality b64", "pca_locality", natural_images,
              lambda x, d, ab, t: pca_locality_ref(x, d.x, ab, 0.05), {"mask_threshold": 0.05}, batch=64, repeats=5),
    BenchCase("scfdm M=10", "scfdm", synthetic_images, _scfdm_ref, {"copies": 10, "smoothing": 0.1, "seed": 0}),
    BenchCase("ls", "ls", capped(10_000), _ls_ref),
    BenchCase("els (ref: previous fp32)", "els", capped(10_000), _els_previous, repeats=2),
    BenchCase("els kernel=torch", "els", capped(10_000), None, {"kernel": "torch"}, repeats=1),
    BenchCase("els k=5 16x16", "els", capped(2_000, [1, 16, 16]), lambda x, d, ab, t: els_ref(x, d.x, ab, 5),
              {"patch_size": 5}, repeats=3),
    BenchCase("els vs ls digits 16x50", "els", lambda opts: None, None, runner=digits_runs),  # type: ignore[arg-type]
]


def _time_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


def _once_ms(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    """One timed call (references are too slow to repeat) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0), out


def worst_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest per-sample relative L2 error of `out` against `ref` (both [B, ...]), in float64."""
    out, ref = out.double().reshape(out.shape[0], -1), ref.double().reshape(ref.shape[0], -1)  # [B, D]
    return ((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)).max().item()


def run_case(case: BenchCase, opts: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Average ms/step over a 10-step trailing schedule, and the worst relative L2 error vs the reference."""
    data = case.make_data(opts)
    batch = case.batch or opts["batch"]
    repeats = case.repeats or opts["repeats"]
    denoiser = make_denoiser(case.denoiser, device=device, **case.params)
    t0 = time.perf_counter()
    denoiser.fit(data)
    fit_s = time.perf_counter() - t0
    sched = Schedule.build()
    g = torch.Generator().manual_seed(1)
    data_dev = Dataset(x=data.x.to(device), name=data.name, kind=data.kind, fingerprint=data.fingerprint)
    fast_ms, ref_ms, worst, per_level, density = [], [], 0.0, {}, {}
    for t in timesteps("trailing", sched.T, opts["levels"]).tolist():
        ab = sched.ab(t)
        pick = torch.randint(0, data.n, (batch,), generator=g)
        x_t = (ab**0.5 * data.x[pick] + (1 - ab) ** 0.5 * torch.randn(data.x[pick].shape, generator=g)).to(device)
        fast_ms.append(_time_ms(lambda: denoiser.denoise(x_t, t, ab), device, repeats))
        per_level[t] = fast_ms[-1]
        if case.reference is None:
            continue
        ms, ref = _once_ms(lambda: case.reference(x_t, data_dev, ab, t), device)
        ref_ms.append(ms)
        checked = denoiser.denoise(x_t, t, ab)
        if "mask_density" in checked.shared:
            density[t] = checked.shared["mask_density"]
        worst = max(worst, worst_rel_err(checked.x0, ref))
    return {
        "case": case.label, "denoiser": case.denoiser, "params": case.params, "data": data.name, "n_data": data.n,
        "shape": list(data.shape), "batch": batch, "device": str(device), "fit_s": fit_s,
        "ms_per_step": sum(fast_ms) / len(fast_ms), "ms_by_level": per_level, "density_by_level": density or None,
        "ref_ms_per_step": sum(ref_ms) / len(ref_ms) if ref_ms else None,
        "max_rel_err": worst if ref_ms else None, "levels": opts["levels"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'case':<28}{'data':<15}{'N':>8} {'shape':<10}{'batch':>6}{'ms/step':>11}{'ref ms':>11}"
            f"{'speed-up':>10}{'max rel err':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        ref = r["ref_ms_per_step"]
        checked = (f"{ref:>11.2f}{ref / r['ms_per_step']:>9.0f}x{r['max_rel_err']:>13.2e}" if ref is not None
                   else f"{'-':>11}{'-':>10}{'-':>13}")
        if r.get("note"):
            checked = f"  {r['note']}"
        lines.append(f"{r['case']:<28}{r.get('data', ''):<15}{r['n_data']:>8} {shape:<10}{r['batch']:>6}"
                     f"{r['ms_per_step']:>11.3f}{checked}")
    return "\n".join(lines)


def run_bench(device: torch.device, opts: dict[str, Any], only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for case in CASES:
        if only and case.label not in only and case.denoiser not in only:
            continue
        rows.append(case.runner(opts, device) if case.runner else run_case(case, opts, device))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(device: torch.device, opts: dict[str, Any], only: list[str] | None, json_path: str | None) -> int:
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; options: {opts}")
    rows = run_bench(device, opts, only)
    print()
    print(table(rows))
    doc = {"device": str(device), "options": opts, "rows": rows}
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(doc, fh, indent=2)
    else:
        print(json.dumps(doc))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# `bench --e2e`: whole runs as a user meets them.

E2E_DENOISERS = ("optimal", "pca_locality", "ls", "els")
# (C, H, W, N) of the published settings on a GPU; a small shape on the CPU. els is costly at scale: at most
# E2E_ELS_N points (the 3x32x32 target uses 10,000), and not at 3x64x64 by default.
E2E_SHAPES = {"cuda": [(3, 32, 32, 50_000), (3, 64, 64, 30_000)], "cpu": [(3, 16, 16, 5_000)]}
E2E_ELS_N = 10_000
E2E_PHASES = ("load_s", "warm_wait_s", "fit_s", "setup_s", "denoise_s", "overhead_s", "analysis_s", "other_s")
MODES = ("cold", "warm cache", "warm process")

_SECOND_RUN = """
import json, sys, tempfile, time
from studio.config import RunConfig
from studio.engine import execute
from studio.runs import save_run
cfg = RunConfig.from_yaml(open(sys.argv[1]).read())
execute(cfg)
t0 = time.perf_counter(); run = execute(cfg); t1 = time.perf_counter()
save_run(run, tempfile.mkdtemp() + "/run"); t2 = time.perf_counter()
print("E2E " + json.dumps({"run_s": t1 - t0, "save_s": t2 - t1, "timings": run.metrics["timings"]}))
"""


# Per denoise call at a few noise levels (the CPU targets are per call), in a child process of the `--code` checkout
E2E_CALL_DENOISERS = ("pca_locality", "optimal")
E2E_CALL_LEVELS = (900, 500, 100)
E2E_CALL_REPEATS = {"cuda": 20, "cpu": 7}

_PER_CALL = """
import json, statistics, sys, time
import torch
from studio.data.registry import load_dataset
from studio.denoisers.registry import make_denoiser
from studio.diffusion.schedules import Schedule
name, device, repeats = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
C, H, N = (int(v) for v in sys.argv[4].split(","))
data = load_dataset("patches", resolution=H, channels=C, size=N)
den = make_denoiser(name, device=device).fit(data)
sched, g = Schedule.build(), torch.Generator().manual_seed(1)
def call(x, t, ab):
    t0 = time.perf_counter(); out = den.denoise(x, t, ab)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - t0), out
rows = []
for t in (int(v) for v in sys.argv[5].split(",")):
    ab = sched.ab(t)
    x0 = data.x[torch.randint(0, data.n, (8,), generator=g)]
    x = (ab ** 0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=g)).to(device)
    first_ms, out = call(x, t, ab)
    times = [call(x, t, ab)[0] for _ in range(repeats)]
    rows.append({"t": t, "first_ms": first_ms, "ms": statistics.median(times), "min_ms": min(times),
                 "density": out.shared.get("mask_density")})
print("CALLS " + json.dumps({"threads": torch.get_num_threads(), "rows": rows}))
"""


def e2e_calls(name: str, device: torch.device, shape: tuple[int, ...], code: str, timeout: float) -> list[dict[str, Any]]:
    """ms per denoise call (batch 8, median of E2E_CALL_REPEATS after a first call that sets the level up) at
    E2E_CALL_LEVELS, in a fresh process of `code` with its own empty caches (studio and Triton); torch's default
    thread count."""
    import tempfile

    C, H, W, N = shape
    env = _child_env(Path(tempfile.mkdtemp(prefix="studio-e2e-calls-")), code)
    base = {"denoiser": name, "shape": [C, H, W], "n_data": N, "batch": 8, "device": device.type, "code": code}
    try:
        _, out = _run_child(["-c", _PER_CALL, name, device.type, str(E2E_CALL_REPEATS[device.type]), f"{C},{H},{N}",
                             ",".join(map(str, E2E_CALL_LEVELS))], env, code, timeout)
    except Exception as err:  # noqa: BLE001 - the row says so and the rest go on
        return [{**base, "error": f"{type(err).__name__}: {err}"[:160]}]
    doc = json.loads(next(line[6:] for line in out.splitlines() if line.startswith("CALLS ")))
    return [{**base, "threads": doc["threads"], **r} for r in doc["rows"]]


def calls_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'denoiser':<13}{'shape':<9}{'N':>7}{'threads':>8}{'t':>6}{'density':>9}{'first ms':>10}{'ms/call':>9}{'min ms':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['denoiser']:<13}{'x'.join(map(str, r['shape'])):<9}{r['n_data']:>7}"
        if "error" in r:
            lines.append(left + "  " + r["error"])
            continue
        density = f"{r['density']:>9.2f}" if r["density"] is not None else f"{'-':>9}"
        lines.append(left + f"{r['threads']:>8}{r['t']:>6}{density}{r['first_ms']:>10.1f}{r['ms']:>9.2f}{r['min_ms']:>8.2f}")
    return "\n".join(lines)


def e2e_configs(device: torch.device, steps: list[int], shapes: list[tuple[int, ...]] | None,
                only: list[str] | None) -> list[dict[str, Any]]:
    """One config dict per row: each denoiser at each shape and step count, DDIM(η=0), batch 8, `patches` data."""
    out = []
    for C, H, W, N in shapes or E2E_SHAPES[device.type]:
        for name in E2E_DENOISERS:
            if only and name not in only:
                continue
            n = N
            if name == "els":
                if H > 32 and not only:
                    continue
                n = min(N, E2E_ELS_N)
            for k in steps:
                out.append({
                    "dataset": {"name": "patches", "resolution": H, "channels": C, "size": n},
                    "denoiser": {"name": name}, "sampler": {"name": "ddim", "steps": k},
                    "n": 8, "seed": 0, "device": device.type,
                })
    return out


def _child_env(work: Path, code: str) -> dict[str, str]:
    """A child's environment: its studio and Triton caches under `work` (empty until it fills them), unbuffered
    output, and `code`'s studio package first on the path."""
    import os

    return {**os.environ, "STUDIO_CACHE": str(work / "cache"), "TRITON_CACHE_DIR": str(work / "triton"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH", "")) if p)}


def _run_child(args: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[float, str]:
    import subprocess
    import sys

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}")
    return wall, proc.stdout


def e2e_row(cfg: dict[str, Any], code: str, timeout: float) -> list[dict[str, Any]]:
    """Cold (fresh process, empty STUDIO_CACHE and Triton cache: a fresh machine), warm cache (fresh process, same
    caches) and warm process (a second run in one process) of one config. The first two run `python -m studio
    sample` and read its metrics.json."""
    import tempfile
    from pathlib import Path

    import yaml

    from studio.config import RunConfig

    RunConfig.from_dict(cfg).validate()  # refused here, not in three child processes
    work = Path(tempfile.mkdtemp(prefix="studio-e2e-"))
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))  # only what the row sets: an older --code checkout reads it
    env = _child_env(work, code)
    base = {"denoiser": cfg["denoiser"]["name"], "shape": [cfg["dataset"]["channels"], cfg["dataset"]["resolution"],
            cfg["dataset"]["resolution"]], "n_data": cfg["dataset"]["size"], "steps": cfg["sampler"]["steps"],
            "batch": cfg["n"], "device": cfg["device"], "code": code}
    rows = []
    for i, mode in enumerate(MODES):
        row = {**base, "mode": mode}
        try:
            if mode == "warm process":
                wall, out = _run_child(["-c", _SECOND_RUN, str(work / "config.yaml")], env, code, timeout)
                doc = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("E2E ")))
                timings, wall, save = doc["timings"], doc["run_s"] + doc["save_s"], doc["save_s"]
            else:
                folder = work / f"run{i}"
                wall, _ = _run_child(["-m", "studio", "sample", "--config", str(work / "config.yaml"),
                                      "--out", str(folder)], env, code, timeout)
                timings = json.loads((folder / "metrics.json").read_text())["timings"]
                save = None
        except Exception as err:  # noqa: BLE001 - a row that failed or ran out of time says so and the rest go on
            rows.append({**row, "error": f"{type(err).__name__}: {err}"[:160]})
            continue
        row.update({k: timings.get(k) for k in E2E_PHASES if k in timings})
        row.update(wall_s=wall, sampling_s=timings.get("sampling_s"), ms_per_step=timings.get("ms_per_step"))
        known = sum(timings.get(k) or 0 for k in ("load_s", "warm_wait_s", "fit_s", "sampling_s", "analysis_s"))
        row["other_s"] = save if save is not None else max(wall - known, 0.0)  # start, imports, saving
        rows.append(row)
    return rows


def e2e_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'denoiser':<13}{'shape':<9}{'N':>7}{'steps':>6} {'mode':<13}{'total s':>8}{'load':>7}{'warm':>6}{'fit':>7}"
            f"{'setup':>7}{'denoise':>8}{'loop':>7}{'analysis':>9}{'other':>7}{'ms/step':>9}")
    lines = [head, "-" * len(head)]

    def f(v: Any, w: int, p: int = 2) -> str:
        return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        left = f"{r['denoiser']:<13}{shape:<9}{r['n_data']:>7}{r['steps']:>6} {r['mode']:<13}"
        if "error" in r:
            lines.append(left + "  " + r["error"])
            continue
        lines.append(left + f(r["wall_s"], 8) + f(r.get("load_s"), 7) + f(r.get("warm_wait_s"), 6) + f(r.get("fit_s"), 7)
                     + f(r.get("setup_s"), 7)
                     + f(r.get("denoise_s"), 8) + f(r.get("overhead_s"), 7, 3) + f(r.get("analysis_s"), 9)
                     + f(r.get("other_s"), 7) + f(r.get("ms_per_step"), 9, 1))
    return "\n".join(lines)


def e2e_main(device: torch.device, steps: list[int], shapes: list[tuple[int, ...]] | None, only: list[str] | None,
             json_path: str | None, code: str | None = None, timeout: float = 300.0) -> int:
    """Time whole runs (table + JSON). `code`: the folder whose `studio` package the runs import (default: this
    one), so an older checkout can be timed the same way. Rows go to `json_path` as they finish."""
    from pathlib import Path

    code = str(Path(code or Path(__file__).resolve().parents[2]).resolve())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"end-to-end runs on {name}; code: {code}; DDIM(eta=0), batch 8, data: bundled `patches` (photo patches);"
          " loop = per-step overhead outside the denoiser; other = process start, imports and saving", flush=True)
    rows: list[dict[str, Any]] = []
    for cfg in e2e_configs(device, steps, shapes, only):
        new = e2e_row(cfg, code, timeout)
        rows.extend(new)
        print("\n".join(e2e_table(new).splitlines()[2:]), flush=True)
        if json_path:
            Path(json_path).write_text(json.dumps({"device": name, "code": code, "rows": rows}, indent=2))
    calls: list[dict[str, Any]] = []
    for shape in shapes or E2E_SHAPES[device.type]:
        for den in E2E_CALL_DENOISERS:
            if not only or den in only:
                calls.extend(e2e_calls(den, device, shape, code, timeout))
    doc = {"device": name, "code": code, "rows": rows, "calls": calls}
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2))
    print()
    print(e2e_table(rows))
    print(f"\nper denoise call, batch 8: median of {E2E_CALL_REPEATS[device.type]} calls after a first one that sets the "
          "level up (fresh process, empty cache)")
    print(calls_table(calls))
    if not json_path:
        print(json.dumps(doc))
    return 0


def setup_main(device: torch.device, shapes: list[tuple[int, ...]] | None, json_path: str | None) -> int:
    """`bench --setup`: the one-off costs of pca_locality on `device`: the Gaussian fit (covariance + float64 eigh),
    then per noise level the mask recomputed on the device, the same mask written bit-packed and read back, and the
    column plan built and packed on the device."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from studio.data.registry import load_dataset
    from studio.denoisers.masked import masks
    from studio.denoisers.masked.plan import padded_supports, plan_for
    from studio.denoisers.wiener import fit_gaussian

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="studio-setup-"))
    for C, H, W, N in shapes or E2E_SHAPES[device.type]:
        data = load_dataset("patches", resolution=H, channels=C, size=N)
        _timed_s(lambda: fit_gaussian(data.flat()[:512], device), device)  # warm-up: cuSOLVER handles, kernels
        fit_s, fit = _timed_s(lambda: fit_gaussian(data.flat(), device), device)
        theta = masks.default_threshold(data.shape)
        sched = Schedule.build()
        for t in (900, 500, 100):
            ab = sched.ab(t)
            mask_s, mask = _timed_s(lambda: masks.compute_mask(fit, ab, theta, "self", device), device)
            cpu_s, cpu_mask = _timed_s(lambda: masks.to_host(mask), device)
            path = folder / f"{H}-{t}.safetensors"
            write_s, _ = _timed_s(lambda: save_file({"bits": masks.pack_bits(mask).cpu()}, str(path)), device)
            read_s, back = _timed_s(lambda: masks.unpack_bits(load_file(str(path))["bits"], tuple(mask.shape)), device)
            assert torch.equal(back, cpu_mask)
            plan_s, _ = _timed_s(lambda: padded_supports(plan_for(mask, data.shape, device), 64, device), device)
            rows.append({"shape": [C, H, W], "n_data": N, "t": t, "theta": theta, "density": float(cpu_mask.float().mean()),
                         "fit_s": fit_s, "mask_s": mask_s, "to_cpu_s": cpu_s, "packed_mb": path.stat().st_size / 1e6,
                         "write_s": write_s, "read_s": read_s, "plan_s": plan_s})
    head = (f"{'shape':<9}{'N':>7}{'t':>5}{'density':>8}{'fit s':>7}{'mask ms':>8}{'to cpu':>7}{'packed MB':>10}"
            f"{'write ms':>9}{'read ms':>8}{'plan ms':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):<9}{r['n_data']:>7}{r['t']:>5}{r['density']:>8.3f}{r['fit_s']:>7.2f}"
              f"{1e3 * r['mask_s']:>8.1f}{1e3 * r['to_cpu_s']:>7.1f}{r['packed_mb']:>10.2f}{1e3 * r['write_s']:>9.1f}"
              f"{1e3 * r['read_s']:>8.1f}{1e3 * r['plan_s']:>8.1f}")
    if json_path:
        Path(json_path).write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# `bench --neighbours`: the one neighbour search, its two ways, beside a float64 brute force.

NEIGHBOUR_QUERIES, NEIGHBOUR_K = 64, 8


def neighbours_rows(device: torch.device, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Exact search (matrix products on the device) and the faiss IVF index on the bench's data: one-off build
    time, ms per search of NEIGHBOUR_QUERIES queries, and recall@k against a float64 brute force."""
    from studio.analysis import neighbours

    data = natural_images(opts)
    g = torch.Generator().manual_seed(1)
    picked = torch.randperm(data.n, generator=g)[:NEIGHBOUR_QUERIES]
    queries = data.x[picked] + 0.1 * torch.randn(len(picked), *data.shape, generator=g)  # near, not on, the data
    flat = queries.reshape(len(queries), -1).double()  # [M, D]
    truth = torch.cdist(flat, data.flat().double()).topk(NEIGHBOUR_K, largest=False).indices  # [M, k] float64

    def recall(found: torch.Tensor) -> float:
        return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)) / truth.numel()

    build_exact, _ = _once_ms(lambda: neighbours.bank_for(data, device).x, device)
    exact_ms = _time_ms(lambda: neighbours.exact(data, queries.to(device), NEIGHBOUR_K, device), device,
                        opts["repeats"])
    exact = neighbours.exact(data, queries.to(device), NEIGHBOUR_K, device)
    build_faiss, _ = _once_ms(lambda: neighbours.faiss_index(data), device)
    approx = neighbours.approximate(data, queries, NEIGHBOUR_K)
    index, q = neighbours.faiss_index(data), flat.float().numpy()
    faiss_ms = _time_ms(lambda: index.search(q, NEIGHBOUR_K), device, opts["repeats"])
    common = {"data": data.name, "n_data": data.n, "shape": "x".join(map(str, data.shape)),
              "queries": len(queries), "k": NEIGHBOUR_K}
    return [{**common, "method": "exact (matrix products)", "build_ms": build_exact, "ms": exact_ms,
             "recall_vs_float64": recall(exact.indices), "recall_reported": None},
            {**common, "method": "faiss IVF", "build_ms": build_faiss, "ms": faiss_ms,
             "recall_vs_float64": recall(approx.indices), "recall_reported": approx.recall}]


def neighbours_main(device: torch.device, opts: dict[str, Any], json_path: str | None) -> int:
    rows = neighbours_rows(device, opts)
    head = f"{'method':<26}{'data':<16}{'N':>8} {'shape':<10}{'build ms':>10}{'ms/search':>11}{'recall':>8}{'reported':>9}"
    print(head)
    for r in rows:
        reported = "-" if r["recall_reported"] is None else f"{r['recall_reported']:.3f}"
        print(f"{r['method']:<26}{r['data']:<16}{r['n_data']:>8} {r['shape']:<10}{r['build_ms']:>10.1f}"
              f"{r['ms']:>11.2f}{r['recall_vs_float64']:>8.3f}{reported:>9}")
    doc = {"device": str(device), "options": opts, "rows": rows}
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# `bench --scale`: optimal and nearest over ImageNet-64-size training data kept as 8-bit codes on one GPU.

SCALE_N = {"cuda": 1_280_000, "cpu": 20_000}         # training points (ImageNet-64: 1.28 M x 3x64x64)
SCALE_FLOAT_N = {"cuda": 100_000, "cpu": 5_000}      # where float32 storage and a float64 reference run beside it
SCALE_FALLBACK_REPEATS = 1                           # the chunked torch path is slow at scale: one timed call a level


def synthetic_codes(n: int, dim: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """uint8 codes [n, dim], uniform 0..255, drawn on `device` block by block (no float copy anywhere), after
    the memory check that names their size."""
    from studio.denoisers.byte_bank import require_codes

    require_codes(n, dim, device)
    codes = torch.empty(n, dim, dtype=torch.uint8, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    rows = max(1, 2**28 // dim)
    for lo in range(0, n, rows):
        codes[lo:lo + rows].random_(0, 256, generator=g)
    return codes


def _on_bank(name: str, bank: Any, shape: tuple[int, ...], device: torch.device) -> Any:
    """Denoiser `name` holding `bank` as its training data: the data never exist as a float32 Dataset, so the
    bench hands the bank over instead of calling fit(dataset) (what fit would build from 8-bit data)."""
    den = make_denoiser(name, device=device)
    den.bank = bank
    den.dataset = Dataset(x=torch.zeros(1, *shape), name="synthetic-uint8", kind="image",
                          fingerprint=digest("synthetic-uint8", bank.n, list(shape)))
    return den


def _timed_s(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def scale_rows(device: torch.device, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """ms/step of optimal and nearest over N uint8 points (Triton kernels, and the chunked torch fallback), then
    at a size where float32 fits: 8-bit storage beside float32 storage and a float64 reference on the same data
    and queries (max |Δx̂0|, worst relative L2 per sample, same nearest indices)."""
    from studio.denoisers.byte_bank import ByteBank
    from studio.denoisers.softmax import DataBank

    shape = tuple(opts["shape"])
    dim, n, batch = int(torch.tensor(shape).prod()), opts["n_data"], opts["batch"]
    gen_s, codes = _timed_s(lambda: synthetic_codes(n, dim, device), device)
    fit_s, bank = _timed_s(lambda: ByteBank.from_codes(codes, 2 / 255, 1 / 255, device), device)
    sched = Schedule.build()
    g = torch.Generator().manual_seed(1)
    levels = []
    for t in timesteps("trailing", sched.T, opts["levels"]).tolist():
        ab = sched.ab(t)
        x0 = bank.rows(torch.randint(0, n, (batch,), generator=g).to(device)).reshape(batch, *shape).cpu()
        levels.append((t, ab, (ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=g)).to(device)))
    common = {"n_data": n, "shape": list(shape), "batch": batch, "device": str(device), "data": "uniform uint8"}
    rows = []

    def timed_row(label: str, den: Any, storage: str, kernel: str, fit: float, repeats: int) -> dict[str, Any]:
        per_level = {t: _time_ms(lambda: den.denoise(x, t, ab), device, repeats) for t, ab, x in levels}
        row = {**common, "case": label, "denoiser": den.name, "storage": storage, "kernel": kernel,
               "n_data": den.bank.n, "fit_s": fit, "ms_per_step": sum(per_level.values()) / len(per_level),
               "ms_max_level": max(per_level.values()), "ms_by_level": per_level, "peak_gib": _peak_gib(device)}
        print(scale_table([row]).splitlines()[-1], flush=True)
        return row

    kernel = "triton" if bank.uses_triton() else "torch"
    for name in ("optimal", "nearest"):
        bank.kernel = "auto"
        rows.append(timed_row(f"{name} uint8", _on_bank(name, bank, shape, device), "uint8", kernel, fit_s,
                              opts["repeats"]))
        if kernel == "triton" and not opts.get("skip_fallback"):
            bank.kernel = "torch"
            rows.append(timed_row(f"{name} uint8 torch", _on_bank(name, bank, shape, device), "uint8", "torch",
                                  fit_s, SCALE_FALLBACK_REPEATS))
    bank.kernel = "auto"
    rows[0]["generate_s"] = gen_s

    # The same data and queries at a size float32 storage fits: 8-bit vs float32 vs a float64 reference.
    nf = min(n, opts["float_n"])
    sub = ByteBank(codes[:nf], bank.scale, bank.offset, bank.table, bank.sq_norms[:nf])

    def as_float32() -> DataBank:
        x = torch.empty(nf, dim, device=device)
        for lo in range(0, nf, 8192):
            x[lo:lo + 8192] = sub.rows(torch.arange(lo, min(lo + 8192, nf), device=device))
        return DataBank.from_flat(x, device)

    f32_s, f32 = _timed_s(as_float32, device)
    outs: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    configs = [("uint8", "auto", sub), ("float32", "torch", f32)]
    if kernel == "triton":
        configs.insert(1, ("uint8", "torch", sub))
    for name in ("optimal", "nearest"):
        for storage, kern, b in configs:
            if storage == "uint8":
                sub.kernel = kern
            den = _on_bank(name, b, shape, device)
            row = timed_row(f"{name} {storage}" + (" torch" if storage == "uint8" and kern == "torch" else ""),
                            den, storage, kernel if kern == "auto" else "torch", 0.0 if storage == "uint8" else f32_s,
                            opts["repeats"] if kern == "auto" or storage == "float32" else SCALE_FALLBACK_REPEATS)
            outs[(name, row["case"])] = {t: den.denoise(x, t, ab) for t, ab, x in levels}
            rows.append({**row, "compared": True})
    for name in ("optimal", "nearest"):
        ref = {t: (optimal_ref if name == "optimal" else nearest_ref)(x, f32.x, ab) for t, ab, x in levels}
        base = outs[(name, f"{name} float32")]
        for row in rows:
            if row["denoiser"] != name or not row.get("compared"):
                continue
            got = outs[(name, row["case"])]
            diff = max((got[t].x0 - base[t].x0).abs().max().item() for t, _, _ in levels)
            err = max(worst_rel_err(got[t].x0, ref[t]) for t, _, _ in levels)
            same = all(torch.equal(got[t].extras["neighbours"][:, 0], base[t].extras["neighbours"][:, 0])
                       for t, _, _ in levels)
            row.update(max_abs_vs_float32=diff, max_rel_err=err, same_top1_as_float32=same)
    sub.kernel = "auto"
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'case':<24}{'kernel':<8}{'N':>10} {'shape':<9}{'batch':>6}{'fit s':>8}{'ms/step':>10}{'ms max':>9}"
            f"{'peak GiB':>9}{'|Δ| vs f32':>12}{'rel vs f64':>12}{'top1 same':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        peak = f"{r['peak_gib']:>9.2f}" if r.get("peak_gib") is not None else f"{'-':>9}"
        checked = (f"{r['max_abs_vs_float32']:>12.2e}{r['max_rel_err']:>12.2e}{str(r['same_top1_as_float32']):>10}"
                   if "max_rel_err" in r else f"{'-':>12}{'-':>12}{'-':>10}")
        lines.append(f"{r['case']:<24}{r['kernel']:<8}{r['n_data']:>10,} {shape:<9}{r['batch']:>6}{r['fit_s']:>8.2f}"
                     f"{r['ms_per_step']:>10.3f}{r['ms_max_level']:>9.3f}{peak}{checked}")
    return "\n".join(lines)


def tuned_configs() -> dict[str, Any]:
    """The launch configurations the 8-bit kernels' autotuning chose in this process, if they ran."""
    import sys

    module = sys.modules.get("studio.denoisers.softmax_triton")
    out = {}
    for which, tuned in (("dots", getattr(module, "_DOTS", None)), ("sums", getattr(module, "_SUMS", None))):
        best = getattr(tuned, "best_config", None)
        if best is not None:
            out[which] = {**best.kwargs, "warps": best.num_warps, "stages": best.num_stages}
    return out


def scale_main(device: torch.device, opts: dict[str, Any], json_path: str | None) -> int:
    """`bench --scale`: table + JSON."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"8-bit training data at scale on {name}; options: {opts}; data: uniform random codes made on the device "
          "(structure-free); fit = codes to the device + squared norms (float32: decode + norms)", flush=True)
    print(scale_table([]), flush=True)
    rows = scale_rows(device, opts)
    print()
    print(scale_table(rows))
    tuned = tuned_configs()
    if not tuned and device.type == "cuda":
        from studio.denoisers.softmax_triton import pinned_launch

        tuned = pinned_launch()
    doc = {"device": name, "options": opts, "rows": rows, "tuned": tuned}
    if tuned:
        print(f"Triton launch configurations (autotuned with STUDIO_BYTES_TRITON=autotune, else the pinned ones): "
              f"{json.dumps(tuned)}")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(doc, fh, indent=2)
    else:
        print(json.dumps(doc))
    return 0
