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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

N_CREDENTIALS = 100_000
SITE_KEY = bytes(range(32))  # a fixed, throw-away site key: hashes are reproducible


# -- results -------------------------------------------------------------------------------
#
# Every key is built by `Samples` (a distribution) or `measured()` (one figure), and both put
# `samples` and `lost` beside the figure: a key cannot leave its losses out. A lost sample
# (the relay never rose, the event never reached the office, the run never finished) counts
# at the key's timeout, so losses push the percentiles up instead of leaving them. A target
# is met only if nothing was lost.


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


class Samples:
    """Every attempt of one measurement: a value, or a loss counted at `timeout`.

    The first `warmup` attempts are discarded, values and losses alike (their losses are
    still reported, as `warmup_lost`). `why` names each loss, so the note can say what
    happened. `timeout` None: a measurement that cannot be lost (a function call that
    returns); it reports `lost` 0 all the same.
    """

    def __init__(self, timeout: float | None, *, warmup: int = 0) -> None:
        self.timeout = timeout
        self.warmup = warmup
        self.values: list[float] = []
        self.lost = 0
        self.warmup_lost = 0
        self.why: Counter[str] = Counter()
        self._attempts = 0

    def _counted(self) -> bool:
        self._attempts += 1
        return self._attempts > self.warmup

    def add(self, value: float) -> None:
        if self._counted():
            self.values.append(value)

    def lose(self, why: str) -> None:
        if self.timeout is None:
            raise ValueError("a measurement without a timeout cannot lose a sample")
        if self._counted():
            self.lost += 1
            self.why[why] += 1
        else:
            self.warmup_lost += 1

    @property
    def samples(self) -> int:
        """Attempts counted (measured + lost)."""
        return len(self.values) + self.lost

    def dist(self, digits: int = 3, **extra: Any) -> dict[str, Any]:
        """{"p50", "p99", "max", "samples", "lost", "timeout", ...}: losses at `timeout`."""
        s = sorted([*self.values, *[self.timeout or 0.0] * self.lost])
        out: dict[str, Any] = {
            "p50": round(percentile(s, 50), digits),
            "p99": round(percentile(s, 99), digits),
            "max": round(s[-1], digits),
            "samples": len(s),
            "lost": self.lost,
            "timeout": self.timeout,
        }
        if self.why:
            out["lost_why"] = dict(self.why)
        if self.warmup_lost:
            out["warmup_lost"] = self.warmup_lost
        out.update(extra)
        return out


def measured(value: float, *, samples: int, lost: int, **extra: Any) -> dict[str, Any]:
    """One figure (a rate, a peak, a worst case) with what it was made of: `samples` attempts,
    `lost` of them counted at the key's timeout by the caller."""
    if samples <= 0 or not 0 <= lost <= samples:
        raise ValueError(f"samples {samples}, lost {lost}")
    return {"value": value, "samples": samples, "lost": lost, **extra}


def lost_note(value: dict[str, Any]) -> str:
    """"; 3 lost (counted at 2000 ms): 2 relay never rose, 1 wrong member" or ""."""
    if not value.get("lost"):
        return ""
    why = ", ".join(f"{n} {w}" for w, n in value.get("lost_why", {}).items())
    at = f" (counted at {value['timeout']:g})" if value.get("timeout") else ""
    return f"; {value['lost']} LOST{at}" + (f": {why}" if why else "")


@dataclass
class Result:
    """One key of the report."""

    key: str
    what: str
    value: dict[str, Any] | None  # from Samples.dist() or measured(); None: not measured
    target: str
    met: bool | None  # None: a reference, or not measured
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # other keys it measured on the way

    def __post_init__(self) -> None:
        v = self.value
        if v is not None and not (isinstance(v, dict) and "samples" in v and "lost" in v):
            raise TypeError(f"{self.key}: build the value with Samples.dist() or measured(), "
                            "so that it reports its samples and losses")
        if v is not None and v["lost"] and self.met:
            self.met = False  # a target is met only if nothing was lost
        if v is not None:
            self.note += lost_note(v)


class Unmeasurable(Exception):
    """A tool a benchmark needs is missing on this machine: its keys are pending."""


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
        self._member_index: dict[str, str] = {}
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
        (tdir / "enrolled.txt").write_text("\n".join(self.enrolled) + "\n")
        self._template = tdir
        return tdir

    @classmethod
    def from_template(cls, root: Path, template: Path) -> SiteFactory:
        """Sites under `root` from a template another process built (benchmarks/slow.py)."""
        sites = cls(root)
        sites.enrolled = (template / "enrolled.txt").read_text().split()
        sites.n = len(sites.enrolled)
        sites._template = template
        return sites

    def members_subscribers(self) -> list[str]:
        """Enrolled card numbers whose member is a subscriber (granted at any hour)."""
        self.template()
        return [u for i, u in enumerate(self.enrolled) if i % 3]

    def template(self) -> Path:
        return self._template or self._build_template()

    def member_of(self, uid: str) -> str:
        """The member id holding enrolled card `uid` (as `_build_template` numbered them)."""
        if not self._member_index:
            self.template()
            self._member_index = {u: f"m-{i:06d}" for i, u in enumerate(self.enrolled)}
        return self._member_index[uid]

    def site(self, *, readers: list[dict[str, Any]], log_level: str = "INFO",
             factory: str = "mock", extra: str = "",
             doors: list[dict[str, Any]] | None = None) -> Site:
        """A fresh directory with the configuration, the site key and a copy of the rules.
        `doors`: a Pi driving several doors ([[doors]]: id, readers, pins), instead of
        `readers`."""
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
                 "[site]", 'id = "bench"', *([] if doors else ['door = "front"']),
                 'timezone = "Europe/Paris"', ""]
        for r in readers if not doors else ():
            lines.append("[[readers]]")
            for k, v in r.items():
                lines.append(f"{k} = {_toml(v)}")
            lines.append("")
        for door in doors or ():
            lines += ["[[doors]]", f"id = {_toml(door['id'])}", "[doors.lock]",
                      'type = "fail-secure"', "release_s = 5", "[doors.pins]"]
            lines += [f"{k} = {_toml(v)}" for k, v in door["pins"].items()]
            for r in door["readers"]:
                lines.append("[[doors.readers]]")
                lines += [f"{k} = {_toml(v)}" for k, v in r.items()]
            lines.append("")
        lines += ([] if doors else ["[lock]", 'type = "fail-secure"', "release_s = 5", ""]) + [
                  "[pins]", f'factory = "{factory}"', "",
                  "[clock]", 'trust = "always"', "",
                  "[storage]", f'dir = "{var}"', "", extra]
        cfg = d / "accessd.toml"
        cfg.write_text("\n".join(lines), encoding="utf-8")
        # the copy (20 MB) on the disk now: ext4 commits every file's dirty data with the next
        # fsync, so otherwise the daemon's first journal commits would carry it
        os.sync()
        return Site(d, cfg, list(self.enrolled))


# -- door rules: 20 doors, 5,000 time windows, 1,000 bookings (issue 13) ------------------

N_DOORS, N_WINDOWS, N_BOOKINGS = 20, 5_000, 1_000


def door_rules(n_members: int, now: Any, seed: int = 13) -> dict[str, Any]:
    """The access section, rights and bookings of a site with N_DOORS doors (an entrance, a
    work room, meeting rooms): N_WINDOWS rights and restrictions over the members, and
    N_BOOKINGS bookings not yet over (a third of them under way at `now`)."""
    from datetime import timedelta

    from accessd.schema import instant_text

    rng = random.Random(seed)
    doors = ["entrance", "work", *(f"room-{i:02d}" for i in range(N_DOORS - 2))]
    access = {"doors": [{"id": d, "kind": "entrance" if d == "entrance" else "room"
                         if d == "work" else "meeting_room"} for d in doors],
              "plans": {"occasional": ["entrance", "work"]}, "booking_lead_min": 10}
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    rights = []
    for i in range(N_WINDOWS):
        start = rng.randrange(0, 20) * 60
        rights.append({"id": f"r-{i:05d}", "member_id": f"m-{rng.randrange(n_members):06d}",
                       "door": rng.choice(["*", *doors]),
                       "effect": "deny" if i % 5 == 0 else "allow",
                       "days": ",".join(sorted(rng.sample(days, rng.randint(1, 7)),
                                               key=days.index)),
                       "start": f"{start // 60:02d}:00", "end": f"{start // 60 + 4:02d}:00"})
    bookings = []
    for i in range(N_BOOKINGS):
        begin = now + timedelta(minutes=rng.randrange(-60, 60 * 24 * 14))
        bookings.append({"id": f"b-{i:05d}", "member_id": f"m-{rng.randrange(n_members):06d}",
                         "door": rng.choice(doors[2:]), "start": instant_text(begin),
                         "end": instant_text(begin + timedelta(minutes=rng.choice(
                             [30, 60, 120])))})
    return {"access": access, "rights": rights, "bookings": bookings, "doors": doors}


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
