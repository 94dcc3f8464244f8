"""ZeroGPU: a fake `spaces` module that behaves like the real one where it matters (the decorated call runs
apart from the server: arguments and yielded values cross a serialisation boundary, GPU work happens only
while the call runs) records the requested duration and where the work ran."""

import importlib
import inspect
import pickle
import sys
import types

import pytest
import torch

from studio import engine
from studio.serving import worker, zerogpu
from studio.config import RunConfig
from studio.diffusion import loop


class FakeSpaces(types.ModuleType):
    """`spaces.GPU` for generator functions: duration resolved from the call's arguments (static or callable),
    arguments and every yielded value round-tripped through pickle, `inside` True only while the task runs."""

    def __init__(self, zero_gpu: bool = True) -> None:
        super().__init__("spaces")
        self.config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=zero_gpu))
        self.durations: list[int] = []
        self.decorated: list = []
        self.inside = False
        self.closed = 0

    def GPU(self, task=None, *, duration=None):
        if task is None:
            return lambda fn: self.GPU(fn, duration=duration)
        self.decorated.append(task)

        def crossing(*args, **kwargs):
            self.durations.append(duration(*args, **kwargs) if callable(duration) else duration)
            return pickle.loads(pickle.dumps((args, kwargs)))

        def regular(*args, **kwargs):
            args, kwargs = crossing(*args, **kwargs)
            self.inside = True
            try:
                return pickle.loads(pickle.dumps(task(*args, **kwargs)))
            finally:
                self.inside = False

        def generator(*args, **kwargs):
            args, kwargs = crossing(*args, **kwargs)
            gen = task(*args, **kwargs)
            try:
                while True:
                    self.inside = True
                    try:
                        value = next(gen)
                    except StopIteration:
                        return
                    finally:
                        self.inside = False
                    yield pickle.loads(pickle.dumps(value))
            finally:
                gen.close()
                self.closed += 1

        return generator if inspect.isgeneratorfunction(task) else regular


def _reset():
    zerogpu._spaces.cache_clear()
    zerogpu._gpu_job.cache_clear()


@pytest.fixture
def fake_spaces(monkeypatch):
    fake = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    _reset()
    yield fake
    _reset()


@pytest.fixture
def gpu_work_only_inside(monkeypatch, fake_spaces):
    """Fitting and denoising assert they run inside the fake GPU call; counts the denoiser calls."""
    calls = {"denoise": 0}
    fit, denoise = engine.fitted_denoiser, loop.denoise_batched

    def fitted(*args, **kwargs):
        assert fake_spaces.inside, "a denoiser was fitted outside spaces.GPU"
        return fit(*args, **kwargs)

    def denoised(*args, **kwargs):
        assert fake_spaces.inside, "a denoiser ran outside spaces.GPU"
        calls["denoise"] += 1
        return denoise(*args, **kwargs)

    monkeypatch.setattr(engine, "fitted_denoiser", fitted)
    monkeypatch.setattr(loop, "denoise_batched", denoised)
    return calls


def cfg(steps=4, seed=3, dataset=None, n=3, **top):
    return RunConfig.from_dict({"dataset": dataset or {"name": "digits", "size": 300}, "denoiser": {"name": "optimal"},
                                "sampler": {"name": "ddim", "steps": steps}, "n": n, "seed": seed, "device": "cpu",
                                **top})


def test_duration_formula_floor_and_ceiling():
    # digits, 16 samples, 50 steps: 10 + 50 (0.05 + 16·1797·64/5e9) = 12.5 s -> the floor
    assert zerogpu.estimate_seconds([cfg(steps=50, n=16, dataset={"name": "digits"})]) == 20
    # patches (20,000 × 3×16×16), 64 samples, 50 steps: 10 + 50 (0.05 + 64·20000·768/5e9) = 22.3 s
    patches = cfg(steps=50, n=64, dataset={"name": "patches"})
    assert zerogpu.estimate_seconds([patches]) == round(10 + 50 * (0.05 + 64 * 20000 * 768 / 5e9)) == 22
    assert zerogpu.estimate_seconds([patches, patches]) == round(2 * (10 + 50 * (0.05 + 64 * 20000 * 768 / 5e9)))
    # the largest patches set with many steps: capped
    big = cfg(steps=500, n=64, dataset={"name": "patches", "size": 200000})
    assert zerogpu.estimate_seconds([big]) == 120
    # plain dicts (what the GPU call receives) give the same answer; bad input gets the floor
    assert zerogpu.estimate_seconds([patches.to_dict()]) == 22
    assert zerogpu.estimate_seconds([{"n": -1}]) == 20


def test_unknown_dataset_size_is_budgeted_at_the_instance_limit(monkeypatch):
    mnist = RunConfig.from_dict({"dataset": {"name": "mnist"}, "sampler": {"steps": 40}, "n": 64})
    assert zerogpu.estimate_seconds([mnist]) == round(10 + 40 * (0.05 + 64 * 60000 * 784 / 5e9)) == 36
    monkeypatch.setenv("STUDIO_MAX_DATASET", "30000")
    assert zerogpu.estimate_seconds([mnist]) == round(10 + 40 * (0.05 + 64 * 30000 * 784 / 5e9)) == 24


def test_without_spaces_nothing_changes(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    _reset()
    try:
        assert not zerogpu.enabled()
        handler = lambda: 1  # noqa: E731
        assert zerogpu.gpu(handler) is handler
        events = list(zerogpu.stream([cfg()]))
        assert events[-1].kind == "done"
        assert any(e.kind == "queued" or e.kind == "preparing" for e in events)
    finally:
        _reset()


def test_spaces_off_zerogpu_is_not_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", FakeSpaces(zero_gpu=False))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    _reset()
    try:
        assert not zerogpu.enabled()
    finally:
        _reset()
    monkeypatch.setitem(sys.modules, "spaces", FakeSpaces())
    monkeypatch.delenv("SPACES_ZERO_GPU")
    _reset()
    try:
        assert not zerogpu.enabled()
    finally:
        _reset()


def test_the_job_runs_inside_one_gpu_call(gpu_work_only_inside, fake_spaces, tmp_path):
    assert zerogpu.enabled()
    config = cfg(steps=4, seed=7)
    jobs = []
    events = list(zerogpu.stream([config], save_to=lambda part, run: tmp_path / run.run_id, on_job=jobs.append))
    kinds = [e.kind for e in events]
    assert kinds == ["preparing", "ready", "step", "step", "step", "step", "result", "done"]
    assert fake_spaces.durations == [zerogpu.estimate_seconds([config])] == [20]
    assert fake_spaces.decorated == [zerogpu._job_on_gpu] and fake_spaces.closed == 1
    assert gpu_work_only_inside["denoise"] == 4
    result = events[-2]
    # the dataset came back server-side and the run was written here, from the server process
    assert result.dataset.n == 300 and events[1].dataset is result.dataset
    assert result.folder == tmp_path / result.run.run_id and (result.folder / "samples.png").is_file()
    fake_spaces.inside = True  # the reference run, computed here on purpose
    assert torch.equal(result.run.samples, engine.execute(cfg(steps=4, seed=7)).samples)
    fake_spaces.inside = False
    assert len(jobs) == 1 and not jobs[0].cancelled
    assert not torch.cuda.is_initialized()


def test_cancel_closes_the_gpu_call_within_one_step(gpu_work_only_inside, fake_spaces):
    jobs = []
    seen = []
    for event in zerogpu.stream([cfg(steps=50)], on_job=jobs.append):
        seen.append(event)
        if event.kind == "step" and event.k == 2:
            jobs[0].cancel()
    assert [e.kind for e in seen][-1] == "cancelled" and seen[-1].k == 2
    assert gpu_work_only_inside["denoise"] == 2 and fake_spaces.closed == 1


def test_limits_and_errors_come_back_as_one_error_event(gpu_work_only_inside, fake_spaces, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_STEPS", "10")
    events = list(zerogpu.stream([cfg(steps=11)]))
    assert [e.kind for e in events] == ["error"]
    assert "sampler.steps: 11 is over this instance's limit of 10 (set STUDIO_MAX_STEPS" in events[0].message
    assert fake_spaces.durations == []  # refused before asking for a GPU

    checked = loop.denoise_batched

    def nan(*args, **kwargs):
        out = checked(*args, **kwargs)
        return type(out)(out.x0 * float("nan"), out.extras, out.shared)

    monkeypatch.setattr(loop, "denoise_batched", nan)
    events = list(zerogpu.stream([cfg(steps=5)]))
    assert events[-1].kind == "error" and "step 1/5" in events[-1].message and "optimal" in events[-1].message


def test_the_page_runs_its_job_inside_one_gpu_call(fake_spaces, gpu_work_only_inside, tmp_path):
    """Through the app on a (fake) ZeroGPU Space: Run asks for the estimated duration, the steps run inside
    the call, the page gets the result and the server writes the run folder."""
    from space_app import Page, served

    importlib.reload(zerogpu)  # what an app start on the Space does: import-time registration
    try:
        assert fake_spaces.decorated == [zerogpu._job_on_gpu]
        text = cfg(steps=5, seed=11).to_yaml()
        with served(tmp_path / "outputs") as app:
            assert [d for d in fake_spaces.decorated if d is not zerogpu._job_on_gpu]  # invert is decorated too
            done = Page(app).call("run_config", None, text)
            assert done["success"], done
            assert 'data-state="done"' in done["output"]["data"][0]
            assert fake_spaces.durations == [zerogpu.estimate_seconds([RunConfig.from_yaml(text)])]
            assert gpu_work_only_inside["denoise"] == 5 and fake_spaces.closed == 1
            assert len([p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]) == 1
        assert not torch.cuda.is_initialized()
    finally:
        _reset()


def test_warm_up_stays_on_the_cpu(fake_spaces, monkeypatch):
    """spaces shows a GPU outside its calls; the background warm-up must not use it."""
    from studio.ui.loader import start

    asked = []
    resolve = engine.resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(engine, "resolve_device", lambda name: asked.append(name) or resolve("cpu"))
    start(warm_up=True, delay=0).join(60)
    assert asked == ["cpu"]
