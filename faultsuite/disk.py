"""The journal's filesystem full, then read-only: the door keeps deciding from the cache, the
alarm is raised, nothing committed is damaged, and recording resumes when the disk returns.

The daemon's storage directory is a small ext4 filesystem on a loop device, mounted with
`errors=remount-ro` as Raspberry Pi OS mounts its root (root is needed to mount it). "Full" is
a filler file written until ENOSPC, removed later. "Read-only" is an ext4 error triggered through
sysfs: the kernel turns the filesystem read-only under the running daemon, as it does to an SD
card after I/O errors; only an unmount (a reboot, fsck) brings it back, so that phase ends with
the daemon stopped, the filesystem checked and remounted, and the daemon started again.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from pathlib import Path

from faultsuite.core import Context, Pending, Result, scenario
from faultsuite.daemon import Daemon, Site, check_journal, committed, until


class Loop:
    """A small ext4 image mounted on `target` with errors=remount-ro."""

    def __init__(self, image: Path, target: Path, size_mb: int = 16) -> None:
        self.image, self.target = image, target
        target.mkdir(parents=True, exist_ok=True)
        with image.open("wb") as fh:
            fh.truncate(size_mb << 20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Pending(f"cannot make an ext4 image: {r.stderr.strip()}")
        self.mount()

    def mount(self) -> None:
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image),
                            str(self.target)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Pending(f"cannot loop-mount a filesystem (needs root): {r.stderr.strip()}")
        source = subprocess.run(["findmnt", "-no", "SOURCE", str(self.target)],
                                capture_output=True, text=True).stdout.strip()
        self.sysfs = Path("/sys/fs/ext4") / Path(source).name

    def error(self) -> None:
        """An ext4 error: the kernel remounts the filesystem read-only at once."""
        (self.sysfs / "trigger_fs_error").write_text("1")

    def read_only(self) -> bool:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.target):
                return "ro" in fields[3].split(",") or "emergency_ro" in fields[3]
        return False

    def remount(self) -> None:
        """What a reboot does: unmount, check, mount again."""
        self.umount()
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)
        self.mount()

    def umount(self) -> None:
        subprocess.run(["umount", str(self.target)], capture_output=True)


def _fill(target: Path) -> Path:
    filler = target / "filler"
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(chunk)
            fh.flush()
    with contextlib.suppress(OSError), filler.open("ab") as fh:  # the last few bytes too
        while True:
            fh.write(b"\0" * 512)
            fh.flush()
    return filler


@scenario("disk_full_readonly",
          "journal filesystem full / read-only: decisions continue, alarm raised, committed "
          "events intact, held events recorded in order when the disk returns", order=50)
def disk_full_readonly(ctx: Context, res: Result) -> None:
    if os.geteuid() != 0:
        raise Pending("needs root to loop-mount a small filesystem")
    rng = random.Random(ctx.seed + 4)
    loop = Loop(ctx.workdir / "sd.img", ctx.workdir / "state")
    try:
        _scenario(ctx, res, rng, loop)
    finally:
        loop.umount()


def _scenario(ctx: Context, res: Result, rng: random.Random, loop: Loop) -> None:
    storage = loop.target
    site = Site(ctx.workdir / "site", storage=storage)
    members = [f"{0x2200000000 + i:010X}" for i in range(12)]
    for i, uid in enumerate(members):
        site.enroll(uid, f"Member {i}")
    runtime = ctx.workdir / "run"  # the unit's RuntimeDirectory: in RAM, off the failing disk
    env = {"RUNTIME_DIRECTORY": str(runtime)}
    d = Daemon(site, env=env)
    decided_while_down = 0
    try:
        d.wait_for(r"reader door: (back )?online", timeout=5)
        k = 0
        for cycle in range(ctx.n(4, 20)):
            res.trials += 1
            kind = ("full", "read-only")[cycle % 2]
            for _ in range(5):  # some events committed normally first
                d.tap(members[k % len(members)], grants=True)
                k += 1
                time.sleep(0.05)
            until(lambda d=d: d.status()["journal"]["held_in_memory"] == 0)
            before = committed(site.journal_path)
            filler = None
            if kind == "full":
                filler = _fill(storage)
            else:
                loop.error()
                res.check(loop.read_only(), f"cycle {cycle}: the ext4 error left it writable")
            grants_before = d.text().count("access granted")
            # the door must go on deciding; keep tapping until the journal refuses a write
            down = False
            for _ in range(400):
                d.tap(members[k % len(members)], grants=True)
                k += 1
                d.tap(f"{rng.getrandbits(40):010X}")
                time.sleep(0.03)
                if not d.status()["journal"]["writable"]:
                    down = True
                    break
            if not res.check(down, f"cycle {cycle} ({kind}): the journal never refused a write"):
                continue
            st = d.status()
            res.check("journal_unavailable" in st["alarms"],
                      f"cycle {cycle} ({kind}): alarms {st['alarms']}")
            res.check(st["lock"]["state"] in ("locked", "released"), "status unreadable")
            for _ in range(6):  # decisions while the journal is down
                d.tap(members[k % len(members)], grants=True)
                k += 1
                time.sleep(0.05)
            granted = d.text().count("access granted") - grants_before
            decided_while_down += granted
            res.check(granted >= 6, f"cycle {cycle} ({kind}): only {granted} grants while "
                                    "the journal was down")
            held = d.status()["journal"]["held_in_memory"]
            res.check(held > 0, f"cycle {cycle} ({kind}): nothing held in memory")
            res.check(d.wait_for("alarm on", timeout=3), f"cycle {cycle}: no 'alarm on' log")
            # the disk returns
            if filler is None:  # read-only until unmounted: stop, check, remount, restart
                held = d.status()["journal"]["held_in_memory"]
                code = d.stop()
                res.check(code == 0, f"cycle {cycle}: exit status {code} on a read-only disk")
                res.figures["held_events_spooled_at_stop"] = (
                    res.figures.get("held_events_spooled_at_stop", 0) + held)
                loop.remount()
                for problem in check_journal(site.journal_path, before):
                    res.fail(f"cycle {cycle} ({kind}): after remount: {problem}")
                d = Daemon(site, env=env)
                d.wait_for(r"reader door: (back )?online", timeout=5)
                res.check(d.status()["journal"]["writable"], f"cycle {cycle}: not writable "
                                                              "after the remount")
                after = committed(site.journal_path)
                types = [after[s][1] for s in sorted(after) if s not in before]
                res.check("alarm.journal_unavailable" in types,
                          f"cycle {cycle} ({kind}): the spool was not journalled at restart")
                res.check(types.count("access.granted") >= granted,
                          f"cycle {cycle} ({kind}): {granted} grants decided, "
                          f"{types.count('access.granted')} journalled after the restart")
                time.sleep(0.6)
                continue
            filler.unlink()
            back = until(lambda d=d: d.status()["journal"]["writable"]
                          and d.status()["journal"]["held_in_memory"] == 0)
            res.check(back, f"cycle {cycle} ({kind}): recording did not resume")
            for problem in check_journal(site.journal_path, before):
                res.fail(f"cycle {cycle} ({kind}): {problem}")
            after = committed(site.journal_path)
            new = [after[s] for s in sorted(after) if s not in before]
            types = [t for _, t, _ in new]
            res.check("alarm.journal_unavailable" in types,
                      f"cycle {cycle} ({kind}): no alarm.journal_unavailable event recorded")
            recorded_grants = types.count("access.granted")
            res.check(recorded_grants >= granted,
                      f"cycle {cycle} ({kind}): {granted} grants decided, {recorded_grants} "
                      "recorded after recovery")
            stamps = [ts for _, t, ts in new if t.startswith("access.")]
            res.check(stamps == sorted(stamps), f"cycle {cycle}: held events out of order")
            res.check(until(lambda d=d: not d.status()["alarms"], 5),
                      f"cycle {cycle}: alarm still on after recovery")
            time.sleep(0.6)
    finally:
        code = d.stop()
    res.check(code == 0, f"daemon exit status {code}")
    res.figures["decided_while_journal_down"] = decided_while_down
    spooled = res.figures.get("held_events_spooled_at_stop", 0)
    res.notes.append(f"{decided_while_down} grants decided while the journal could not be "
                     f"written; after a full disk all were recorded; {spooled} events held in "
                     "memory when the daemon stopped on a read-only filesystem were spooled to "
                     "the runtime folder and journalled at the next start")
