"""Analytic Diffusion Studio: training-free diffusion denoisers beside trained ones.

The flow, one way only:

    config -> dataset -> denoiser.fit -> sampler loop (denoiser.denoise per step) -> Run -> analysis -> UI / export

Top level: the flow and what it shares. `params` (declared parameters), `config` (RunConfig), `presets`,
`engine` (runs a config), `runs` (a finished run and its folder, and which `--out` folders may be written),
`images`, `cache`, `limits` (instance limits read from the environment, whether the instance is shared, and the
capped YAML reader every config goes through).

Packages, each named after its job:
- `data/`        dataset registry (bundled, Hub-downloaded, user folders), Dataset, build cache, the Hub
                 download client
- `denoisers/`   one module per denoiser, the registry, the Denoiser contract, the exact online softmax;
  `masked/`      the masked-softmax machinery of pca_locality, ls and els (masks, column plans, torch tiles,
                 Triton tiles; the Triton module depends on the plan, never the reverse)
- `diffusion/`   schedules, spacing, samplers, the sampling loop, inversion, noise streams
- `models/`      trained networks, checkpoint folders, training
- `analysis/`    neighbours, locality views, per-step statistics
- `studies/`     what runs many runs: comparison with a reference, calibration, the benchmark
- `hub/`         export bundles, push and pull of runs
- `serving/`     the device worker, ZeroGPU, the policy gate, launch settings, the load test
- `cli/`         `python -m studio ...`: one module per command group, the run flags defined once
- `ui/`          the Gradio page, one module per tab

Import rules (tests/test_layout.py checks them): no import cycles, lazy imports included; the core
(data, denoisers, diffusion, models, analysis) never imports serving, hub, cli or ui; analysis never
imports engine; only cli and ui may import everything.
"""

from pathlib import Path

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, every run, export and Hub push records it


def resource_dir(name: str) -> Path:
    """The top-level `presets` or `assets` folder: the installed package's copy (studio/_resources/, put there
    by setup.py when a wheel is built) first, else the repository checkout's."""
    here = Path(__file__).resolve().parent
    installed = here / "_resources" / name
    return installed if installed.is_dir() else here.parent / name
