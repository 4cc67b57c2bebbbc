"""Build hook: ship the top-level conf/ and experiments/ inside the wheel, as advx/_resources/.

Project metadata lives in pyproject.toml; this file only adds one step to setuptools' `build_py`. The repository
keeps conf/ and experiments/ once, at its top level (no checked-in copies under src/). When a wheel is built
(`pip wheel .`, `pip install .`, `pip install git+...`), `build_py` copies every YAML file of conf/ (conf/hydra/**
included) and experiments' README.md and <paper>/paper.yaml files into <build dir>/advx/_resources/, where
advx.resources finds them. Editable installs (`pip install -e .`) skip the copy and read the top-level dirs, so
nothing is written into src/. The same files are listed as sources so an sdist carries them too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = {"conf": ("**/*.yaml",), "experiments": ("README.md", "*/README.md", "*/paper.yaml")}
TARGET = Path("advx", "_resources")  # inside the build dir; must match advx.resources.SHIPPED


def resource_files() -> list[Path]:
    """The files to ship, relative to the project root (setuptools runs this file from there)."""
    return sorted({path for folder, patterns in RESOURCES.items() for pattern in patterns
                   for path in Path(folder).glob(pattern) if path.is_file()})


class BuildPyWithResources(build_py):
    """`build_py` that also copies conf/ and experiments/ into the package's build dir (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the top-level dirs directly
            return
        target = Path(self.build_lib) / TARGET
        shutil.rmtree(target, ignore_errors=True)  # a reused build/ dir must not ship files deleted since
        for path in resource_files():
            self.mkpath(str((target / path).parent))
            self.copy_file(str(path), str(target / path))

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *map(str, resource_files())]


setup(cmdclass={"build_py": BuildPyWithResources})
