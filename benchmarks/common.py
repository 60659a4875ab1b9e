"""What every benchmark shares: percentiles, a pseudo-terminal, a site with 100,000 credentials.

Nothing here is timed. The site fixture builds the rule cache once per run (keyed hashes of
random EM4100 card numbers, loaded through `RuleCache.bulk_load` in one transaction) and each
benchmark gets its own copy of the files, so no benchmark sees another's journal.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import subprocess
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

N_CREDENTIALS = 100_000
SITE_KEY = bytes(range(32))  # a fixed, throw-away site key: hashes are reproducible


# -- results -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        raise ValueError("no samples")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def dist(values: Iterable[float], digits: int = 3, **extra: Any) -> dict[str, Any]:
    """{"p50", "p99", "samples", "max"} of `values` (already in the unit of the key)."""
    s = sorted(values)
    out: dict[str, Any] = {
        "p50": round(percentile(s, 50), digits),
        "p99": round(percentile(s, 99), digits),
        "samples": len(s),
        "max": round(s[-1], digits),
    }
    out.update(extra)
    return out


@dataclass
class Result:
    """One key of the report."""

    key: str
    what: str
    value: Any  # a number, a {"p50", "p99", ...} dict, or None
    target: str
    met: bool | None  # None: a reference, or not measured
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # other keys it measured on the way


def pending(key: str, what: str, target: str, why: str) -> Result:
    return Result(key, what, None, target, None, note=f"pending: {why}")


# -- a pseudo-terminal standing in for a USB-serial adapter ----------------------------------


class Pty:
    """Write frames to `master`; a reader opens `path` (the slave's device name)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline on 0x03
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def em4100_frame(uid_hex: str) -> bytes:
    from accessd.readers.em4100 import encode_frame

    return encode_frame(uid_hex)


# -- a site with many credentials ------------------------------------------------------------


@dataclass
class Site:
    """Files of one daemon: configuration, site key, rules with N credentials."""

    dir: Path
    config: Path
    enrolled: list[str]  # card numbers (10 hex) in the rule cache, shuffled

    @property
    def storage(self) -> Path:
        return self.dir / "var"


class Cards:
    """Enrolled card numbers in a random order, each used once before any comes back: a card
    seen again within the reader's hold-off (2 s) would be dropped as the same presentation."""

    def __init__(self, uids: list[str], rng: random.Random) -> None:
        self._uids = list(uids)
        rng.shuffle(self._uids)
        self._i = 0

    def next(self) -> str:
        uid = self._uids[self._i % len(self._uids)]
        self._i += 1
        return uid


def random_uid(rng: random.Random) -> str:
    return f"{rng.getrandbits(40):010X}"


class SiteFactory:
    """Builds the 100,000-credential rule cache once and hands out copies of it."""

    def __init__(self, root: Path, n_credentials: int = N_CREDENTIALS, seed: int = 5) -> None:
        self.root = root
        self.n = n_credentials
        self.rng = random.Random(seed)
        self._template: Path | None = None
        self.enrolled: list[str] = []
        self._count = 0
        self.build_s: float | None = None

    def _build_template(self) -> Path:
        import time

        from accessd.credentials import CredentialHasher
        from accessd.store.rules import RuleCache

        tdir = self.root / "template"
        tdir.mkdir(parents=True, exist_ok=True)
        hasher = CredentialHasher(SITE_KEY)
        uids: set[str] = set()
        while len(uids) < self.n:
            uids.add(random_uid(self.rng))
        self.enrolled = sorted(uids)
        self.rng.shuffle(self.enrolled)
        t0 = time.perf_counter()
        rules = RuleCache(tdir / "rules.db")
        members = ({"id": f"m-{i:06d}", "name": f"Member {i}",
                    "plan": "subscriber" if i % 3 else "occasional"}
                   for i in range(self.n))
        creds = ({"hash": hasher(uid), "member_id": f"m-{i:06d}", "technology": "em4100"}
                 for i, uid in enumerate(self.enrolled))
        with rules.transaction() as conn:
            rules.bulk_load(conn, members, creds)
        rules.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rules.close()
        self.build_s = time.perf_counter() - t0
        self._template = tdir
        return tdir

    def members_subscribers(self) -> list[str]:
        """Enrolled card numbers whose member is a subscriber (granted at any hour)."""
        self.template()
        return [u for i, u in enumerate(self.enrolled) if i % 3]

    def template(self) -> Path:
        return self._template or self._build_template()

    def site(self, *, readers: list[dict[str, Any]], log_level: str = "INFO",
             factory: str = "mock", extra: str = "") -> Site:
        """A fresh directory with the configuration, the site key and a copy of the rules."""
        template = self.template()
        self._count += 1
        d = self.root / f"site{self._count}"
        var = d / "var"
        var.mkdir(parents=True)
        shutil.copy(template / "rules.db", var / "rules.db")
        key = var / "site.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(SITE_KEY.hex() + "\n")
        lines = [f'log_level = "{log_level}"', "",
                 "[site]", 'id = "bench"', 'door = "front"', 'timezone = "Europe/Paris"', ""]
        for r in readers:
            lines.append("[[readers]]")
            for k, v in r.items():
                lines.append(f"{k} = {_toml(v)}")
            lines.append("")
        lines += ["[lock]", 'type = "fail-secure"', "release_s = 5", "",
                  "[pins]", f'factory = "{factory}"', "",
                  "[clock]", 'trust = "always"', "",
                  "[storage]", f'dir = "{var}"', "", extra]
        cfg = d / "accessd.toml"
        cfg.write_text("\n".join(lines), encoding="utf-8")
        return Site(d, cfg, list(self.enrolled))


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL if the process has not stopped within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def venv_python() -> str:
    """The interpreter running the benchmarks (the repo's .venv when scripts/bench chose it)."""
    import sys

    return sys.executable


def accessd_cmd(config: Path) -> list[str]:
    """`accessd --config X run`: the installed console script next to this interpreter, else
    the same code through `python -c` (what the console script runs)."""
    script = Path(venv_python()).parent / "accessd"
    if script.exists():
        return [str(script), "--config", str(config), "run"]
    return [venv_python(), "-c", "import sys; from accessd.cli.main import main; "
            "sys.exit(main())", "--config", str(config), "run"]
