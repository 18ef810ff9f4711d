"""Build hook: ship the top-level ``envs/`` and ``agents/`` spec folders inside the wheel.

The folders stay at the repository top (they are the source of truth and what users read and edit); a
wheel needs them inside the ``prefrl`` package, so the ``build_py`` step copies them to ``prefrl/_specs/``
in the build tree. setuptools has no declarative way to map a folder outside the package into package
data (``package-dir`` maps whole packages, and the spec folders are not packages), hence this file; all
other metadata lives in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPEC_FOLDERS = ("envs", "agents")


class BuildPyWithSpecs(build_py):
    """``build_py`` that also copies ``envs/*.yaml`` and ``agents/*.yaml`` into ``prefrl/_specs/``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for folder in SPEC_FOLDERS:
            specs = sorted((root / folder).glob("*.yaml"))
            if not specs:
                raise RuntimeError(f"{root / folder}: no spec files to package (is the sdist complete?)")
            target = Path(self.build_lib) / "prefrl" / "_specs" / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in specs:
                shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithSpecs})
