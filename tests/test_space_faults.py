"""Faults through the app: out of memory, NaN, a dying worker thread, a crash while saving, a cancel. The page
says what happened, and the previous run stays on the page and on disk."""

import hashlib
import html
import re

import pytest
import torch
import yaml

from space_app import Page, served
from studio import engine, runs
from studio.serving import worker
from studio.config import RunConfig
from studio.denoisers.base import Denoised
from studio.denoisers.wiener import Wiener

# the run events' outputs, in the order the page receives them
PROGRESS, RESULTS, SUMMARY, FINAL, ANIMATION, STEP, PAIRS = range(7)
STATE = re.compile(r'data-state="(\w+)"')


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with served(tmp_path_factory.mktemp("outputs")) as running:
        yield running


def config(steps=6, n=4, seed=0) -> dict:
    return {"dataset": {"name": "digits", "size": 200}, "denoiser": {"name": "wiener"},
            "sampler": {"name": "ddim", "steps": steps}, "n": n, "seed": seed, "device": "cpu"}


def run(page: Page, **kw) -> dict:
    return page.call("run_config", None, yaml.safe_dump(config(**kw)))


def shown_progress(page: Page) -> tuple[str, str]:
    bar = html.unescape(page.frames[-1][PROGRESS])
    return STATE.search(bar).group(1), bar


def folder_state(root) -> dict[str, str]:
    """Every file under the outputs folder (hidden ones too) with a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def first_run(app):
    """A page with a finished run A: (page, A's final outputs, the outputs folder as it was after A)."""
    page = Page(app)
    done = run(page, seed=0)
    assert done["success"], done
    data = done["output"]["data"]
    assert STATE.search(data[PROGRESS]).group(1) == "done"
    return page, data, folder_state(app.outputs)


def assert_a_is_still_shown(page: Page, a_data: dict, app, before: dict) -> None:
    """The page still holds run A (its trajectory viewer answers from A) and nothing on disk changed."""
    for frame in page.frames:  # the failed run never replaced the results or hid them
        assert frame[FINAL] == {"__type__": "update"} and frame[RESULTS] == {"__type__": "update"}
    step = page.call("show_step", None, 6)
    assert step["success"] and step["output"]["data"][0]["path"] == a_data[PAIRS]["path"]
    assert folder_state(app.outputs) == before


def test_nan_at_step_3_stops_the_run_with_its_message(app, first_run, monkeypatch):
    page, a_data, before = first_run
    calls = {"n": 0}
    original = Wiener.denoise

    def nan_at_3(self, x_t, t, ab):
        out = original(self, x_t, t, ab)
        calls["n"] += 1
        return Denoised(out.x0 * float("nan"), out.extras, out.shared) if calls["n"] == 3 else out

    monkeypatch.setattr(Wiener, "denoise", nan_at_3)
    done = run(page, seed=1)
    assert done["success"] is False
    message = done["output"]["error"]
    assert re.fullmatch(r"step 3/6 \(t=\d+\): denoiser wiener produced NaN or inf in x̂0; the run was stopped "
                        r"\(try another temperature, schedule or denoiser\)", message)
    state, bar = shown_progress(page)
    assert state == "error" and message in bar
    assert calls["n"] == 3
    assert_a_is_still_shown(page, a_data, app, before)


def test_out_of_memory_is_retried_with_smaller_batches(app, monkeypatch):
    original = Wiener.denoise
    batches = []

    def tight(self, x_t, t, ab):
        batches.append(len(x_t))
        if len(x_t) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (fake allocator)")
        return original(self, x_t, t, ab)

    monkeypatch.setattr(Wiener, "denoise", tight)
    page = Page(app)
    done = run(page, steps=3, n=4, seed=5)
    assert done["success"], done
    assert batches[0] == 4 and set(batches[1:]) == {1}  # one failure, then quarter batches to the end
    folder = re.search(r"saved in `([^`]+)`", done["output"]["data"][SUMMARY]).group(1)
    monkeypatch.undo()
    assert torch.allclose(runs.load_run(folder).samples, engine.execute(RunConfig.from_dict(config(3, 4, 5))).samples,
                          atol=1e-6)


def test_out_of_memory_twice_is_a_clear_message_in_the_page(app, first_run, monkeypatch):
    page, a_data, before = first_run

    def never_fits(self, x_t, t, ab):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (fake allocator)")

    monkeypatch.setattr(Wiener, "denoise", never_fits)
    done = run(page, seed=2)
    assert done["success"] is False
    message = "step 1/6: wiener ran out of GPU memory even with batches of 1 samples; use fewer samples, " \
              "a smaller dataset or the CPU"
    assert done["output"]["error"] == message
    state, bar = shown_progress(page)
    assert state == "error" and message in bar
    assert_a_is_still_shown(page, a_data, app, before)


def test_a_crash_while_saving_leaves_no_half_folder(app, first_run, monkeypatch):
    page, a_data, before = first_run
    written = []
    real_save = runs.save_file

    def disk_full(tensors, path):
        real_save(tensors, path)  # the tensors land in the temporary folder, then the disk "fills up"
        written.append(path)
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(runs, "save_file", disk_full)
    done = run(page, seed=3)
    assert done["success"] is False
    assert done["output"]["error"] == "the run failed: OSError: [Errno 28] No space left on device (simulated)"
    assert written and "digits-wiener" in written[0]  # the crash came mid-save
    assert_a_is_still_shown(page, a_data, app, before)  # no new folder, no leftover temporary folder


def test_a_cancelled_run_keeps_the_previous_results(app, first_run, monkeypatch):
    import threading
    import time

    page, a_data, before = first_run
    original = Wiener.denoise
    started = threading.Event()

    def slow(self, x_t, t, ab):
        started.set()
        time.sleep(0.05)
        return original(self, x_t, t, ab)

    monkeypatch.setattr(Wiener, "denoise", slow)
    canceller = threading.Thread(target=lambda: started.wait(20) and page_cancel(app, page))
    canceller.start()
    done = run(page, steps=200, seed=4)
    canceller.join(20)
    state, bar = shown_progress(page)
    assert done["success"] and state == "cancelled" and "cancelled after" in bar
    assert_a_is_still_shown(page, a_data, app, before)


def page_cancel(app, page: Page) -> None:
    """Press Cancel in the same browser session (a second connection, as the browser makes)."""
    Page(app, session_hash=page.session_hash).call("cancel", None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_thread_that_dies_is_restarted(app, monkeypatch):
    monkeypatch.setattr(worker, "_WORKERS", {})  # a fresh CPU worker for this test
    real = worker.job_events

    def dies(job):
        raise SystemExit("worker thread killed")

    monkeypatch.setattr(worker, "job_events", dies)
    page = Page(app)
    done = run(page, steps=2)
    assert done["success"] is False
    assert done["output"]["error"] == "the worker running this job stopped; please run it again"
    dead = worker._WORKERS["cpu"]._threads[0]
    assert not dead.is_alive()
    monkeypatch.setattr(worker, "job_events", real)
    again = run(page, steps=2)
    assert again["success"] and STATE.search(again["output"]["data"][PROGRESS]).group(1) == "done"
    assert worker._WORKERS["cpu"]._threads[0] is not dead and worker._WORKERS["cpu"]._threads[0].is_alive()


def test_atomic_run_folder_replacing_an_existing_one(tmp_path, monkeypatch):
    """A crash while rewriting a folder keeps the old folder, byte for byte, and leaves nothing beside it."""
    first = engine.execute(RunConfig.from_dict(config(2, 2, 0)))
    folder = runs.save_run(first, tmp_path / "run")
    before = folder_state(tmp_path)

    def crash(tensors, path):
        raise OSError("simulated crash mid-save")

    monkeypatch.setattr(runs, "save_file", crash)
    with pytest.raises(OSError, match="simulated crash"):
        runs.save_run(engine.execute(RunConfig.from_dict(config(2, 2, 1))), folder)
    assert folder_state(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
