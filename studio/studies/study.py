"""The headline experiment: which analytic denoiser behaves like a trained network, and where. Every denoiser
runs from the same x_T as the reference (one shared reference run per seed, studio.studies.compare), over
several repeats with disjoint noise; the table gives each metric's mean and spread over them, the chart r² against t."""

from __future__ import annotations

import copy
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from studio.cache import atomic_dir
from studio.config import RunConfig
from studio.studies.compare import Comparison, OnStep, write_comparison, compare_many, summary_row

# The published comparison's denoisers (Kamb & Ganguli, arXiv 2412.20292; Lukoianov et al., arXiv 2509.09672).
STUDY_DENOISERS = ("nearest", "optimal", "wiener", "scfdm", "pca_locality", "ls", "els")
METRICS = ("final_r2_median", "final_r2_pooled", "final_r2_centred", "final_mse", "single_step_r2_mean_over_steps",
           "memorisation", "reference_memorisation", "ms_per_step")
LABELS = ("r² median", "r² pooled", "r² centred", "MSE", "single-step r² (mean over steps)", "memorised",
          "reference memorised", "ms/step")  # the table's headers, one per metric


@dataclass
class Study:
    """Comparisons per seed (outer) and denoiser (inner), all of one setting."""

    seeds: list[int]
    runs: list[list[Comparison]]

    def rows(self) -> list[dict[str, Any]]:
        """Per denoiser: each metric's mean and sample standard deviation over the repeats (sd 0 for one)."""
        out = []
        for i, first in enumerate(self.runs[0]):
            per_seed = [summary_row(runs[i]) for runs in self.runs]
            row: dict[str, Any] = {"denoiser": first.config.denoiser.name,
                                   "reference": first.reference.config.denoiser.name, "seeds": len(self.seeds)}
            for metric in METRICS:
                values = [r[metric] for r in per_seed if r[metric] is not None and not math.isnan(r[metric])]
                row[metric] = statistics.fmean(values) if values else None
                row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
            out.append(row)
        return out


def repeat_seeds(seed: int, n: int, repeats: int) -> list[int]:
    """Seeds of `repeats` runs of n samples whose noise streams never overlap: sample i of a run uses seed + i,
    so run r starts at seed + r·n (seeds 0 and 1 would share n - 1 of their n samples)."""
    if repeats < 1:
        raise ValueError(f"repeats: expected a whole number >= 1, got {repeats}")
    return [seed + r * n for r in range(repeats)]


def run_study(cfg: RunConfig, denoisers: Sequence[str] = STUDY_DENOISERS, reference: str = "unet",
              reference_params: dict[str, Any] | None = None, repeats: int = 1,
              single_step: bool = True, on_step: OnStep | None = None) -> Study:
    """Every denoiser (at its default parameters, or cfg's for cfg's own denoiser) against `reference`, repeated
    with fresh noise (repeat_seeds) for a mean and spread."""
    if not denoisers:
        raise ValueError("--denoisers: name at least one denoiser")
    seeds = repeat_seeds(cfg.seed, cfg.n, repeats)
    tests = [(name, cfg.denoiser.params if name == cfg.denoiser.name else {}) for name in denoisers]
    runs = []
    for seed in seeds:
        seeded = copy.deepcopy(cfg)
        seeded.seed = seed
        runs.append(compare_many(seeded, tests, reference, reference_params, single_step, on_step))
    return Study(seeds, runs)


def _fmt(value: Any, sd: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if not isinstance(value, float):
        return str(value)
    return f"{value:.3f} ± {sd:.3f}" if sd else f"{value:.3f}"


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The study table: mean ± sd over repeats per metric."""
    lines = ["| denoiser | " + " | ".join(LABELS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for row in rows:
        lines.append(f"| {row['denoiser']} | " + " | ".join(_fmt(row[m], row[f"{m}_sd"]) for m in METRICS) + " |")
    return "\n".join(lines)


def r2_curves(study: Study, key: str = "r2_traj_median") -> dict[str, dict[str, list[float]]]:
    """Per denoiser: t and the per-step r² (`key`, e.g. r2_traj_median or r2_single_centred) averaged over repeats."""
    curves = {}
    for i, first in enumerate(study.runs[0]):
        ts = [row["t"] for row in first.per_step]
        values = []
        for k in range(len(ts)):
            seen = [runs[i].per_step[k].get(key) for runs in study.runs]
            seen = [v for v in seen if v is not None and not math.isnan(v)]
            values.append(statistics.fmean(seen) if seen else math.nan)
        curves[first.config.denoiser.name] = {"t": ts, "r2": values}
    return curves


def plot_png(study: Study) -> bytes:
    """r² of x̂0 against t for every denoiser on one chart: along its own trajectory (left) and one step from
    the reference's x_t (right), median over samples, mean over repeats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110, sharey=True)
    for ax, key, title in ((axes[0], "r2_traj_median", "trajectory vs trajectory"),
                           (axes[1], "r2_single_median", "single step on the reference's x_t")):
        for i, (name, curve) in enumerate(r2_curves(study, key).items()):
            ax.plot(curve["t"], curve["r2"], color=f"C{i % 10}", marker=".", label=name)
        ax.set(xlabel="t (noisy on the left, clean on the right)", title=title)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    ref = study.runs[0][0].reference.config
    axes[0].set(ylabel=f"r² vs {ref.denoiser.name} (median over samples)")
    axes[0].set_ylim(-1.0, 1.02)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{ref.dataset.name}, {ref.sampler.name} {ref.sampler.steps} steps, n={ref.n}, "
                 f"{len(study.seeds)} repeat(s)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def save_study(study: Study, folder: str | Path) -> Path:
    """table.json/table.md (mean ± sd), r2_vs_t.png and r2_curves.json, and one folder per seed and denoiser
    (metrics.json, compare.png, samples.png, samples.safetensors), written atomically."""
    rows = study.rows()

    def write(tmp: Path) -> None:
        for seed, comps in zip(study.seeds, study.runs):
            for comp in comps:
                part = tmp / f"seed{seed}" / comp.config.denoiser.name
                part.mkdir(parents=True)
                write_comparison(comp, part)
        (tmp / "table.json").write_text(json.dumps(rows, indent=2, allow_nan=True))
        (tmp / "table.md").write_text(table_markdown(rows) + "\n")
        (tmp / "r2_curves.json").write_text(json.dumps(
            {key: r2_curves(study, key) for key in ("r2_traj_median", "r2_single_median", "r2_traj_centred",
                                                    "r2_single_centred")}, indent=2, allow_nan=True))
        (tmp / "r2_vs_t.png").write_bytes(plot_png(study))

    atomic_dir(Path(folder), write)
    return Path(folder)
