"""Build hook: ship the top-level presets/ and assets/ inside the wheel as studio/_resources/.

Everything else is in pyproject.toml; `studio.resource_dir` finds the shipped copy, else the checkout's.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = ("presets", "assets")


class BuildPyWithResources(build_py):
    """build_py that also copies the resource folders into build_lib/studio/_resources/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        root = Path(__file__).resolve().parent
        for name in RESOURCES:
            target = Path(self.build_lib) / "studio" / "_resources" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithResources})
