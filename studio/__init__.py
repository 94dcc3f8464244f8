"""Analytic Diffusion Studio: training-free diffusion denoisers beside trained ones.

The flow, one way only:

    config -> dataset -> denoiser.fit -> sampler loop (denoiser.denoise per step) -> Run -> analysis -> UI / export

Top level: the flow and what it shares. `params` (declared parameters), `config` (RunConfig), `presets`,
`engine` (runs a config), `runs` (a finished run and its folder, and which `--out` folders may be written),
`images`, `cache`, `limits` (instance limits read from the environment, whether the instance is shared, and the
capped YAML reader every config goes through). The Python API lives here: `studio.run(config)` (a thin
wrapper over engine.execute) and `studio.RunConfig` / `studio.Run`, imported on first use.

Packages, each named after its job:
- `data/`        dataset registry (bundled, Hub-downloaded, user folders), Dataset, build cache, the Hub
                 download client
- `denoisers/`   one module per denoiser, the registry, the Denoiser contract, the exact online softmax, the
                 training data on the device as float32 (softmax) or 8-bit codes (byte_bank, with its Triton
                 kernels in softmax_triton);
  `masked/`      the masked-softmax machinery of pca_locality and ls (masks, column plans, torch tiles,
                 Triton tiles; the Triton module depends on the plan, never the reverse)
  `windows/`     the window machinery of els (clipped windows by shape, deduplicated training windows, the
                 torch scan and the fused Triton kernel; both depend on the geometry, never the reverse)
- `diffusion/`   schedules, spacing, samplers, the sampling loop, inversion, noise streams
- `models/`      trained networks, checkpoint folders (diffusers pipeline layout), training, an analytic
                 denoiser as a diffusers `unet` (diffusers_wrap)
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

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the Python API's names; imported on first use so `import studio` stays light
    from studio.config import RunConfig
    from studio.runs import Run

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, every run, export and Hub push records it


def resource_dir(name: str) -> Path:
    """The top-level `presets` or `assets` folder: the installed package's copy (studio/_resources/, put there
    by setup.py when a wheel is built) first, else the repository checkout's."""
    here = Path(__file__).resolve().parent
    installed = here / "_resources" / name
    return installed if installed.is_dir() else here.parent / name


def run(config: "RunConfig | dict[str, Any] | str | Path", progress: Callable[[int, int], Any] | None = None
        ) -> "Run":
    """Run one config and return the finished Run (samples, trajectory, metrics): a RunConfig, a dict in the
    RunConfig YAML shape, or a YAML/preset file path or a preset name. `progress(k, K)` is called after step k.
    """
    from studio.config import RunConfig
    from studio.engine import execute
    from studio.presets import load_preset, presets_dir

    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path if path.suffix in (".yaml", ".yml") else presets_dir() / f"{path.name}.yaml"
        config = load_preset(path).config
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(dict(config))

    def on_step(step: Any) -> None:  # never returns False, which would cancel the run
        if progress is not None:
            progress(step.k + 1, step.K)

    return execute(cfg, on_step)


def __getattr__(name: str) -> Any:
    """`studio.RunConfig` and `studio.Run`, imported on first use (torch and the registries are slow)."""
    if name == "RunConfig":
        from studio.config import RunConfig

        return RunConfig
    if name == "Run":
        from studio.runs import Run

        return Run
    raise AttributeError(f"module 'studio' has no attribute {name!r}")


__all__ = ["Run", "RunConfig", "__version__", "resource_dir", "run"]
