"""The package: a wheel built from the checkout installs and runs outside it; version and dependencies in one place."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from safetensors.torch import load_file

import studio
from studio.cli import main

# imported only when present (CUDA torch brings triton; ZeroGPU Spaces bring spaces), so not dependencies
OPTIONAL_IMPORTS = {"triton", "spaces"}
# declared though never imported: they ship files the studio reads (bundled data; the MP4 encoder imageio finds)
FILE_PROVIDERS = {"scikit-learn", "scikit-image", "imageio-ffmpeg"}

ROOT = Path(__file__).resolve().parents[1]
# what a source tree holds besides the package; build outputs, venvs and VCS files are left behind
_NOT_SOURCE = shutil.ignore_patterns(".git", "tests", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
                                     ".venv", ".ci-venv", "outputs", "runs", "out")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd[:4]} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout, installed (no dependencies) into an empty target folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "whl"), str(tmp / "src")], tmp)
    wheels = list((tmp / "whl").glob("*.whl"))
    assert [w.name for w in wheels] == [f"analytic_diffusion_studio-{studio.__version__}-py3-none-any.whl"]
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheels[0])], tmp)
    return tmp / "site"


def test_wheel_runs_a_shipped_preset_with_the_console_script_outside_the_checkout(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STUDIO_PRESETS"} | {"PYTHONPATH": str(installed),
                                                                           "HF_HUB_OFFLINE": "1"}
    probe = ("import json, studio, studio.presets as p, studio.models.checkpoints as c; print(json.dumps("
             "[studio.__file__, str(p.presets_dir()), str(c.CHECKPOINTS)]))")
    where = json.loads(_run([sys.executable, "-c", probe], tmp_path, env).stdout)
    shipped = installed / "studio"
    assert [Path(w) for w in where] == [shipped / "__init__.py", shipped / "_resources" / "presets",
                                        shipped / "_resources" / "assets" / "checkpoints"]
    preset = shipped / "_resources" / "presets" / "optimal_memorises.yaml"
    assert preset.read_bytes() == (ROOT / "presets" / preset.name).read_bytes()
    script = installed / "bin" / "studio"
    version = _run([str(script), "--version"], tmp_path, env).stdout
    assert version.strip() == f"analytic-diffusion-studio {studio.__version__}"
    out = tmp_path / "run"
    _run([str(script), "sample", "--config", str(preset), "--set", "sampler.steps=5", "--set", "n=3",
          "--device", "cpu", "--out", str(out)], tmp_path, env)
    assert load_file(str(out / "tensors.safetensors"))["samples"].shape == (3, 1, 8, 8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["studio_version"] == studio.__version__ and metrics["dataset"]["name"] == "digits"
    # the bundled checkpoint comes from the installed package too
    unet = tmp_path / "unet"
    _run([str(script), "sample", "--dataset", "digits", "--denoiser", "unet", "--steps", "3", "--n", "2",
          "--device", "cpu", "--out", str(unet)], tmp_path, env)
    assert load_file(str(unet / "tensors.safetensors"))["samples"].shape == (2, 1, 8, 8)


def test_version_flag_and_metadata_come_from_studio_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"analytic-diffusion-studio {studio.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "studio.__version__"}
    assert project["project"]["scripts"] == {"studio": "studio.cli:main"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", studio.__version__)


def test_requirements_txt_lists_exactly_the_package_dependencies():
    listed = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [line for line in listed if line] == project["dependencies"]


def test_resources_come_from_the_checkout_when_not_installed():
    assert Path(studio.__file__).parent == ROOT / "studio"
    assert studio.resource_dir("presets") == ROOT / "presets"
    assert studio.resource_dir("assets") == ROOT / "assets"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_norm(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def _imported_top_level() -> set[str]:
    names = set()
    for path in [*(ROOT / "studio").rglob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"studio", "__future__"}


def test_every_imported_package_is_declared_and_every_declared_one_is_used():
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    imported = _imported_top_level() - OPTIONAL_IMPORTS
    unknown = {name for name in imported if name not in owners}
    assert not unknown, f"imported but not installed: {unknown}"
    needed = {_norm(owners[name][0]) for name in imported}
    assert needed - _declared() == set(), "imported but not declared in pyproject.toml"
    assert _declared() - needed == {_norm(n) for n in FILE_PROVIDERS}, "declared but never imported"
