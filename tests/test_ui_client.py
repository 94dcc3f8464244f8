"""The web app end to end through gradio_client: the app runs in this process on a free port."""

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from space_app import served
from PIL import Image

from studio import engine
from studio.config import RunConfig
from studio.denoisers.optimal import Optimal
from studio.images import grid
from studio.runs import load_run

# what /run and /run_config return, in order (layout blocks are not outputs of the API)
OUT = {name: i for i, name in enumerate(["progress", "summary", "final", "animation", "step", "pairs", "charts",
                                         "paths", "download", "feed", "message", "stale"])}
PROGRESS = re.compile(r'data-state="(\w+)" data-k="(\d+)" data-total="(\d+)"')


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app with its engine loaded (this module checks runs; the "loading the engine…" message of a run that
    comes first is the start-up tests' subject): run alone, the first progress would otherwise be that message."""
    from studio.ui import loader

    with served(tmp_path_factory.mktemp("outputs")) as app:
        loader.load()
        yield app.url, app.outputs


def preset_yaml(name: str, **changes: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "presets" / f"{name}.yaml").read_text()
    for old, new in changes.items():
        text, count = re.subn(rf"\b{old}: \d+", f"{old}: {new}", text)
        assert count == 1, old
    return text


def progress_of(output: tuple) -> tuple[str, int, int]:
    state, k, total = PROGRESS.search(output[0]).groups()
    return state, int(k), int(total)


def test_preset_run_streams_progress_and_results(app_url):
    url, outputs = app_url
    client = Client(url, verbose=False)
    job = client.submit(preset_yaml("optimal_memorises", steps="8", n="4"), api_name="/run_config")
    seen = [progress_of(out) for out in job]
    states = [s for s, _, _ in seen]
    assert states[0] == "preparing" and states[-1] == "done"
    running = [k for s, k, _ in seen if s == "running"]
    assert running and running == sorted(running) and max(running) == 8
    assert all(total == 8 for _, _, total in seen)
    final = job.outputs()[-1]
    summary, final_grid, step_slider = final[OUT["summary"]], final[OUT["final"]], final[OUT["step"]]
    assert "**optimal** + **ddim** · 8 steps · 4 samples" in summary and "memorised: 100%" in summary
    assert step_slider["maximum"] == 8 and step_slider["value"] == 8
    # the run was saved; the picture on the page is the saved run's samples, nearest-neighbour upscaled
    folders = [p for p in outputs.iterdir() if p.is_dir()]
    run = load_run(next(p for p in folders if "optimal-ddim8" in p.name))
    assert run.samples.shape == (4, 1, 8, 8) and run.samples.abs().max() <= 1 + 1e-5  # convex mixes of data
    shown = np.asarray(Image.open(final_grid))
    assert shown.shape == (8 * 19, 8 * 19)  # 2x2 grid of 8 px digits, 1 px pad, upscaled x8
    assert np.array_equal(shown, np.asarray(grid(run.samples)))
    assert Path(final[OUT["animation"]]).suffix == ".gif"
    pairs = np.asarray(Image.open(final[OUT["pairs"]]))
    assert pairs.shape[1] > pairs.shape[0] > 8  # x_t | x̂0 side by side for each sample
    assert final[OUT["download"]].endswith(".zip") and final[OUT["charts"]]["type"] == "plotly"


def test_cancel_stops_within_one_step(app_url, monkeypatch):
    from studio.serving.worker import Job

    calls = {"n": 0, "at_cancel": None}
    slow_denoise, cancel = Optimal.denoise, Job.cancel

    def slow(self, x_t, t, ab):
        time.sleep(0.03)
        calls["n"] += 1
        return slow_denoise(self, x_t, t, ab)

    def counted_cancel(self):
        if calls["at_cancel"] is None:
            calls["at_cancel"] = calls["n"]  # where the job stood when the request reached it
        cancel(self)

    monkeypatch.setattr(Optimal, "denoise", slow)
    monkeypatch.setattr(Job, "cancel", counted_cancel)
    client = Client(app_url[0], verbose=False)
    job = client.submit(preset_yaml("optimal_memorises", steps="200", n="2"), api_name="/run_config")
    last = None
    for out in job:
        last = progress_of(out)
        if last[0] == "running" and last[1] >= 3 and calls["at_cancel"] is None:
            client.predict(api_name="/cancel")
    state, k, total = last
    assert state == "cancelled" and total == 200
    assert k <= calls["at_cancel"] + 1 < 200
    time.sleep(0.2)
    assert calls["n"] <= calls["at_cancel"] + 1


def test_bad_input_is_one_clear_message(app_url):
    client = Client(app_url[0], verbose=False)
    with pytest.raises(Exception, match=r"sampler\.steps: 0 is out of range \[1, 1000\]") as info:
        client.predict(preset_yaml("wiener_blurs", steps="0"), api_name="/run_config")
    assert "Traceback" not in str(info.value)
    with pytest.raises(Exception, match=r"denoiser\.name: unknown denoiser 'magic'"):
        client.predict("denoiser: {name: magic}", api_name="/run_config")
    # the app still serves
    out = client.predict(preset_yaml("wiener_blurs", steps="3", n="2"), api_name="/run_config")
    assert progress_of(out)[0] == "done"


def test_concurrent_clients_get_their_own_results(app_url):
    finals = {}

    def session(seed: int) -> None:
        client = Client(app_url[0], verbose=False)
        text = preset_yaml("wiener_blurs", steps="6", n="4", seed=str(seed))
        finals[seed] = client.predict(text, api_name="/run_config")

    threads = [threading.Thread(target=session, args=(seed,)) for seed in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for seed in (3, 4):
        out = finals[seed]
        assert progress_of(out)[0] == "done" and f"seed {seed}" in out[OUT["summary"]]
        cfg = RunConfig.from_yaml(preset_yaml("wiener_blurs", steps="6", n="4", seed=str(seed)))
        expected = engine.execute(cfg).samples
        assert np.array_equal(np.asarray(Image.open(out[OUT["final"]])), np.asarray(grid(expected)))
    pictures = [np.asarray(Image.open(finals[seed][OUT["final"]])) for seed in (3, 4)]
    assert not np.array_equal(*pictures)


def test_the_documented_api_is_the_yaml_run_cancel_and_presets(app_url):
    client = Client(app_url[0], verbose=False)
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert named == {"/run_config", "/cancel", "/preset"}


def test_preset_fills_the_sample_and_compare_controls(app_url):
    client = Client(app_url[0], verbose=False)
    out = client.predict("DDPM vs DDIM on digits", api_name="/preset")
    assert out[0] == "digits" and out[-1].startswith("The same Bayes-optimal denoiser")
    values = [v.get("value") if isinstance(v, dict) else v for v in out]
    # the Sample tab's sampler is DDIM; the Compare tab's side A gets DDPM, side B DDIM
    assert values.count("ddpm") == 1 and values.count("ddim") == 2 and values.count("optimal") == 3


def test_a_study_preset_fills_the_study_panel_and_opens_compare(app_url):
    client = Client(app_url[0], verbose=False)
    out = client.predict("Which denoiser behaves like a trained network?", api_name="/preset")
    values = [v.get("value") if isinstance(v, dict) else v for v in out]
    assert ["nearest", "optimal", "wiener", "pca_locality", "ls"] in values and "unet" in values
    assert out[-1].startswith("Every analytic denoiser starts from the same noise")
