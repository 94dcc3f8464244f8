"""The package's architecture, checked: no import cycles (lazy imports included), a small top level, and the
import rules (core never imports serving, hub, cli or ui; analysis never imports engine)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "studio"
CORE = ("data", "denoisers", "diffusion", "models", "analysis")
OUTER = ("serving", "hub", "cli", "ui")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every studio module `path` imports, at the top or inside a function (`from a import b` counts a.b when
    b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules and name.startswith("studio")}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    names = set(paths)
    edges = {name: imports_of(path, names) for name, path in paths.items()}
    # importing a.b.c runs a and a.b first, but a package importing its own submodules is not a cycle
    return {name: {t for t in targets if not name.startswith(t + ".") and t != name} for name, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_including_lazy_imports():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_top_level_holds_at_most_ten_modules():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= 10, top


def test_core_never_imports_the_outer_packages_and_analysis_never_imports_engine():
    bad = []
    for name, targets in graph().items():
        package = name.split(".")[1] if name.count(".") else ""
        for target in targets:
            outer = target.split(".")[1] if target.count(".") else ""
            if package in CORE and outer in OUTER:
                bad.append((name, target))
            if package == "analysis" and target == "studio.engine":
                bad.append((name, target))
    assert bad == []


def test_a_run_imports_no_hub_client_until_it_downloads():
    """huggingface_hub costs ~0.5 s of every start: the CLI parser, the engine and the dataset registry import it
    only when a download or a push happens."""
    import subprocess
    import sys

    code = ("import sys, studio.cli, studio.engine, studio.data.registry; studio.cli.build_parser(); "
            "from studio.data.registry import dataset_names; dataset_names(); "
            "print([m for m in sys.modules if m.startswith('huggingface_hub') or m.endswith('hub_client')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
