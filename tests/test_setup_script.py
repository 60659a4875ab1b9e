"""scripts/setup installs into .venv only when pyproject.toml changed (what makes a second
scripts/demo start at once): run on a copy of the checkout whose .venv python records what
it is asked to do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/../calls"\n'
                      '[ -e "$(dirname "$0")/../fail" ] && { echo "pip: no network" >&2; '
                      'exit 1; }\nexit 0\n')
    python.chmod(0o755)
    return tmp_path


def setup(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(checkout / "scripts" / "setup"), *args],
                          capture_output=True, text=True, timeout=120)


def installs(checkout: Path) -> list[str]:
    calls = checkout / ".venv" / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line for line in lines if line.startswith("-m pip install -q -e")]


def test_pip_runs_again_only_when_pyproject_changes(checkout: Path) -> None:
    assert setup(checkout).returncode == 0
    assert installs(checkout) == ["-m pip install -q -e ."]
    r = setup(checkout)
    assert r.returncode == 0 and not r.stderr and len(installs(checkout)) == 1
    assert setup(checkout, "--test").returncode == 0
    assert installs(checkout)[-1] == "-m pip install -q -e .[test]"
    for args in ((), ("--test",)):  # a test install covers both
        assert setup(checkout, *args).returncode == 0 and len(installs(checkout)) == 2
    with (checkout / "pyproject.toml").open("a") as fh:
        fh.write("\n# a new dependency\n")
    assert setup(checkout).returncode == 0 and len(installs(checkout)) == 3
    assert setup(checkout, "--force").returncode == 0 and len(installs(checkout)) == 4


def test_a_failed_install_shows_pip_and_leaves_no_stamp(checkout: Path) -> None:
    (checkout / ".venv" / "fail").touch()
    r = setup(checkout)
    assert r.returncode == 1 and "pip: no network" in r.stderr
    assert not (checkout / ".venv" / ".setup-stamp").exists()
    (checkout / ".venv" / "fail").unlink()
    assert setup(checkout).returncode == 0
    assert len(installs(checkout)) == 2  # tried again, since nothing was installed


def test_pyproject_uses_the_spdx_licence_string() -> None:
    """The table form makes setuptools warn at every install."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
