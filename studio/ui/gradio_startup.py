"""Skip Gradio's import-time developer tooling, most of `import gradio` on a small CPU (gradio-app/gradio#7791):
every component class rewrites its .pyi stub (already shipped in the wheel) and renders each event docstring
with a freshly compiled jinja2 template. `install()` patches both as Gradio's modules load; if Gradio no longer
has the names patched here, its modules load untouched. It also defers pandas (half a second), which Gradio
imports at start only in gradio.caching, for functions that run later: there it is imported on first use.
`launch_builds_the_app` skips the FastAPI apps Gradio builds while a Blocks is made, which `launch` replaces."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

COMPONENT = re.compile(r"\{\{\s*component\s*\}\}")
JINJA_SYNTAX = ("{{", "{%", "{#", "\r")  # anything the plain substitution below would not render like jinja2


def skip_pyi(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for `gradio.component_meta.create_or_modify_pyi`: the stubs are a Gradio development artefact."""


def render_doc(doc: str, component: str) -> str | None:
    """`jinja2.Template(doc).render(component=component)` for docstrings whose only jinja is `{{ component }}`
    (jinja drops one trailing newline); None for any other template."""
    if any(mark in COMPONENT.sub("", doc) for mark in JINJA_SYNTAX):
        return None
    text = COMPONENT.sub(lambda _: component, doc)
    return text[:-1] if text.endswith("\n") else text


def patch_component_meta(module: ModuleType) -> None:
    """Component classes defined after this skip the stub rewrite (an ast parse of their source file each)."""
    if callable(getattr(module, "create_or_modify_pyi", None)):
        module.create_or_modify_pyi = skip_pyi


def patch_events(module: ModuleType) -> None:
    """`EventListener.set_doc` substitutes the component name itself, with Gradio's jinja path as fallback."""
    listener_class = getattr(module, "EventListener", None)
    jinja_set_doc = getattr(listener_class, "set_doc", None)
    if not callable(jinja_set_doc):
        return

    def set_doc(self: Any, component: str) -> None:
        listener = getattr(self, "listener", None)
        doc = getattr(listener, "__doc__", None)
        rendered = render_doc(doc, component) if isinstance(doc, str) else None
        if rendered is None:
            jinja_set_doc(self, component)
        else:
            listener.__doc__ = rendered

    set_doc.__doc__ = jinja_set_doc.__doc__
    listener_class.set_doc = set_doc


def no_patch(module: ModuleType) -> None:
    """The patch of a module that is only loaded with some of its imports deferred."""


class Deferred(ModuleType):
    """Stands in for a module inside the one Gradio module that imports it at start: the real module is imported
    on the first use of any of its names."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


@contextmanager
def deferring(names: Sequence[str]) -> Iterator[None]:
    """While a module executes, `import name` binds a Deferred stand-in for each of `names` not yet imported;
    afterwards the import system finds the real module again."""
    stand_ins = {name: Deferred(name) for name in names if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "gradio.events": patch_events,
    "gradio.component_meta": patch_component_meta,
    "gradio.caching": no_patch,
}
DEFERRED: dict[str, tuple[str, ...]] = {"gradio.caching": ("pandas",)}  # what each module imports on first use


class PatchingLoader(importlib.abc.Loader):
    """Gradio's own loader (with some of the module's imports deferred), followed by one patch on the module."""

    def __init__(self, loader: importlib.abc.Loader, patch: Callable[[ModuleType], None],
                 done: Callable[[], None], defer: Sequence[str] = ()) -> None:
        self.loader, self.patch, self.done, self.defer = loader, patch, done, defer

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with deferring(self.defer):
            self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        self.patch(module)
        self.done()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class GradioStartupFinder(importlib.abc.MetaPathFinder):
    """Wraps the loaders the other finders give for the patched Gradio modules; leaves `sys.meta_path` once
    all are loaded (from a loader, as the import system iterates the live list while finding)."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]] = PATCHES,
                 deferred: dict[str, tuple[str, ...]] = DEFERRED) -> None:
        self.pending = dict(patches)
        self.deferred = deferred

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        patch = self.pending.pop(fullname, None)
        if patch is None:
            return None
        for finder in [f for f in sys.meta_path if f is not self and hasattr(f, "find_spec")]:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = PatchingLoader(spec.loader, patch, self.finished, self.deferred.get(fullname, ()))
                return spec
        return None

    def finished(self) -> None:
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)


class AppAtLaunch:
    """Stands in for `gradio.routes.App` in gradio.blocks while a Blocks is made: no app yet."""

    @staticmethod
    def create_app(*_args: Any, **_kwargs: Any) -> None:
        return None


@contextmanager
def launch_builds_the_app() -> Iterator[None]:
    """Around `with gr.Blocks() as demo: ...`: Gradio builds a FastAPI app (80-odd routes) when the Blocks sets up
    its queue and again when the `with` closes, and `launch` builds the one it serves (it imports App itself):
    the first two cost 0.17 s CPU of the start here and are never served. Inside this they are skipped, so
    `demo.app` is None until `launch`; without those names in gradio.blocks, nothing changes."""
    from gradio import blocks

    real = getattr(blocks, "App", None)
    if not callable(getattr(real, "create_app", None)):
        yield
        return
    blocks.App = AppAtLaunch
    try:
        yield
    finally:
        blocks.App = real


def install() -> None:
    """Patch Gradio as it loads; a no-op once Gradio is imported (or the finder is already in place)."""
    if "gradio.component_meta" in sys.modules or any(isinstance(f, GradioStartupFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, GradioStartupFinder())
