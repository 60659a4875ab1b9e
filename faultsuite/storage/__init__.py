"""Storage faults below SQLite: an LD_PRELOAD shim that logs or slows the I/O of one folder.

SIGKILL keeps the page cache, so it never shows what an fsync protects. The shim (`shim.c`,
compiled on demand with the system's `cc`) records every write, truncation, sync, creation,
rename and unlink made under one folder, in order, with application markers in the same order;
`crash.py` then rebuilds what the folder holds after a power loss at any instant. The same shim
can stall every fsync/fdatasync of that folder, as an SD card under write load does.

    env = shim_env(storage, delay_ms=200)                 # a slow SD card, nothing logged
    env = shim_env(storage, delay_ms=(50, 200))           # each sync stalls 50-200 ms
    env = shim_env(storage, log=work / "io.log", markers=True)
    proc = start([sys.executable, "-m", "accessd", "run"], storage, delay_ms=50)

Inside a process started so, `Markers.from_env().mark("commit 17")` appends a marker record.
The environment variables are documented in docs/reliability.md ("The storage shim").
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("shim.c")
SYNC_MODES = ("real", "skip", "drop")


class ShimError(RuntimeError):
    """The storage shim cannot be built or its log cannot be read."""


def cache_dir() -> Path:
    """Where compiled shims are kept: $ACCESSD_SHIM_CACHE, else ~/.cache/accessd/shim."""
    explicit = os.environ.get("ACCESSD_SHIM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accessd" / "shim"


def build_shim() -> Path:
    """The compiled shim for this source and machine, building it if needed (once: cached)."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    target = cache_dir() / f"accessd-storage-shim-{key}.so"
    if target.exists():
        return target
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if cc is None:
        raise ShimError("no C compiler (cc) to build the storage shim: install gcc and "
                        "libc6-dev (scripts/setup --test does)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, str(SOURCE),
                            "-ldl", "-lpthread"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise ShimError(f"{cc} could not build the storage shim (are libc6-dev's headers "
                            f"installed?):\n{r.stderr[-2000:]}")
        os.replace(tmp, target)  # atomic: a concurrent build leaves one complete file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _delay(delay_ms: float | tuple[float, float] | None) -> str | None:
    if delay_ms is None:
        return None
    lo, hi = delay_ms if isinstance(delay_ms, tuple) else (delay_ms, delay_ms)
    if lo < 0 or hi < lo:
        raise ValueError(f"delay_ms must be >= 0 ms, or a (low, high) range: {delay_ms!r}")
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def marker_path(log: Path) -> Path:
    """The marker file that goes with a log (beside it, never inside the tracked folder)."""
    return log.with_name(log.name + ".marks")


def shim_env(folder: Path | str, *, delay_ms: float | tuple[float, float] | None = None,
             log: Path | str | None = None, markers: bool = False, sync: str = "real",
             stats: Path | str | None = None,
             base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that runs a process with the shim on `folder`.

    `delay_ms` stalls each fsync/fdatasync of a file under `folder` that long (a number, or a
    `(low, high)` range drawn uniformly per call); `log` records its I/O there (appended: one
    log per run); `markers` adds the marker file (`marker_path(log)`); `sync` is "real", "skip"
    (logged, but the kernel is not asked: faster, the simulation does not need it) or "drop"
    (a disk that ignores flushes: neither logged nor done); `stats` collects one line of
    counters per process at exit (`read_stats`).
    """
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
    if markers and log is None:
        raise ValueError("markers need a log")
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ShimError(f"{folder}: the folder to track does not exist")
    env = dict(os.environ if base is None else base)
    preload = str(build_shim())
    env["LD_PRELOAD"] = " ".join(p for p in (preload, env.get("LD_PRELOAD", "")) if p)
    env["ACCESSD_SHIM_DIR"] = str(folder)
    env["ACCESSD_SHIM_SYNC"] = sync
    for key in ("ACCESSD_SHIM_LOG", "ACCESSD_SHIM_MARKER", "ACCESSD_FSYNC_DELAY_MS",
                "ACCESSD_SHIM_STATS"):
        env.pop(key, None)
    delay = _delay(delay_ms)
    if delay is not None:
        env["ACCESSD_FSYNC_DELAY_MS"] = delay
    if log is not None:
        log = Path(log).resolve()
        if log.is_relative_to(folder):
            raise ShimError(f"{log}: the log must be outside the tracked folder")
        env["ACCESSD_SHIM_LOG"] = str(log)
        if markers:
            env["ACCESSD_SHIM_MARKER"] = str(marker_path(log))
    if stats is not None:
        env["ACCESSD_SHIM_STATS"] = str(Path(stats).resolve())
    return env


def start(argv: Sequence[str], folder: Path | str, *, delay_ms: float | tuple[float, float]
          | None = None, log: Path | str | None = None, markers: bool = False,
          sync: str = "real", stats: Path | str | None = None,
          env: Mapping[str, str] | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(argv)` with the shim on `folder` (see `shim_env`)."""
    full = shim_env(folder, delay_ms=delay_ms, log=log, markers=markers, sync=sync,
                    stats=stats, base=env)
    return subprocess.Popen(list(argv), env=full, **popen)


def read_stats(path: Path | str) -> list[dict[str, float]]:
    """The shim's counters, one dict per process that exited: syncs (of tracked files),
    delayed (syncs stalled), delayed_ms (time spent stalling), records (log records)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        fields = dict(part.split("=", 1) for part in line.split())
        out.append({k: float(v) for k, v in fields.items()})
    return out


class Markers:
    """Application markers, logged by the shim in the same order as the I/O around them."""

    def __init__(self, path: Path | str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    @classmethod
    def from_env(cls) -> Markers:
        path = os.environ.get("ACCESSD_SHIM_MARKER")
        if not path:
            raise ShimError("ACCESSD_SHIM_MARKER is not set: start the process with "
                            "shim_env(..., log=..., markers=True)")
        return cls(path)

    def mark(self, text: str) -> None:
        data = text.encode()
        if os.write(self._fd, data) != len(data):
            raise ShimError("short write to the marker file")

    def close(self) -> None:
        os.close(self._fd)
