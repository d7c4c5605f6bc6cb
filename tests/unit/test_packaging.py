"""The package states compatible ranges; the exact versions live in constraints.txt.

A user who installs xai-tui into an environment that already has a torch (a CUDA build,
another minor version) keeps that torch: the requirement admits it and pip changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the dev environment has it

ROOT = Path(__file__).resolve().parents[2]


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("extra", [None, "dev"])
def test_dependencies_are_ranges_and_constraints_pin_them(extra):
    pins = _constraints()
    for requirement in _requirements(extra):
        operators = {spec.operator for spec in requirement.specifier}
        assert operators and not operators & {"==", "==="}, f"{requirement} is an exact pin; put it in constraints.txt"
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name]), f"constraints.txt pins {name} outside {requirement}"


def test_installed_versions_satisfy_the_ranges():
    for requirement in _requirements() + _requirements("dev"):
        installed = Version(metadata.version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


@pytest.mark.parametrize("version", ["2.6.0+cu124", "2.9.1+cu128", "2.13.0+cu130", "2.13.0+rocm6.4", "2.13.0+cpu"])
def test_torch_requirement_keeps_other_torch_builds(version):
    (torch,) = [r for r in _requirements() if canonicalize_name(r.name) == "torch"]
    assert torch.specifier.contains(Version(version))


def test_pip_keeps_an_installed_cuda_torch(tmp_path):
    """pip, asked to install the package where a CUDA torch 2.9.1 is installed, installs
    only the package (no index is reachable, so any other torch would be a resolution error)."""
    site = tmp_path / "site"
    info = site / "torch-2.9.1+cu128.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.9.1+cu128\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--no-build-isolation"]
        + ["--dry-run", "--disable-pip-version-check", str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (would,) = re.findall(r"^Would install (.*)$", done.stdout, flags=re.M)
    assert would.split() == ["xai-tui-0.1.0"]
