import pytest
import torch

from studio.config import RunConfig
from studio.data import load_dataset
from studio.diffusion.loop import Cancelled
from studio.engine import execute, prepare
from studio.runs import load_run, save_run


def cfg(**over) -> RunConfig:
    base = {"dataset": {"name": "digits"}, "denoiser": {"name": "optimal"},
            "sampler": {"name": "ddim", "steps": 50}, "n": 16, "seed": 0, "device": "cpu"}
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            base.setdefault(section, {})[field] = value
        else:
            base[key] = value
    return RunConfig.from_dict(base)


def test_optimal_ddim_memorises_digits():
    """The exact optimal denoiser reproduces training images: every final sample is one (to 1e-4 RMS)."""
    run = execute(cfg())
    data = load_dataset("digits").flat().double()
    samples = run.samples.reshape(16, -1).double()
    rms = torch.cdist(samples, data).min(1).values / samples.shape[1] ** 0.5
    assert rms.max() < 1e-4
    assert run.metrics["summary"]["memorisation_rate"] == 1.0
    assert run.metrics["timings"]["sampling_s"] > 0
    assert len({tuple(s) for s in samples.round(decimals=3).tolist()}) > 4  # not one image copied 16 times


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_any_batch_size(sampler):
    a = execute(cfg(sampler__name=sampler, sampler__steps=20, denoiser__name="wiener", n=16))
    b = execute(cfg(sampler__name=sampler, sampler__steps=20, denoiser__name="wiener", n=16, batch_size=1))
    assert torch.allclose(a.samples, b.samples, atol=1e-5)
    first = execute(cfg(sampler__name=sampler, sampler__steps=20, denoiser__name="wiener", n=1))
    assert torch.allclose(first.samples[0], a.samples[0], atol=1e-5)
    other = execute(cfg(sampler__name=sampler, sampler__steps=20, denoiser__name="wiener", n=16, seed=1))
    assert not torch.allclose(other.samples, a.samples, atol=1e-3)


def test_x_T_is_the_same_whichever_denoiser_runs():
    xs = [next(iter(prepare(cfg(denoiser__name=name)).steps())).x_t for name in ("optimal", "wiener", "nearest")]
    assert torch.equal(xs[0], xs[1]) and torch.equal(xs[0], xs[2])


def test_cancel_stops_after_the_step_that_asked():
    seen = []

    def on_step(step):
        seen.append(step.k)
        return step.k < 3

    with pytest.raises(Cancelled) as err:
        execute(cfg(sampler__steps=200), on_step)
    assert seen == [0, 1, 2, 3] and err.value.steps_done == 4


def test_clip_x0_option():
    plain = execute(cfg(denoiser__name="wiener", sampler__steps=10, n=8))
    clipped = execute(cfg(denoiser__name="wiener", sampler__steps=10, n=8, sampler__clip_x0=True))
    assert plain.trajectory.x0.abs().max() > 1.0
    assert clipped.trajectory.x0.abs().max() <= 1.0


def test_run_folder_round_trip(tmp_path):
    run = execute(cfg(sampler__steps=12, n=4))
    folder = save_run(run, tmp_path / "run")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.yaml", "metrics.json", "samples.png", "tensors.safetensors", "trajectory.gif",
                     "trajectory.png"]
    back = load_run(folder)
    assert back.run_id == run.run_id
    assert back.config.to_dict() == run.config.to_dict()
    assert torch.equal(back.trajectory.x_t, run.trajectory.x_t) and back.trajectory.x_t.shape == (12, 4, 1, 8, 8)
    assert back.trajectory.timesteps.dtype == torch.int64 and back.trajectory.alpha_bar.dtype == torch.float64
    assert torch.equal(back.trajectory.extras["neighbours"], run.trajectory.extras["neighbours"])
    assert [r["t"] for r in back.metrics["per_step"]] == run.trajectory.timesteps.tolist()
    save_run(run, folder)  # overwriting an existing run folder is atomic too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_points_dataset_runs_with_every_core_denoiser():
    for name in ("optimal", "nearest", "wiener"):
        run = execute(cfg(dataset__name="moons", denoiser__name=name, sampler__steps=10, n=8))
        assert run.samples.shape == (8, 2) and torch.isfinite(run.samples).all()


@pytest.mark.gpu
@pytest.mark.parametrize("denoiser", ["optimal", "wiener", "nearest"])
def test_cpu_and_cuda_give_the_same_samples(denoiser):
    cpu = execute(cfg(denoiser__name=denoiser, sampler__name="ddpm", sampler__steps=20, n=8))
    gpu = execute(cfg(denoiser__name=denoiser, sampler__name="ddpm", sampler__steps=20, n=8, device="cuda"))
    assert torch.allclose(cpu.trajectory.x_t[0], gpu.trajectory.x_t[0])  # identical x_T
    assert torch.allclose(cpu.samples, gpu.samples, atol=1e-4)


def test_run_timings_split_where_the_time_went():
    run = execute(cfg(denoiser__name="pca_locality", dataset__size=300, sampler__steps=6, n=4))
    t = run.metrics["timings"]
    for key in ("load_s", "fit_s", "setup_s", "denoise_s", "overhead_s", "analysis_s", "sampling_s"):
        assert t[key] >= 0, key
    assert t["setup_s"] > 0  # six new noise levels: six masks and plans
    assert t["setup_s"] + t["denoise_s"] + t["overhead_s"] <= t["sampling_s"] * 1.05 + 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("sampler", ["ddim", "generalized"])
def test_the_loop_does_not_synchronise_the_host_per_step(sampler):
    """Only the end of a run waits for the GPU: every step before the last runs under sync-debug 'error'."""
    from studio.denoisers import make_denoiser
    from studio.diffusion import loop
    from studio.diffusion.noise import NoiseSource
    from studio.diffusion.samplers import make_sampler
    from studio.diffusion.schedules import Schedule

    ds = load_dataset("digits")
    den = make_denoiser("optimal", device="cuda").fit(ds)
    records = loop.steps(den, make_sampler(sampler, Schedule.build(), 10), NoiseSource(0, 8, ds.shape, "cuda"),
                         clock={})
    stack = loop.HostStack(torch.float32)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(9):
            stack.put(k, 10, next(records).x0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rest = list(records)
    assert len(rest) == 1 and rest[0].final is not None
    cpu = execute(cfg(sampler__name=sampler, sampler__steps=10, n=8))
    assert torch.allclose(stack.ready(9), cpu.trajectory.x0[:9], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("denoiser, sampler", [
    *[(name, "generalized") for name in ("optimal", "nearest", "wiener", "pca_locality", "ls", "els", "scfdm")],
    ("optimal", "dpmpp_2m"), ("optimal", "euler_ancestral"),
])
def test_a_gpu_trajectory_holds_each_step_as_it_was(denoiser, sampler):
    """A GPU run keeps its steps' tensors on the device until the end: each must still hold what the step
    produced (no denoiser or sampler may reuse or change them in place), as clones taken during the run show."""
    seen = []

    def snapshot(step):
        seen.append([step.x_t.clone(), step.x0.clone(), {k: v.clone() for k, v in step.extras.items()}])

    params = {"sampler__gamma": 2.0} if sampler == "generalized" else {}
    run = execute(cfg(denoiser__name=denoiser, dataset__size=300, sampler__name=sampler, sampler__steps=5, n=4,
                      device="cuda", **params), on_step=snapshot)
    traj = run.trajectory
    for k, (x_t, x0, extras) in enumerate(seen):
        assert torch.equal(traj.x_t[k], x_t.cpu()) and torch.equal(traj.x0[k], x0.cpu()), k
        assert all(torch.equal(traj.extras[key][k], v.cpu()) for key, v in extras.items()), k


def test_the_run_analysis_searches_the_data_copy_the_denoiser_holds():
    """Neighbour statistics run on the run's device against the fitted denoiser's bank, not a second copy of
    the data (at 3x64x64, N=30,000 the copy and its norms took 0.6 s)."""
    from studio.analysis import neighbours
    from studio.engine import fitted_denoiser, prepare

    neighbours._BANKS.clear()
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 300}, "denoiser": {"name": "optimal"},
                               "sampler": {"name": "ddim", "steps": 3}, "n": 2, "seed": 0, "device": "cpu"})
    run = execute(cfg)
    prep = prepare(cfg)
    assert fitted_denoiser(cfg, prep.dataset, prep.device) is prep.denoiser
    assert neighbours.bank_for(prep.dataset, prep.device) is prep.denoiser.bank
    assert run.metrics["summary"]["nearest_index"] == neighbours.nearest(prep.dataset, run.samples, 2).indices[:, 0].tolist()
