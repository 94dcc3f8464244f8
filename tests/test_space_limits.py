"""Every instance limit, through the app: a request over it gets a message with the limit's value (and the
variable that changes it) in the page, before any work is done."""

import html
import re
import threading
import time
import zipfile

import httpx
import pytest
import yaml
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from space_app import Page, served
from studio.serving import launch as serving, worker
from studio.config import RunConfig
from studio.denoisers.wiener import Wiener
from studio.limits import LimitError, Limits
from studio.serving.policy import check_data_path, dataset_size_hint

UPLOAD_LIMIT = 100_000
PROGRESS = re.compile(r'data-state="(\w+)"')


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app with a small upload limit (Gradio reads it at launch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_MAX_UPLOAD_BYTES", str(UPLOAD_LIMIT))
        with served(tmp_path_factory.mktemp("outputs")) as running:
            yield running


def config_yaml(dataset=None, steps=4, n=3, **top) -> str:
    return yaml.safe_dump({"dataset": dataset or {"name": "digits", "size": 200}, "denoiser": {"name": "wiener"},
                           "sampler": {"name": "ddim", "steps": steps}, "n": n, "seed": 0, "device": "cpu", **top})


def refused(app, text: str) -> str:
    """Run `text` through /run_config and return the error the page showed (toast and progress bar agree)."""
    page = Page(app)
    done = page.call("run_config", None, text)
    assert done["success"] is False
    shown = html.unescape(page.frames[-1][0])
    assert PROGRESS.search(shown).group(1) == "error"
    assert done["output"]["error"] in shown
    return done["output"]["error"]


def image_folder(root, count: int):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (8, 8), color=i * 8).save(root / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("env,text,message", [
    ({"STUDIO_MAX_SAMPLES": "8"}, config_yaml(n=9),
     r"n \(number of samples\): 9 is over this instance's limit of 8 \(set STUDIO_MAX_SAMPLES to change it\)"),
    ({"STUDIO_MAX_STEPS": "20"}, config_yaml(steps=21),
     r"sampler\.steps: 21 is over this instance's limit of 20 \(set STUDIO_MAX_STEPS to change it\)"),
    ({"STUDIO_MAX_DATASET": "150"}, config_yaml(),
     r"dataset size: 200 is over this instance's limit of 150 \(set STUDIO_MAX_DATASET to change it\)"),
    ({"STUDIO_MAX_DATASET": "1000"}, config_yaml(dataset={"name": "digits"}),  # no size: the whole bundled set
     r"dataset size: 1,797 is over this instance's limit of 1,000"),
])
def test_each_run_limit_has_its_message_in_the_page(app, monkeypatch, env, text, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert re.search(message, refused(app, text))
    with pytest.raises(AppError, match=message):  # the same through the public API
        Client(app.url, verbose=False).predict(text, api_name="/run_config")


def test_the_loaded_dataset_size_is_checked_before_fitting(app, monkeypatch, tmp_path):
    folder = image_folder(tmp_path / "pictures", 30)
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("STUDIO_MAX_DATASET", "20")
    fitted = []
    monkeypatch.setattr(Wiener, "_fit", lambda self, ds: fitted.append(ds))
    text = config_yaml(dataset={"name": "folder", "path": str(folder), "resolution": 8, "channels": 1})
    assert "dataset size: 30 is over this instance's limit of 20 (set STUDIO_MAX_DATASET" in refused(app, text)
    assert fitted == []


def test_folders_outside_the_data_roots_are_refused(app, monkeypatch, tmp_path):
    folder = image_folder(tmp_path / "mine", 4)
    text = config_yaml(dataset={"name": "folder", "path": str(folder), "resolution": 8, "channels": 1})
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(tmp_path / "elsewhere"))
    assert (f"dataset.path: this instance reads folder datasets only from {tmp_path / 'elsewhere'} "
            "(set STUDIO_DATA_ROOTS to change it)") in refused(app, config_yaml(dataset={
                "name": "folder", "path": "/etc", "resolution": 8, "channels": 1}))
    assert "only from" in refused(app, text)
    monkeypatch.delenv("STUDIO_DATA_ROOTS")
    monkeypatch.setenv("SPACE_ID", "someone/studio")  # a Space reads no server folder unless told
    assert "reads folder datasets from no server folder (set STUDIO_DATA_ROOTS" in refused(app, text)


def test_upload_file_count_limit(app, monkeypatch, tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(30):
            zf.writestr(f"img/{i}.png", b"x")
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_FILES", "20")
    text = config_yaml(dataset={"name": "folder", "path": str(archive), "resolution": 8, "channels": 1})
    assert "many.zip holds 30 files, over the limit of 20 files (STUDIO_MAX_UPLOAD_FILES)" in refused(app, text)


def test_upload_size_is_refused_while_it_arrives(app):
    config = httpx.get(f"{app.url}config").json()
    assert config["max_file_size"] == UPLOAD_LIMIT  # the page refuses it before sending, too
    big = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("big.png", b"\0" * (UPLOAD_LIMIT + 1))})
    assert big.status_code == 413 and f"maximum allowed size of {UPLOAD_LIMIT} bytes" in big.text
    small = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("small.png", b"\0" * 100)})
    assert small.status_code == 200


@pytest.fixture
def slow_wiener(monkeypatch):
    """Wiener steps of 50 ms on a fresh CPU worker built from this test's limits; returns the calls made
    as (batch size, worker thread) in order. A 3-sample job's second step waits (up to 3 s) for a 2-sample
    job to start, so that which job runs first depends on the worker's threads, not on the machine's load."""
    original = Wiener.denoise
    calls = []
    small_started = threading.Event()

    def slow(self, x_t, t, ab):
        calls.append((len(x_t), threading.current_thread().name))
        if len(x_t) == 2:
            small_started.set()
        elif len(x_t) == 3 and [n for n, _ in calls].count(3) == 2:
            small_started.wait(3)
        time.sleep(0.05)
        return original(self, x_t, t, ab)

    monkeypatch.setattr(Wiener, "denoise", slow)
    monkeypatch.setattr(worker, "_WORKERS", {})
    return calls


def wait_until_running(job, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        outputs = job.outputs()
        if outputs and PROGRESS.search(outputs[-1][0]).group(1) == "running":
            return
        time.sleep(0.05)
    raise AssertionError("the job never started")


def test_queue_length_limit(app, monkeypatch, slow_wiener):
    monkeypatch.setenv("STUDIO_QUEUE_LENGTH", "1")
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    running = first.submit(config_yaml(steps=200), api_name="/run_config")
    wait_until_running(running)
    waiting = second.submit(config_yaml(steps=2, seed=1), api_name="/run_config")
    deadline = time.time() + 20
    while not worker._WORKERS["cpu"]._pending:  # the second job waits
        assert time.time() < deadline
        time.sleep(0.05)
    with pytest.raises(AppError, match=r"the cpu queue is full \(1 jobs waiting, this instance's limit; "
                                       r"set STUDIO_QUEUE_LENGTH to change it\)"):
        Client(app.url, verbose=False).predict(config_yaml(steps=2, seed=2), api_name="/run_config")
    first.predict(api_name="/cancel")
    assert PROGRESS.search(waiting.result(timeout=30)[0]).group(1) == "done"  # the waiting job still ran


@pytest.mark.parametrize("threads", [1, 2])
def test_jobs_per_device_follow_the_concurrency_limit(app, monkeypatch, slow_wiener, threads):
    monkeypatch.setenv("STUDIO_CONCURRENCY_PER_DEVICE", str(threads))
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    long = first.submit(config_yaml(steps=40, n=3), api_name="/run_config")  # 2 s at least
    wait_until_running(long)
    short = second.submit(config_yaml(steps=3, n=2, seed=1), api_name="/run_config")
    assert PROGRESS.search(short.result(timeout=30)[0]).group(1) == "done"
    assert PROGRESS.search(long.result(timeout=30)[0]).group(1) == "done"
    order = [n for n, _ in slow_wiener]
    last_long = max(i for i, n in enumerate(order) if n == 3)
    first_short = order.index(2)
    # one thread: the short job waited for the long one; two: it ran beside it, on the other thread
    assert (first_short > last_long) == (threads == 1)
    assert len({name for _, name in slow_wiener}) == threads


def test_limits_of_the_web_server(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("STUDIO_QUEUE_LENGTH", "100")
    options = serving.launch_limits()
    assert options["max_file_size"] == 1234 and options["max_threads"] == 100 + 1 + serving.SPARE_THREADS
    monkeypatch.setenv("STUDIO_QUEUE_LENGTH", "4")
    assert serving.launch_limits()["max_threads"] == 40


def test_dataset_size_hint_and_data_roots(monkeypatch, tmp_path):
    def cfg(**dataset):
        return RunConfig.from_dict({"dataset": dataset})

    assert dataset_size_hint(cfg(name="digits")) == 1797
    assert dataset_size_hint(cfg(name="digits", size=50)) == 50
    assert dataset_size_hint(cfg(name="patches")) == 20000  # the option's default
    assert dataset_size_hint(cfg(name="mnist")) is None  # only loading can tell
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("STUDIO_DATA_ROOTS", raising=False)
    check_data_path("/anywhere")  # a local studio reads what its user names
    monkeypatch.setenv("STUDIO_DATA_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    check_data_path(str(tmp_path / "b" / "pictures"))
    with pytest.raises(LimitError, match="only from"):
        check_data_path(str(tmp_path / "a" / ".." / "c"))  # resolved before the check
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "link").symlink_to("/etc")
    with pytest.raises(LimitError, match="only from"):
        check_data_path(str(tmp_path / "b" / "link"))
    assert Limits.from_env().queue_length == 32


def test_inversion_steps_limit(app, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_STEPS", "20")
    inputs = app.demo.fns[app.fn_index("invert")].inputs
    steps = next(i for i, c in enumerate(inputs) if c.elem_id == "fw-steps")

    def invert(k: int) -> dict:  # every control as the page starts, K as given
        return Page(app).call("invert", *(k if i == steps else getattr(c, "value", None) for i, c in enumerate(inputs)))

    done = invert(21)
    assert done["success"] is False
    assert done["output"]["error"] == ("inversion steps K: 21 is over this instance's limit of 20 "
                                       "(set STUDIO_MAX_STEPS to change it)")
    assert invert(5)["success"]
