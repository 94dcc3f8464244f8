"""`python -m studio bench`: ms per denoise step of each fast denoiser beside its naive float64 reference,
measured in the same process on the same inputs, with the max relative error between them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from studio.cache import digest
from studio.data.dataset import Dataset
from studio.denoisers.reference import nearest_ref, optimal_ref, wiener_ref
from studio.denoisers.registry import make_denoiser
from studio.diffusion.schedules import Schedule
from studio.diffusion.spacing import timesteps

Reference = Callable[[torch.Tensor, Dataset, float], torch.Tensor]


@dataclass
class BenchCase:
    """One benchmark row: a denoiser with parameters on a dataset maker, against a float64 reference."""

    label: str
    denoiser: str
    make_data: Callable[[dict[str, Any]], Dataset]
    reference: Reference
    params: dict[str, Any] = field(default_factory=dict)
    batch: int | None = None


def synthetic_images(opts: dict[str, Any]) -> Dataset:
    """Uniform random images at the requested shape (structure-free: the hardest case for pruning)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((opts["n_data"], *opts["shape"]), generator=g) * 2 - 1
    return Dataset(x=x, name="synthetic", kind="image", fingerprint=digest("synthetic", opts["n_data"], opts["shape"]))


CASES: list[BenchCase] = [
    BenchCase("optimal", "optimal", synthetic_images, lambda x, d, ab: optimal_ref(x, d.x, ab)),
    BenchCase("nearest", "nearest", synthetic_images, lambda x, d, ab: nearest_ref(x, d.x, ab)),
    BenchCase("wiener", "wiener", synthetic_images, lambda x, d, ab: wiener_ref(x, d.x, ab)),
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


def run_case(case: BenchCase, opts: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Average ms/step over a 10-step trailing schedule, and the worst relative L2 error vs the reference."""
    data = case.make_data(opts)
    batch = case.batch or opts["batch"]
    den = make_denoiser(case.denoiser, device=device, **case.params)
    t0 = time.perf_counter()
    den.fit(data)
    fit_s = time.perf_counter() - t0
    sched = Schedule.build()
    g = torch.Generator().manual_seed(1)
    data_dev = Dataset(x=data.x.to(device), name=data.name, kind=data.kind, fingerprint=data.fingerprint)
    fast_ms, ref_ms, worst = [], [], 0.0
    for t in timesteps("trailing", sched.T, opts["levels"]).tolist():
        ab = sched.ab(t)
        pick = torch.randint(0, data.n, (batch,), generator=g)
        x_t = (ab**0.5 * data.x[pick] + (1 - ab) ** 0.5 * torch.randn(data.x[pick].shape, generator=g)).to(device)
        fast_ms.append(_time_ms(lambda: den.denoise(x_t, t, ab), device, opts["repeats"]))
        ref_ms.append(_time_ms(lambda: case.reference(x_t, data_dev, ab), device, 1))
        out = den.denoise(x_t, t, ab).x0.double().reshape(batch, -1)
        ref = case.reference(x_t, data_dev, ab).double().reshape(batch, -1)
        err = ((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)).max().item()
        worst = max(worst, err)
    return {
        "case": case.label, "denoiser": case.denoiser, "params": case.params, "n_data": data.n,
        "shape": list(data.shape), "batch": batch, "device": str(device), "fit_s": fit_s,
        "ms_per_step": sum(fast_ms) / len(fast_ms), "ref_ms_per_step": sum(ref_ms) / len(ref_ms),
        "max_rel_err": worst, "levels": opts["levels"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'case':<28}{'N':>8} {'shape':<10}{'batch':>6}{'ms/step':>11}{'ref ms':>11}{'speed-up':>10}{'max rel err':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{r['case']:<28}{r['n_data']:>8} {shape:<10}{r['batch']:>6}{r['ms_per_step']:>11.3f}"
            f"{r['ref_ms_per_step']:>11.2f}{r['ref_ms_per_step'] / r['ms_per_step']:>9.0f}x{r['max_rel_err']:>13.2e}"
        )
    return "\n".join(lines)


def run_bench(device: torch.device, opts: dict[str, Any], only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for case in CASES:
        if only and case.label not in only and case.denoiser not in only:
            continue
        rows.append(run_case(case, opts, device))
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
