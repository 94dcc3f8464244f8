"""Start-up in a real headless Chromium: `python app.py` serves the Run button before the engine has loaded and
runs once it has (the timeline is printed, never asserted against a clock); a Run pressed while the engine still
loads says so and then runs."""

import importlib
import threading
from types import SimpleNamespace

import pytest
from browser_tools import chromium, needs_chromium, open_page, set_number, wait_state
from space_app import served
from startup_timeline import app_process, open_when_served, prepare_catalog

from studio.ui import loader

pytestmark = needs_chromium


def test_app_py_shows_run_then_loads_the_engine_and_runs(tmp_path):
    prepare_catalog(tmp_path / "cache")  # as the first start of this code leaves it
    with chromium() as browser, app_process(tmp_path / "cache", tmp_path / "outputs", "--no-warm-up") as app:
        page, seen = open_when_served(browser, app)
        marks = {name: app.wait_for(name) for name in ("gradio imported", "page built", "server listening",
                                                       "engine loaded")}
        assert marks["gradio imported"] < marks["page built"] < marks["server listening"] < marks["engine loaded"]
        print("timeline:", " · ".join(f"{k} {v:.2f} s" for k, v in {**marks, **seen}.items()))
        set_number(page, "sample-steps", 5)
        set_number(page, "n", 4)
        page.click("#run")
        wait_state(page, "done")
        assert "5 steps · 4 samples" in page.inner_text("#run-summary")
        page.wait_for_selector("#dataset-strip img")  # the dataset preview came once the engine was there


@pytest.fixture
def engine_gate(monkeypatch):
    """The engine's background load waits for this event (as if importing torch took that long)."""
    gate = threading.Event()

    def slow_import(name: str):
        gate.wait(60)
        return importlib.import_module(name)

    monkeypatch.setattr(loader, "_ready", threading.Event())
    monkeypatch.setattr(loader, "importlib", SimpleNamespace(import_module=slow_import))
    yield gate
    gate.set()


def test_a_run_pressed_while_the_engine_loads_says_so_then_runs(engine_gate, tmp_path):
    with served(tmp_path / "outputs") as app, chromium() as browser:
        page = open_page(browser, app.url)  # the page and its Run button, while the engine is still loading
        set_number(page, "sample-steps", 4)
        set_number(page, "n", 4)
        page.click("#run")
        page.wait_for_function("document.querySelector('#progress').innerText.includes('loading the engine')")
        assert page.get_attribute("#progress .studio-progress", "data-state") == "preparing"
        assert not loader.ready()
        page.screenshot(path=str(tmp_path / "00-loading-the-engine.png"))
        engine_gate.set()
        wait_state(page, "done")
        assert "4 steps · 4 samples" in page.inner_text("#run-summary") and loader.ready()
        page.wait_for_selector("#dataset-strip img")
        print("screenshots:", tmp_path)
