"""The wheel carries conf/ and experiments/: build it, install it away from the checkout, reproduce from there.

The wheel is built without build isolation (offline: setuptools>=77 from the test extra) from a copy of the build
inputs, so no build/ dir appears in the checkout and concurrent builds do not share one. It is installed with
`pip --target <site>` and run with PYTHONPATH=<site>: PYTHONPATH precedes the editable install's .pth entry
(<repo>/src), so advx comes from the wheel and torch & co. from the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "src", "conf", "experiments")
TIMEOUT = 600  # seconds per subprocess; the smoke reproduction takes well under a minute


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-6000:]}"
    return done


def pip(*args: str | Path, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run([sys.executable, "-m", "pip", *map(str, args), "--no-deps", "--no-index"], cwd=cwd, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    pip("wheel", "--no-build-isolation", "-w", tmp / "dist", source, cwd=tmp)
    (built,) = (tmp / "dist").glob("advx-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path) -> Path:
    target = wheel.parent.parent / "site"
    pip("install", "--no-compile", "--target", target, wheel, cwd=wheel.parent)
    return target


@pytest.fixture
def isolated(site: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty working dir and an environment that imports advx from the installed wheel only."""
    env = {**os.environ, "PYTHONPATH": str(site), "ADVX_DATA_DIR": str(tmp_path)}
    env.pop("ADVX_CONF_DIR", None)  # the override would bypass the shipped configs
    return tmp_path, env


def test_wheel_ships_conf_and_claims(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"advx/_resources/{path.relative_to(ROOT).as_posix()}" for path in
                [*(ROOT / "conf").rglob("*.yaml"), *(ROOT / "experiments").glob("*/paper.yaml")]}
    assert "advx/_resources/conf/hydra/job_logging/advx.yaml" in expected
    assert expected <= names, sorted(expected - names)


def test_installed_wheel_finds_its_own_resources(site: Path, isolated: tuple[Path, dict[str, str]]) -> None:
    workdir, env = isolated
    code = "import advx, advx.resources as r; print(advx.__file__, r.conf_dir(), r.experiments_dir(), sep='\\n')"
    lines = run([sys.executable, "-c", code], cwd=workdir, env=env).stdout.split()
    module, conf, experiments = (Path(line).resolve() for line in lines)
    assert module.is_relative_to(site.resolve()), module
    assert conf == site.resolve() / "advx" / "_resources" / "conf"
    assert experiments == site.resolve() / "advx" / "_resources" / "experiments"


def test_installed_wheel_reproduces_smoke(isolated: tuple[Path, dict[str, str]]) -> None:
    workdir, env = isolated
    run([sys.executable, "-m", "advx", "reproduce", "goodfellow2015", "scale=smoke", "runtime=cpu",
         "runtime.progress=false"], cwd=workdir, env=env)
    assert list(workdir.rglob("report.md")) and list(workdir.rglob("report.json")), sorted(workdir.rglob("*"))
