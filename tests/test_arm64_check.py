"""scripts/arm64-check: the fast parts only (syntax, --help, option errors, the installer's
--chroot mode as a dry run). The check itself builds an arm64 root under qemu and takes from
minutes to an hour; its result is recorded in docs/operations.md, not re-run here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "arm64-check"
DRIVER = ROOT / "scripts" / "arm64_daemon_check.py"
INSTALL = ROOT / "scripts" / "install-pi"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_script_parses() -> None:
    proc = run("bash", "-n", str(SCRIPT))
    assert proc.returncode == 0, proc.stderr
    proc = run(sys.executable, "-m", "py_compile", str(DRIVER))
    assert proc.returncode == 0, proc.stderr


def test_help_lists_options_and_says_emulated() -> None:
    proc = run(str(SCRIPT), "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--cache DIR", "--mirror URL", "--fresh", "--rebuild", "--starts N"):
        assert option in proc.stdout, option
    assert "/var/cache/accessd-arm64" in proc.stdout
    assert "EMULATED" in proc.stdout and "install-pi --chroot" in proc.stdout


def test_help_options_are_documented() -> None:
    """Every option of --help is in the arm64 section of docs/operations.md."""
    help_text = run(str(SCRIPT), "--help").stdout
    options = set(re.findall(r"^  (--[a-z-]+)", help_text, re.M)) - {"--help"}
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    m = re.search(r"^## arm64.*?(?=^## |\Z)", doc, re.M | re.S)
    assert m, "docs/operations.md has no '## arm64 ...' section"
    missing = sorted(o for o in options if f"`{o}" not in m.group(0))
    assert options and not missing, f"undocumented options: {missing}"


def test_bad_options_are_refused_before_anything_runs() -> None:
    proc = run(str(SCRIPT), "--no-such-option")
    assert proc.returncode == 2 and "unknown option --no-such-option" in proc.stderr
    proc = run(str(SCRIPT), "--starts", "0")
    assert proc.returncode == 2 and "--starts" in proc.stderr


def test_install_chroot_skips_only_live_calls() -> None:
    """--chroot: everything as on a Pi (apt, users, venv, enable) but udevadm and the
    systemctl calls that need a running systemd."""
    proc = run(str(INSTALL), "--dry-run", "--chroot")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for skipped in ("udevadm control", "udevadm trigger", "systemctl daemon-reload",
                    "systemctl restart accessd.service"):
        assert f"(skipped under --chroot) {skipped}" in out, skipped
    for done in ("+ env DEBIAN_FRONTEND=noninteractive apt-get install", "+ useradd",
                 "+ /opt/accessd/venv/bin/pip install",
                 "+ systemctl enable accessd.service"):
        assert done in out, done
    assert "started; follow it" not in out
