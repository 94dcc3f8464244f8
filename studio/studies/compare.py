"""Does a denoiser behave like a trained network? Run it and a reference (the bundled UNet by default) from the
same x_T with the same schedule and sampler, and measure how far their x̂0 agree at every step and at the end.

Protocol (Kamb & Ganguli, arXiv 2412.20292; Lukoianov et al., arXiv 2509.09672):
- trajectory vs trajectory: both sample from the same x_T; step k compares x̂0_test(x_t^test) with x̂0_ref(x_t^ref);
- single step: the denoiser under test is applied to the reference's own x_t^ref, x̂0_test(x_t^ref) vs x̂0_ref;
- final samples: r² (mean and median over samples) and MSE; memorisation rate of each side (the share of
  samples whose nearest / second-nearest training distance ratio is below 1/3).

Agreement of x (under test) with y (reference), for one image of D coordinates:
    MSE = (1/D) Σ_d (x_d - y_d)²
    r²  = 1 - Σ_d (x_d - y_d)² / (D · Var(y)),   Var(y) = (1/D) Σ_d (y_d - ȳ)²,   ȳ = (1/D) Σ_d y_d
i.e. Var(y) is the population variance of the reference image over its own pixels; images with Var(y) = 0 give
NaN and are left out of means and medians. Near-flat reference images (common among natural-image patches)
make the per-sample r² hugely negative, so the median is the robust summary, and the pooled form over the N
samples is reported too: r²_pooled = 1 - Σ_i ||x_i - y_i||² / Σ_i ||y_i - ȳ||² (ȳ the mean reference sample).
For 2-D points a per-point variance over two coordinates means nothing: r² there is the pooled form.

Public API for the UI: `compare`, `compare_many` (one reference run shared by several denoisers),
`per_step_series` (columns for a chart), `summary_row` (a table row), `plot_png`, `save_comparison`, `save_table`.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from studio.analysis.neighbours import nearest
from studio.cache import atomic_dir, digest
from studio.config import RunConfig
from studio.diffusion import loop
from studio.diffusion.noise import NoiseSource
from studio.engine import Prepared, prepare

OnStep = Callable[[loop.Step], bool | None]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).double().cpu()


def mse_per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/D) Σ_d (x_d - y_d)² for each sample, float64 [N]."""
    return (_flat(x) - _flat(y)).pow(2).mean(1)


def r2_per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - Σ_d (x_d - y_d)² / (D · Var(y)) per sample (Var over that sample's coordinates); NaN where Var(y) = 0."""
    xf, yf = _flat(x), _flat(y)
    var = yf.var(1, unbiased=False)
    r2 = 1 - (xf - yf).pow(2).mean(1) / var
    return torch.where(var > 0, r2, torch.full_like(r2, math.nan))


def r2_pooled(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - Σ_i ||x_i - y_i||² / Σ_i ||y_i - ȳ||² over all samples (ȳ the mean reference sample)."""
    xf, yf = _flat(x), _flat(y)
    spread = (yf - yf.mean(0)).pow(2).sum()
    return float(1 - (xf - yf).pow(2).sum() / spread) if spread > 0 else math.nan


def r2_centred(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pooled r² after removing each image's own mean from both sides: brightness alone cannot score.
    1 - Σ_i ||(x_i - x̄_i) - (y_i - ȳ_i)||² / Σ_i ||y_i - ȳ_i||², x̄_i and ȳ_i the means over one image's pixels."""
    xf, yf = _flat(x), _flat(y)
    xc, yc = xf - xf.mean(1, keepdim=True), yf - yf.mean(1, keepdim=True)
    spread = yc.pow(2).sum()
    return float(1 - (xc - yc).pow(2).sum() / spread) if spread > 0 else math.nan


def agreement(x: torch.Tensor, y: torch.Tensor, kind: str) -> dict[str, float]:
    """MSE and r² of x against the reference y: per-sample r² (mean, median; for points the pooled value), the
    pooled r², which near-constant reference images (tiny Var(y)) cannot dominate, and the centred r², which
    per-image brightness cannot carry (for points it is the pooled value)."""
    mse = float(mse_per_sample(x, y).mean())
    pooled = r2_pooled(x, y)
    if kind == "points":
        return {"mse": mse, "r2_mean": pooled, "r2_median": pooled, "r2_pooled": pooled, "r2_centred": pooled}
    centred = r2_centred(x, y)
    r2s = r2_per_sample(x, y)
    r2s = r2s[~r2s.isnan()]
    if r2s.numel() == 0:
        return {"mse": mse, "r2_mean": math.nan, "r2_median": math.nan, "r2_pooled": pooled, "r2_centred": centred}
    return {"mse": mse, "r2_mean": float(r2s.mean()), "r2_median": float(r2s.quantile(0.5)), "r2_pooled": pooled,
            "r2_centred": centred}


def memorisation_rate(samples: torch.Tensor, prep: Prepared) -> float | None:
    """Share of samples whose nearest / second-nearest training distance ratio is below 1/3."""
    if prep.dataset.n < 2:
        return None
    return float(nearest(prep.dataset, samples, k=2).memorised.float().mean())


@dataclass
class Reference:
    """The reference run every comparison of one setting shares: its config, x_T and trajectory."""

    config: RunConfig
    prepared: Prepared
    x_T: torch.Tensor
    trajectory: loop.Trajectory
    memorisation: float | None
    seconds: float


@dataclass
class Comparison:
    config: RunConfig
    reference: Reference
    trajectory: loop.Trajectory
    single_step_x0: torch.Tensor | None
    per_step: list[dict[str, Any]]
    final: dict[str, float]
    memorisation: dict[str, float | None]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document."""
        return {
            "config": self.config.to_dict(),
            "reference": {"denoiser": self.reference.config.to_dict()["denoiser"],
                          "x_T_digest": digest(self.reference.x_T.cpu())},
            "x_T_digest": digest(self.trajectory.x_t[0]) if len(self.trajectory.x_t) else None,
            "definitions": {
                "mse": "(1/D) sum_d (x_d - y_d)^2 per sample, averaged over samples",
                "r2": ("1 - sum_d (x_d - y_d)^2 / (D * Var(y)), Var(y) = per-sample population variance of the "
                       "reference over its D coordinates; mean and median over samples"
                       if self.reference.prepared.dataset.kind == "image" else
                       "pooled over samples: 1 - sum_i |x_i - y_i|^2 / sum_i |y_i - mean(y)|^2"),
                "r2_centred": ("pooled r2 after removing each image's own mean from both sides: "
                               "1 - sum_i |(x_i - mean x_i) - (y_i - mean y_i)|^2 / sum_i |y_i - mean y_i|^2"),
                "trajectory": "x0_test(x_t_test) vs x0_ref(x_t_ref), both from the same x_T",
                "single_step": "x0_test(x_t_ref) vs x0_ref(x_t_ref)",
                "memorisation": "share of samples with nearest/second-nearest training distance ratio < 1/3",
            },
            "final": self.final,
            "memorisation": self.memorisation,
            "per_step": self.per_step,
            "timings": self.timings,
        }


def reference_config(cfg: RunConfig, name: str = "unet", params: dict[str, Any] | None = None) -> RunConfig:
    """`cfg` with its denoiser replaced by the reference (everything else identical)."""
    ref = copy.deepcopy(cfg)
    ref.denoiser.name = name
    ref.denoiser.params = dict(params or {})
    return ref.validate()


def run_reference(cfg: RunConfig, reference: str = "unet", params: dict[str, Any] | None = None,
                  on_step: OnStep | None = None) -> Reference:
    """Sample the reference once from the config's seed; its x_T is then given to every denoiser under test."""
    ref_cfg = reference_config(cfg, reference, params)
    prep = prepare(ref_cfg)
    x_T = NoiseSource(ref_cfg.seed, ref_cfg.n, prep.dataset.shape, prep.device).draw()
    t0 = time.perf_counter()
    traj = loop.collect(prep.steps(x_T), on_step)
    seconds = time.perf_counter() - t0
    return Reference(ref_cfg, prep, x_T, traj, memorisation_rate(traj.samples, prep), seconds)


def _setting(cfg: RunConfig) -> dict[str, Any]:
    out = cfg.to_dict()
    out.pop("denoiser")
    return out


def compare_to(ref: Reference, cfg: RunConfig, single_step: bool = True, on_step: OnStep | None = None) -> Comparison:
    """Compare the denoiser of `cfg` with an existing reference run of the same setting."""
    cfg = cfg.validate()
    if _setting(cfg) != _setting(ref.config):
        differs = [k for k, v in _setting(cfg).items() if _setting(ref.config)[k] != v]
        raise ValueError(f"compare: the reference ran another setting ({', '.join(differs)} differ); only the "
                         "denoiser may differ")
    prep = prepare(cfg)
    t0 = time.perf_counter()
    traj = loop.collect(prep.steps(ref.x_T), on_step)
    sampling_s = time.perf_counter() - t0
    kind = prep.dataset.kind
    rt = ref.trajectory
    single = None
    t1 = time.perf_counter()
    if single_step:
        outs = []
        for k in range(len(rt.timesteps)):
            t, ab = int(rt.timesteps[k]), float(rt.alpha_bar[k])
            x0 = loop.denoise_batched(prep.denoiser, rt.x_t[k].to(prep.device), t, ab, cfg.batch_size).x0
            outs.append((x0.clamp(-1, 1) if cfg.sampler.clip_x0 else x0).detach().float().cpu())
        single = torch.stack(outs)
    single_s = time.perf_counter() - t1
    rows = []
    for k in range(len(rt.timesteps)):
        row: dict[str, Any] = {"k": k, "t": int(rt.timesteps[k]), "alpha_bar": float(rt.alpha_bar[k])}
        a = agreement(traj.x0[k], rt.x0[k], kind)
        row.update({"mse_traj": a["mse"], "r2_traj": a["r2_mean"], "r2_traj_median": a["r2_median"],
                    "r2_traj_centred": a["r2_centred"]})
        if single is not None:
            a = agreement(single[k], rt.x0[k], kind)
            row.update({"mse_single": a["mse"], "r2_single": a["r2_mean"], "r2_single_median": a["r2_median"],
                        "r2_single_centred": a["r2_centred"]})
        rows.append(row)
    return Comparison(
        config=cfg, reference=ref, trajectory=traj, single_step_x0=single, per_step=rows,
        final=agreement(traj.samples, rt.samples, kind),
        memorisation={"test": memorisation_rate(traj.samples, prep), "reference": ref.memorisation},
        timings={"reference_sampling_s": ref.seconds, "sampling_s": sampling_s, "single_step_s": single_s,
                 "fit_s": prep.fit_s},
    )


def compare(cfg: RunConfig, reference: str = "unet", reference_params: dict[str, Any] | None = None,
            single_step: bool = True, on_step: OnStep | None = None) -> Comparison:
    """The denoiser of `cfg` against `reference` (same x_T, schedule, sampler, steps, seed)."""
    return compare_to(run_reference(cfg, reference, reference_params, on_step), cfg, single_step, on_step)


def compare_many(cfg: RunConfig, denoisers: Sequence[tuple[str, dict[str, Any]]], reference: str = "unet",
                 reference_params: dict[str, Any] | None = None, single_step: bool = True,
                 on_step: OnStep | None = None) -> list[Comparison]:
    """Several denoisers (name, params) against one shared reference run of `cfg`'s setting."""
    ref = run_reference(cfg, reference, reference_params, on_step)
    out = []
    for name, params in denoisers:
        test = copy.deepcopy(cfg)
        test.denoiser.name, test.denoiser.params = name, dict(params)
        out.append(compare_to(ref, test, single_step, on_step))
    return out


def per_step_series(comp: Comparison) -> dict[str, list]:
    """Per-step columns (k, t, alpha_bar, mse_*, r2_*) for a chart: one list per metric, index = step."""
    keys = list(comp.per_step[0]) if comp.per_step else []
    return {key: [row.get(key) for row in comp.per_step] for key in keys}


def summary_row(comp: Comparison) -> dict[str, Any]:
    """One table row: denoiser, final r² (mean, median), MSE, memorisation of both sides."""
    last = comp.per_step[-1] if comp.per_step else {}
    singles = [r["r2_single"] for r in comp.per_step if r.get("r2_single") is not None and not math.isnan(r["r2_single"])]
    return {
        "denoiser": comp.config.denoiser.name,
        "reference": comp.reference.config.denoiser.name,
        "dataset": comp.config.dataset.name,
        "steps": comp.config.sampler.steps,
        "n": comp.config.n,
        "final_r2_mean": comp.final["r2_mean"],
        "final_r2_median": comp.final["r2_median"],
        "final_r2_pooled": comp.final["r2_pooled"],
        "final_r2_centred": comp.final["r2_centred"],
        "final_mse": comp.final["mse"],
        "single_step_r2_mean_over_steps": sum(singles) / len(singles) if singles else None,
        "ms_per_step": 1000 * comp.timings["sampling_s"] / max(len(comp.per_step), 1),
        "memorisation": comp.memorisation["test"],
        "reference_memorisation": comp.memorisation["reference"],
        "last_step_r2_traj": last.get("r2_traj"),
    }


def plot_png(comps: Sequence[Comparison]) -> bytes:
    """r² and MSE per step, trajectory (solid) and single step (dashed), one colour per denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r2, ax_mse) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for i, comp in enumerate(comps):
        s = per_step_series(comp)
        colour = f"C{i % 10}"
        name = comp.config.denoiser.name
        ax_r2.plot(s["k"], s["r2_traj"], color=colour, label=f"{name} trajectory")
        ax_mse.plot(s["k"], s["mse_traj"], color=colour, label=f"{name} trajectory")
        if "r2_single" in s:
            ax_r2.plot(s["k"], s["r2_single"], color=colour, ls="--", label=f"{name} single step")
            ax_mse.plot(s["k"], s["mse_single"], color=colour, ls="--", label=f"{name} single step")
    ref = comps[0].reference.config if comps else None
    title = f"vs {ref.denoiser.name} on {ref.dataset.name}, {ref.sampler.name} {ref.sampler.steps} steps" if ref else ""
    ax_r2.set(xlabel="step k (noisy -> clean)", ylabel="r² of x̂0 (mean over samples)", title=title)
    ax_r2.set_ylim(max(-1.0, ax_r2.get_ylim()[0]), 1.02)
    positive = any(v > 0 for comp in comps for row in comp.per_step for k, v in row.items() if k.startswith("mse"))
    ax_mse.set(xlabel="step k (noisy -> clean)", ylabel="MSE of x̂0", yscale="log" if positive else "linear")
    for ax in (ax_r2, ax_mse):
        ax.grid(alpha=0.3)
    ax_r2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _samples_png(comp: Comparison) -> bytes:
    """Final samples, test (left) beside reference (right)."""
    from studio import images

    test, ref = comp.trajectory.samples, comp.reference.trajectory.samples
    if comp.reference.prepared.dataset.kind == "image":
        picture = images.side_by_side(test, ref)
    else:
        picture = images.grid_of_scatters([torch.stack([test, ref])], comp.reference.prepared.dataset.x, size=320)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def write_comparison(comp: Comparison, folder: Path) -> None:
    """metrics.json, compare.png, samples.png and samples.safetensors (both sides' final samples) of one comparison."""
    from safetensors.torch import save_file

    (folder / "metrics.json").write_text(json.dumps(comp.to_dict(), indent=2, allow_nan=True))
    save_file({"samples": comp.trajectory.samples.contiguous(), "reference_samples":
               comp.reference.trajectory.samples.contiguous()}, str(folder / "samples.safetensors"))
    (folder / "compare.png").write_bytes(plot_png([comp]))
    (folder / "samples.png").write_bytes(_samples_png(comp))


def save_comparison(comp: Comparison, folder: str | Path) -> Path:
    """metrics.json, compare.png (per-step curves) and samples.png (test | reference), written atomically."""
    folder = Path(folder)
    atomic_dir(folder, lambda tmp: write_comparison(comp, tmp))
    return folder


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.4f}" if isinstance(v, float) else str(v))

    cols = ["denoiser", "final_r2_mean", "final_r2_median", "final_r2_pooled", "final_r2_centred", "final_mse",
            "single_step_r2_mean_over_steps", "memorisation", "reference_memorisation", "ms_per_step"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def save_table(comps: Sequence[Comparison], folder: str | Path) -> Path:
    """One sub-folder per denoiser plus table.json / table.md and one compare.png with every curve."""
    folder = Path(folder)
    rows = [summary_row(c) for c in comps]

    names = [c.config.denoiser.name for c in comps]

    def write(tmp: Path) -> None:
        for i, comp in enumerate(comps):
            name = names[i] if names.count(names[i]) == 1 else f"{names[i]}-{i}"
            (tmp / name).mkdir()
            write_comparison(comp, tmp / name)
        (tmp / "table.json").write_text(json.dumps(rows, indent=2, allow_nan=True))
        (tmp / "table.md").write_text(table_markdown(rows) + "\n")
        (tmp / "compare.png").write_bytes(plot_png(comps))

    atomic_dir(folder, write)
    return folder
