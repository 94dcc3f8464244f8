"""The first-use warm-up (studio.denoisers.warm): what it runs, that it runs once, and that it changes no result."""

import pytest
import torch

from studio.diffusion import warm
from studio.denoisers.registry import make_denoiser


def test_the_synthetic_levels_reach_the_sparse_tiles_the_triton_kernels_serve():
    """The warm-up only compiles what its calls launch: its levels must reach the sparse tiles (the all-ones
    columns go to optimal's kernel, which it warms beside pca_locality)."""
    data = warm.synthetic(3, 64)
    den = make_denoiser("pca_locality").fit(data)
    sampler = warm.warm_sampler()
    levels = [sampler.point(k)[1] for k in range(len(sampler))]
    assert len(levels) == warm.STEPS and all(den.mask(ab).plan.n_tiles for ab in levels)
    assert warm.RUNS["pca_locality"] == (("pca_locality", {}), ("optimal", {}))
    assert data.x.min() >= -1 and data.x.max() <= 1 and data.n == 64 and warm.synthetic(1, 65).n % 16


def test_nothing_to_warm_on_the_cpu_or_for_denoisers_that_need_files():
    assert warm.warm_up("pca_locality", "cpu") is False
    assert warm.warm_up_in_background("optimal", "cpu") is None
    assert warm.warm_up("unet", "cpu") is False and "unet" not in warm.WARMABLE


@pytest.mark.gpu
def test_warm_up_runs_once_per_kind_and_changes_no_result():
    from studio.config import RunConfig
    from studio.engine import execute

    cfg = RunConfig.from_dict({"dataset": {"name": "digits"}, "denoiser": {"name": "pca_locality"},
                               "sampler": {"name": "ddim", "steps": 6}, "n": 4, "seed": 3, "device": "cuda"})
    before = execute(cfg).trajectory.samples
    assert warm.warm_up("pca_locality", "cuda", 1, False) in (True, False)
    assert warm.warm_up("pca_locality", "cuda", 1, False) is False  # once per process and kind
    assert torch.equal(execute(cfg).trajectory.samples, before)
