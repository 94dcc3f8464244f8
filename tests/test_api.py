"""The Python API (`from studio import RunConfig, run`), the quickstart notebook, and an analytic denoiser as
the `unet` of a diffusers pipeline, which must sample what the studio's own DDIM samples from the same x_T."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"dataset": {"name": "digits"}, "denoiser": {"name": "wiener"}, "sampler": {"name": "ddim", "steps": 5},
         "n": 3, "seed": 0, "device": "cpu"}


def test_import_studio_stays_light():
    code = "import sys, studio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_takes_a_dict_a_config_or_a_preset_name():
    from studio import Run, RunConfig, run

    seen = []
    a = run(SMALL, progress=lambda k, K: seen.append((k, K)))
    assert isinstance(a, Run) and a.samples.shape == (3, 1, 8, 8) and torch.isfinite(a.samples).all()
    assert seen == [(k, 5) for k in range(1, 6)]
    b = run(RunConfig.from_dict(SMALL))
    assert torch.equal(a.samples, b.samples)
    assert run("wiener_blurs").config.denoiser.name == "wiener"
    with pytest.raises(ValueError, match="preset"):
        run("no_such_preset")
    with pytest.raises(AttributeError):
        import studio

        studio.no_such_name  # noqa: B018


def test_a_progress_callback_returning_false_does_not_cancel():
    from studio import run

    assert run(SMALL, progress=lambda k, K: False).samples.shape == (3, 1, 8, 8)


def test_quickstart_notebook_runs():
    """Execute the notebook's code cells in order, in one namespace, as a kernel would."""
    notebook = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    assert notebook["nbformat"] == 4
    namespace: dict = {"__name__": "__main__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    assert namespace["samples"].shape == (16, 1, 8, 8)
    assert namespace["images"].shape == (4, 8, 8, 1)
    assert 0 <= namespace["summary"]["memorisation_rate"] <= 1


@pytest.mark.parametrize("name", ["wiener", "optimal"])
def test_diffusers_ddim_pipeline_with_the_analytic_unet_equals_the_studio_sampler(name):
    from diffusers import DDIMPipeline, DDIMScheduler

    from studio.data.registry import load_dataset
    from studio.denoisers.registry import make_denoiser
    from studio.diffusion import loop
    from studio.diffusion.noise import NoiseSource
    from studio.diffusion.samplers import make_sampler
    from studio.diffusion.schedules import Schedule
    from studio.models.diffusers_wrap import AnalyticUNet

    ds = load_dataset("digits")
    denoiser = make_denoiser(name).fit(ds)
    K, n = 20, 4
    scheduler = DDIMScheduler(clip_sample=False)  # linear β 1e-4..0.02, T=1000, leading spacing, like ours
    unet = AnalyticUNet(denoiser, scheduler)
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=n, num_inference_steps=K, generator=torch.Generator().manual_seed(7), eta=0.0,
                  output_type="pt").images  # [n, 1, 8, 8] in [0, 1]
    x_T = torch.randn((n, *ds.shape), generator=torch.Generator().manual_seed(7))  # the pipeline's draw
    traj = loop.collect(loop.steps(denoiser, make_sampler("ddim", Schedule.build(), K, "leading"),
                                   NoiseSource(0, n, ds.shape), x_T=x_T))
    assert torch.allclose(theirs, (traj.samples / 2 + 0.5).clamp(0, 1), atol=1e-5)
    # Unclamped, step by step: the wrapper's ε through diffusers' DDIM step reproduces our x_t at every step.
    scheduler.set_timesteps(K)
    assert scheduler.timesteps.tolist() == traj.timesteps.tolist()
    x = traj.x_t[0]
    for k, t in enumerate(scheduler.timesteps):
        assert torch.allclose(x, traj.x_t[k], atol=1e-5), k
        eps = unet(x, t).sample
        ab = float(scheduler.alphas_cumprod[t])
        assert torch.allclose((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab), traj.x0[k], atol=1e-4)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    assert torch.allclose(x, traj.samples, atol=1e-5)


def test_analytic_unet_properties_and_refusals():
    from diffusers import DDPMScheduler

    from studio.data.registry import load_dataset
    from studio.denoisers.registry import make_denoiser
    from studio.models.diffusers_wrap import AnalyticUNet

    unet = AnalyticUNet(make_denoiser("wiener").fit(load_dataset("digits")), DDPMScheduler())
    assert (unet.config.sample_size, unet.config.in_channels) == (8, 1)
    assert unet.device == torch.device("cpu") and unet.dtype == torch.float32
    x = torch.randn(3, 1, 8, 8)
    per_sample = unet(x, torch.tensor([10, 500, 10])).sample
    assert torch.allclose(per_sample[1:2], unet(x[1:2], 500).sample)
    assert unet(x, 10, return_dict=False)[0].shape == x.shape
    with pytest.raises(ValueError, match="not images"):
        AnalyticUNet(make_denoiser("wiener").fit(load_dataset("moons")), DDPMScheduler())
