"""The page as a whole, without a browser: its config stays small, its events take their inputs by name, and its
first screen (the catalog, the page's modules, building it) imports neither torch nor the engine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import httpx
import pytest
from startup_timeline import app_process, prepare_catalog

from studio.config import RunConfig
from studio.presets import list_presets
from studio.ui import catalog
from studio.ui.app import build_app

ROOT = Path(__file__).resolve().parents[1]
MAX_CONFIG_KB = 210  # half of the 421 KB the page's config had before it was wired by name (448 KB on 9de60dd)
MAX_COMPONENTS = 225  # was 550
MAX_POSITIONAL_INPUTS = 6  # more inputs than this go by name (a set of components, or keyword inputs)


@pytest.fixture(scope="module")
def demo() -> gr.Blocks:
    return build_app()


def test_the_page_config_is_at_least_halved(tmp_path):
    prepare_catalog(tmp_path / "cache")
    with app_process(tmp_path / "cache", tmp_path / "outputs", "--no-warm-up") as app:
        app.wait_for("server listening")  # a new process: component ids (and so the config) as a visitor gets them
        answer = httpx.get(f"{app.url}config", timeout=30)
        theme = httpx.get(f"{app.url}theme.css", timeout=30)
    assert theme.status_code == 200 and "--font:" in theme.text
    assert "woff" not in theme.text  # the visitor's own fonts: no font files for the first screen to wait on
    assert len(answer.content) < MAX_CONFIG_KB * 1000, f"page config {len(answer.content) / 1000:.1f} KB"
    assert len(answer.json()["components"]) <= MAX_COMPONENTS


def test_events_take_many_inputs_by_name(demo):
    positional = {fn.name: len(fn.inputs) for fn in demo.fns.values()
                  if not fn.inputs_as_dict and len(fn.inputs) > MAX_POSITIONAL_INPUTS}
    assert positional == {}
    run = next(fn for fn in demo.fns.values() if fn.api_name == "run")
    preset = next(fn for fn in demo.fns.values() if fn.api_name == "preset")
    assert len(run.inputs) < 50 and len(preset.outputs) < 100  # were 139 and 264


def test_the_yaml_editors_are_shown_after_the_first_screen(demo):
    """A visible component's code loads with the page wherever it sits; the editor's (0.4 MB) comes once the first
    screen is up: the YAML boxes are built hidden and one load event shows them all."""
    codes = {c["id"] for c in demo.config["components"] if c["type"] == "code"}
    assert len(codes) == 3 and not any(c["props"]["visible"] for c in demo.config["components"] if c["id"] in codes)
    shown = [d for d in demo.config["dependencies"] if [t[1] for t in d["targets"]] == ["load"]
             and set(d["outputs"]) == codes]
    assert len(shown) == 1
    fn = demo.fns[shown[0]["id"]].fn
    assert all(update["visible"] is True for update in fn().values())


@pytest.fixture
def fresh_catalog(monkeypatch):
    """No catalog in this process's memory: the next one is read from the cache folder or built."""
    monkeypatch.setattr(catalog, "_MEMO", {})


def test_the_catalog_is_the_registries_declarations_and_reads_back_from_its_file(tmp_path, monkeypatch,
                                                                                 fresh_catalog):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))
    built = catalog.current()
    assert built is catalog.current()  # once per process
    (saved,) = (tmp_path / "ui-catalog").glob("*.json")
    assert saved.stem == catalog.fingerprint()
    assert catalog.catalog_of(json.loads(saved.read_text())) == built
    from studio.data.registry import dataset_names, get_entry
    from studio.denoisers.registry import denoiser_class, denoiser_names

    assert list(built.datasets) == dataset_names() and list(built.denoisers) == denoiser_names()
    for name in dataset_names():
        assert built.datasets[name].params == get_entry(name).params, name
    for name in denoiser_names():
        assert built.denoisers[name].params == denoiser_class(name).params, name
        assert built.denoisers[name].kinds == tuple(denoiser_class(name).kinds), name
    assert built.default == RunConfig().validate().to_dict()
    presets, _ = list_presets()
    assert [(p.title, p.config) for p in built.presets] == [(p.title, p.config.to_dict()) for p in presets]


def test_a_changed_preset_is_a_new_catalog(tmp_path, monkeypatch, fresh_catalog):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "mine.yaml").write_text("title: Mine\nn: 3\n")
    first = catalog.current(folder)
    (folder / "mine.yaml").write_text("title: Mine\nn: 4\n")
    second = catalog.current(folder)
    assert (first.presets[0].config["n"], second.presets[0].config["n"]) == (3, 4)
    kept = [p.name for p in (tmp_path / "cache" / "ui-catalog").glob("*.json")]
    assert kept == [f"{catalog.fingerprint(folder)}.json"]  # the earlier catalog is never read again
    (folder / "mine.yaml").write_text("title: Mine\nn: -1\n")
    assert catalog.current(folder).problems and not catalog.current(folder).presets


def test_a_missing_catalog_is_built_by_another_process_while_this_one_goes_on(tmp_path, monkeypatch, fresh_catalog):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(catalog, "_builder", None)
    catalog.build_elsewhere()
    assert catalog._builder is not None and catalog._builder.args[1:] == ["-m", "studio.ui.catalog"]
    built = catalog.current()  # waits for that process and reads what it wrote
    assert catalog._builder.returncode == 0 and catalog.cached_path().is_file()
    assert built == catalog.catalog_of(json.loads(json.dumps(catalog.from_registries())))


FIRST_SCREEN = """
import sys
from studio.ui.app import build_app
imported = sorted(m for m in ("torch", "studio.config", "studio.engine", "pandas") if m in sys.modules)
build_app()
built = sorted(m for m in ("torch", "studio.config", "studio.engine") if m in sys.modules)
print(imported, built)
"""


def test_the_first_screen_imports_no_torch_nor_the_engine(tmp_path):
    env = {**os.environ, "STUDIO_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "from studio.ui.catalog import current; current()"], cwd=ROOT, env=env,
                   check=True)  # what the first start of this code leaves in the cache
    out = subprocess.run([sys.executable, "-c", FIRST_SCREEN], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] []"
