"""The import-time patch of Gradio (studio.ui.gradio_startup): it patches exactly what it claims, renders event
docstrings as Gradio's jinja2 would, defers pandas to its first use, and leaves modules alone when the patched
names are missing; `launch_builds_the_app` skips the FastAPI apps Gradio builds before `launch` builds its own."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jinja2 import Template

from studio.ui import gradio_startup
from studio.ui.gradio_startup import (Deferred, GradioStartupFinder, deferring, patch_component_meta, patch_events,
                                      render_doc, skip_pyi)

ROOT = Path(__file__).resolve().parents[1]

FRESH_IMPORT = """
import json, sys
import studio.ui
import gradio as gr
import gradio.component_meta as meta
from gradio.events import EventListener
from jinja2 import Template
from studio.ui.gradio_startup import GradioStartupFinder, skip_pyi

raw = next(e for e in gr.Textbox.EVENTS if e == "submit").copy().listener.__doc__
deferred = "pandas" not in sys.modules
import gradio.caching
table = gradio.caching.pd.DataFrame({"a": [1]})  # the first use imports it
print(json.dumps({
    "pandas_deferred": deferred,
    "pandas_on_first_use": type(table).__module__.startswith("pandas") and "pandas" in sys.modules,
    "pyi_skipped": meta.create_or_modify_pyi is skip_pyi,
    "set_doc_patched": EventListener.set_doc.__module__ == "studio.ui.gradio_startup",
    "finder_left": any(isinstance(f, GradioStartupFinder) for f in sys.meta_path),
    "loader": type(meta.__loader__).__name__,
    "doc_is_jinja": gr.Textbox.submit.__doc__ == Template(raw).render(component="Textbox"),
    "raw_had_placeholder": "{{ component }}" in raw,
}))
"""


def test_a_fresh_import_through_studio_ui_is_patched():
    out = subprocess.run([sys.executable, "-c", FRESH_IMPORT], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "pandas_deferred": True, "pandas_on_first_use": True, "pyi_skipped": True, "set_doc_patched": True, "finder_left": False, "loader": "SourceFileLoader",
        "doc_is_jinja": True, "raw_had_placeholder": True}


def gradio_event_docs() -> list[tuple[str, str]]:
    """(component name, raw listener docstring) for every event of every Gradio block class."""
    from gradio.blocks import Block

    found, todo = [], [Block]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        for event in cls.__dict__.get("EVENTS", []):
            doc = event.copy().listener.__doc__ if hasattr(event, "copy") else None
            if doc:
                found.append((cls.__name__, doc))
    return found


def test_every_gradio_event_docstring_renders_as_jinja_does():
    docs = gradio_event_docs()
    assert len(docs) > 100
    for name, raw in docs:
        assert render_doc(raw, name) == Template(raw).render(component=name), name


@pytest.mark.parametrize("doc", ["{{ component }} {% if x %}y{% endif %}", "{{ other }} in {{ component }}",
                                 "a {# note #} {{component}}", "windows\r\nline {{ component }}"])
def test_other_jinja_falls_back(doc):
    assert render_doc(doc, "Button") is None


@pytest.mark.parametrize("doc", ["Triggered when the {{ component }} is clicked.\n", "{{component}}\n\n", "plain"])
def test_simple_templates_render_like_jinja(doc):
    assert render_doc(doc, "Button") == Template(doc).render(component="Button")


class Listener:
    def __init__(self, doc):
        self.listener = lambda: None
        self.listener.__doc__ = doc

    def set_doc(self, component):
        self.listener.__doc__ = "jinja:" + Template(self.listener.__doc__).render(component=component)


def events_module(listener_class=Listener):
    module = type(sys)("fake_events")
    module.EventListener = listener_class
    return module


def test_patched_set_doc_substitutes_and_falls_back_to_gradio(monkeypatch):
    monkeypatch.setattr(Listener, "set_doc", Listener.set_doc)  # undone after the test
    patch_events(events_module())
    simple, other = Listener("the {{ component }}\n"), Listener("{% if 1 %}{{ component }}{% endif %}")
    simple.set_doc("Slider")
    other.set_doc("Slider")
    assert (simple.listener.__doc__, other.listener.__doc__) == ("the Slider", "jinja:Slider")


def test_missing_names_leave_the_modules_alone():
    class NoSetDoc:
        pass

    meta, events, empty = type(sys)("fake_meta"), events_module(NoSetDoc), type(sys)("fake_empty")
    meta.create_or_modify_pyi = "not a function"
    before = [dict(vars(m)) for m in (meta, events, empty)] + [dict(vars(NoSetDoc))]
    patch_component_meta(meta)
    patch_events(events)
    patch_events(empty)
    assert [dict(vars(m)) for m in (meta, events, empty)] + [dict(vars(NoSetDoc))] == before


def test_the_finder_patches_through_the_real_import_and_then_leaves(tmp_path, monkeypatch):
    package = tmp_path / "fake_gradio"
    package.mkdir()
    (package / "__init__.py").write_text("from fake_gradio import component_meta, events\n")
    (package / "component_meta.py").write_text("def create_or_modify_pyi(*a):\n    raise RuntimeError\n")
    (package / "events.py").write_text(textwrap.dedent("""
        class Other:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = GradioStartupFinder({"fake_gradio.component_meta": patch_component_meta,
                                  "fake_gradio.events": patch_events})
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    for name in ("fake_gradio", "fake_gradio.component_meta", "fake_gradio.events"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    import fake_gradio

    assert fake_gradio.component_meta.create_or_modify_pyi is skip_pyi
    assert sorted(n for n in vars(fake_gradio.events) if not n.startswith("__")) == ["Other"]
    assert type(fake_gradio.events.__loader__).__name__ == "SourceFileLoader"
    assert finder not in sys.meta_path


def test_install_is_idempotent_and_late_installs_do_nothing(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, GradioStartupFinder)])
    monkeypatch.setitem(sys.modules, "gradio.component_meta", type(sys)("gradio.component_meta"))
    gradio_startup.install()
    assert not any(isinstance(f, GradioStartupFinder) for f in sys.meta_path)
    monkeypatch.delitem(sys.modules, "gradio.component_meta")
    gradio_startup.install()
    gradio_startup.install()
    assert sum(isinstance(f, GradioStartupFinder) for f in sys.meta_path) == 1


def test_a_deferred_module_is_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "slow_to_import.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_to_import", raising=False)
    with deferring(["slow_to_import"]):
        import slow_to_import as bound
    assert isinstance(bound, Deferred) and "slow_to_import" not in sys.modules
    assert bound.VALUE == 42 and type(sys.modules["slow_to_import"]).__name__ == "module"
    with deferring(["slow_to_import"]):  # already imported: nothing to defer
        import slow_to_import as again
    assert again is sys.modules["slow_to_import"]


def test_blocks_made_inside_launch_builds_the_app_get_no_app_until_launch(monkeypatch):
    import gradio as gr
    import httpx
    from gradio import blocks, routes

    built = []
    real_create_app = routes.App.create_app

    def create_app(*args, **kwargs):
        built.append(1)
        return real_create_app(*args, **kwargs)

    monkeypatch.setattr(routes.App, "create_app", staticmethod(create_app))
    with gradio_startup.launch_builds_the_app(), gr.Blocks() as demo:
        gr.Button("Run", elem_id="run")
    assert demo.app is None and built == [] and blocks.App is routes.App  # skipped, and Gradio's App is back
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        assert built == [1] and demo.app is not None  # the one app, built by launch
        assert httpx.get(f"{demo.local_url}config", timeout=30).json()["components"][0]["props"]["elem_id"] == "run"
    finally:
        demo.close()


def test_launch_builds_the_app_leaves_gradio_alone_without_its_names(monkeypatch):
    from gradio import blocks

    stand_in = object()  # no create_app: an App this does not know
    monkeypatch.setattr(blocks, "App", stand_in)
    with gradio_startup.launch_builds_the_app():
        assert blocks.App is stand_in
    assert blocks.App is stand_in
