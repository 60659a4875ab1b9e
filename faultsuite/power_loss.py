"""Power loss: writes not yet synced are really lost (SIGKILL, in `power_cut`, keeps them).

One child process runs the real door code on a storage folder under the storage shim
(faultsuite/storage): the product's `DoorController` (inproc.Door: real SQLite files, a real
relay on gpiozero's MockFactory) journals a tap stream from a second thread all along, while the
main thread, in turn, lets taps accumulate, applies a signed rule snapshot with the real
`RuleApplier` (its own connection, as the uplink does), and journals a batch of 200-day-old
events then runs `Journal.purge` (its own connection, as the daemon's retention does). The shim
logs every write and sync, and markers in the same order: each journal entry handed to the
controller's listeners (the point where the journal says it is durable), rule snapshot begin and
applied, purge begin and done.

Afterwards, from the snapshot taken before the run and the log, the folder is rebuilt as a power
loss at many instants would leave it (faultsuite/storage/crash.py: unsynced writes lost, kept in
part, kept in order up to a torn sector, or all kept) and checked with the product's own code:
integrity, every committed event present with no gap, rules old or new never mixed, retention a
prefix, and the door restarts on it and decides. A negative control (the journal with
`PRAGMA synchronous=OFF`) must make the same checker fail, or the scenario fails.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import PYTHON, ROOT, check_journal
from faultsuite.power import SHARED, RuleSets, uid_of
from faultsuite.storage import Markers, marker_path, shim_env
from faultsuite.storage.crash import Disk, Loss, read_folder, snapshot, write_folder
from faultsuite.storage.log import Op, Record, file_names, read_log

KINDS = ("taps", "rules", "purge")
RETENTION_DAYS = 90
LOSSES = (Loss.ALL, Loss.SUBSET, Loss.PREFIX, Loss.NONE)
LOSS_WEIGHTS = (3, 3, 3, 1)  # Loss.NONE is what SIGKILL leaves: a control, not the point


@dataclass(frozen=True)
class Plan:
    """The size of one logged run and how many losses are simulated on it."""

    cycles: int  # taps, rule snapshot, retention: this many times each
    taps: int  # taps that accumulate in each "taps" phase
    members: int  # members per rule set (plus the shared ones)
    old_rows: int  # 200-day-old events journalled before each purge
    cuts: int  # simulated losses on this run, split evenly between the three kinds
    sync_off: bool = False  # the negative control: the journal without fsync


# -- the workload: runs in the child process, under the shim --------------------------------
class Tapper(threading.Thread):
    """Taps at full speed through the real controller: shared members and unknown cards."""

    def __init__(self, door: Any, seed: int) -> None:
        super().__init__(daemon=True)
        self.door, self.rng = door, random.Random(seed)
        self.stop_ev, self.cond, self.n = threading.Event(), threading.Condition(), 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from accessd.events import utcnow

        try:
            while not self.stop_ev.is_set():
                uid = (uid_of(self.rng.randrange(SHARED)) if self.rng.random() < 0.5
                       else f"{self.rng.getrandbits(40):010X}")
                self.door.now = utcnow()  # retention must not take the fresh taps
                self.door.tap(uid)
                with self.cond:
                    self.n += 1
                    self.cond.notify_all()
        except BaseException as exc:  # reported by the main thread: the run then fails
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 120) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.n >= n or self.error is not None, timeout):
                raise RuntimeError(f"only {self.n} of {n} taps in {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"tapper failed: {self.error!r}")


def workload(config_path: str) -> int:
    """The child's run; markers are the shim's, written in the order things happened."""
    from accessd.events import Event, EventType, format_ts, utcnow
    from accessd.protocol.signing import PublicKeys
    from accessd.store.journal import Journal
    from accessd.store.rules import RuleCache
    from accessd.uplink.rulesync import RuleApplier
    from faultsuite.inproc import Door

    cfg = json.loads(Path(config_path).read_text())
    storage = Path(cfg["storage"])
    marks = Markers.from_env()
    door = Door(storage, limit=10**9)
    if cfg["sync_off"]:
        door.journal.conn.execute("PRAGMA synchronous=OFF")
    cutoff = utcnow() - timedelta(days=RETENTION_DAYS)
    oldest = {"upto": 0}

    def committed(entry: Any) -> None:  # the controller's listeners see durable entries only
        marks.mark(f"J {entry.seq} {entry.id} {entry.event.type} {format_ts(entry.event.ts)}")
        if entry.event.ts < cutoff and entry.event.clock_trusted:
            oldest["upto"] = max(oldest["upto"], entry.seq)

    door.controller.listeners.append(committed)
    tapper = Tapper(door, cfg["seed"])
    tapper.start()
    keys = PublicKeys.load(Path(cfg["public_key"]))
    try:
        for cycle, doc in enumerate(cfg["docs"]):
            marks.mark(f"phase taps {cycle}")
            tapper.wait_for(tapper.n + cfg["taps"])
            door.settle()  # their group commits fall inside this phase (the tapper goes on)
            if doc is not None:
                marks.mark(f"phase rules {cycle}")
                rules = RuleCache(storage / "rules.db")
                try:
                    applier = RuleApplier(rules, keys, site="faults", door="front")
                    marks.mark(f"R begin {doc['version']} {doc['which']}")
                    out = applier.handle(Path(doc["path"]).read_bytes(), "snapshot")
                    if not out.applied:
                        raise RuntimeError(f"snapshot refused: {out.reason} {out.detail}")
                    marks.mark(f"R done {doc['version']} {doc['which']}")
                finally:
                    rules.close()
            if cfg["old_rows"]:
                marks.mark(f"phase purge {cycle}")
                old = utcnow() - timedelta(days=200)
                door.controller.record(*[
                    Event(EventType.ACCESS_DENIED, ts=old + timedelta(seconds=i), reader="door",
                          result="denied", reason="unknown_credential")
                    for i in range(cfg["old_rows"])])
                door.settle()  # the writer committed them: the purge has them to delete
                journal = Journal(storage / "journal.db", "faults", "front")
                try:
                    marks.mark(f"P begin {oldest['upto']}")
                    n = journal.purge(RETENTION_DAYS)
                    marks.mark(f"P done {n}")
                finally:
                    journal.close()
            tapper.wait_for(tapper.n + 5)  # a few more taps after the operation
        marks.mark("phase end 0")
    finally:
        tapper.stop_ev.set()
        tapper.join(30)
        door.close()
    if tapper.error is not None:
        raise RuntimeError(f"tapper failed: {tapper.error!r}")
    marks.mark("done")
    return 0


# -- the harness ----------------------------------------------------------------------------
@dataclass
class SiteView:
    """What RuleSets needs of a site: the hasher of the door's cards, where the rules are."""

    hasher: Any
    rules_path: Path


class LoggedRun:
    """One run of the workload under the shim, from a prepared folder and its snapshot."""

    def __init__(self, root: Path, plan: Plan, seed: int) -> None:
        self.root, self.plan, self.seed = root, plan, seed
        self.storage = root / "storage"
        self.snapshot = root / "snapshot"
        self.log = root / "io.log"
        self.cut = root / "cut"  # each reconstruction is written here in turn
        self.records: list[Record] = []
        self.initial_rules = (0, "")

    def prepare(self) -> RuleSets:
        """A door with rule set "a" and a few journalled taps, closed: the snapshot."""
        from accessd.protocol.signing import PublicKeys
        from accessd.uplink.rulesync import RuleApplier
        from faultsuite.inproc import Door

        self.storage.mkdir(parents=True)
        door = Door(self.storage, limit=10**9)
        try:
            rs = RuleSets(SiteView(door.hasher, self.cut / "rules.db"),  # type: ignore[arg-type]
                          self.plan.members, self.root)
            rs.build("a")
            out = RuleApplier(door.rules, PublicKeys.load(rs.pub), site="faults",
                              door="front").handle(rs.doc.read_bytes(), "snapshot")
            if not out.applied:
                raise RuntimeError(f"initial snapshot refused: {out.reason} {out.detail}")
            rs.current = "a"
            self.initial_rules = (rs.version, "a")
            for i in range(5):
                door.tap(uid_of(i))
        finally:
            door.close()
        snapshot(self.storage, self.snapshot)
        return rs

    def execute(self, rs: RuleSets) -> None:
        docs: list[dict[str, Any] | None] = []
        which = rs.current
        for cycle in range(self.plan.cycles):
            if self.plan.sync_off:
                docs.append(None)
                continue
            which = "b" if which == "a" else "a"
            rs.build(which)
            path = self.root / f"snapshot-{cycle}.json"
            path.write_bytes(rs.doc.read_bytes())
            docs.append({"path": str(path), "version": rs.version, "which": which})
        config = self.root / "workload.json"
        config.write_text(json.dumps({
            "storage": str(self.storage), "public_key": str(rs.pub), "docs": docs,
            "taps": self.plan.taps, "old_rows": 0 if self.plan.sync_off else self.plan.old_rows,
            "sync_off": self.plan.sync_off, "seed": self.seed}))
        env = shim_env(self.storage, log=self.log, markers=True, sync="skip")
        out = self.root / "workload.out"
        with out.open("w") as f:
            proc = subprocess.run([PYTHON, "-m", "faultsuite.power_loss", str(config)], cwd=ROOT,
                                  env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
        self.records = read_log(self.log)
        if proc.returncode != 0 or not any(r.op == Op.MARK and r.text == "done"
                                           for r in self.records):
            raise RuntimeError(f"workload failed ({proc.returncode}):\n"
                               f"{out.read_text()[-3000:]}")

    def discard(self) -> None:
        """Remove the run's log and folders (hundreds of MB in long mode)."""
        for path in (self.storage, self.snapshot, self.cut):
            shutil.rmtree(path, ignore_errors=True)
        self.log.unlink(missing_ok=True)
        marker_path(self.log).unlink(missing_ok=True)

    def complete(self) -> bool:
        """The log holds every byte: replaying all of it onto the snapshot gives the folder."""
        disk = Disk(self.snapshot, self.storage)
        disk.advance(self.records, len(self.records))
        return disk.files() == read_folder(self.storage)

    def windows(self) -> dict[str, list[tuple[int, int]]]:
        """Record index ranges [start, end) where a loss tests each kind: a taps phase; a rule
        snapshot from its start to its return; journalling old events then purging them."""
        out: dict[str, list[tuple[int, int]]] = {k: [] for k in KINDS}
        opened: dict[str, int] = {}
        for i, r in enumerate(self.records):
            if r.op != Op.MARK:
                continue
            word = r.text.split()
            if word[0] == "phase":
                if "taps" in opened:
                    out["taps"].append((opened.pop("taps"), i + 1))
                if word[1] in ("taps", "purge"):
                    opened[word[1]] = i + 1
            elif word[:2] == ["R", "begin"]:
                opened["rules"] = i + 1
            elif word[:2] == ["R", "done"]:
                out["rules"].append((opened.pop("rules"), i + 1))
            elif word[:2] == ["P", "begin"]:  # journalling the old events, then the purge
                out["purge"].append((opened["purge"], i + 1))
                opened["purge"] = i + 1
            elif word[:2] == ["P", "done"]:
                out["purge"].append((opened.pop("purge"), i + 1))
        return out

    def choose_cuts(self, rng: random.Random, n: int) -> list[tuple[int, str]]:
        """Cut points spread evenly over the kinds, inside each kind's windows: just before a
        sync of the kind's database (the most unsynced data there is), just after one (durable
        but not yet acknowledged), just after a write to it (mid-transaction), or anywhere."""
        names = file_names(self.records)
        windows = self.windows()
        kinds = [k for k in KINDS if windows[k]]
        if len(kinds) < len(KINDS) and not self.plan.sync_off:
            raise RuntimeError(f"the workload left no window for {set(KINDS) - set(kinds)}")
        cuts = []
        for j in range(n):
            kind = kinds[j % len(kinds)]
            lo, hi = rng.choice(windows[kind])
            db = "/rules.db" if kind == "rules" else "/journal.db"
            syncs = [i for i in range(lo, hi) if self.records[i].op == Op.SYNC and db in names[i]]
            writes = [i for i in range(lo, hi)
                      if self.records[i].op == Op.WRITE and db in names[i]]
            how = rng.random()
            if syncs and how < 0.4:
                at = rng.choice(syncs)
            elif syncs and how < 0.5:
                at = rng.choice(syncs) + 1
            elif writes and how < 0.75:
                at = rng.choice(writes) + 1
            else:
                at = rng.randrange(lo, hi + 1)
            cuts.append((at, kind))
        return sorted(cuts)


@dataclass
class Expected:
    """What the markers before a cut promise."""

    committed: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    purge_upto: int = 0  # a purge began: rows up to here may be gone (as a prefix)
    purged_upto: int = 0  # a purge returned: rows up to here must be gone
    _began: int = 0
    rules_old: tuple[int, str] = (0, "")
    rules_new: tuple[int, str] | None = None

    def see(self, text: str) -> None:
        word = text.split()
        if word[0] == "J":
            self.committed[int(word[1])] = (word[2], word[3], word[4])
        elif word[:2] == ["R", "begin"]:
            self.rules_new = (int(word[2]), word[3])
        elif word[:2] == ["R", "done"]:
            self.rules_old, self.rules_new = (int(word[2]), word[3]), None
        elif word[:2] == ["P", "begin"]:
            self._began = int(word[2])
            self.purge_upto = max(self.purge_upto, self._began)
        elif word[:2] == ["P", "done"]:
            self.purged_upto = self._began


@dataclass
class Tally:
    """The figures of one or more runs."""

    cuts: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)  # cuts where unsynced writes were lost
    losses: Counter[str] = field(default_factory=Counter)
    torn: int = 0
    rules: Counter[str] = field(default_factory=Counter)  # cuts inside a snapshot: old / new
    purge_mid: int = 0  # cuts between a purge's start and its return
    files_lost: Counter[str] = field(default_factory=Counter)
    failed_cuts: int = 0
    events_lost: int = 0  # cuts where an event whose commit had returned was missing
    problems: list[str] = field(default_factory=list)
    records: int = 0
    log_bytes: int = 0

    def figures(self) -> dict[str, Any]:
        return {"cuts": sum(self.cuts.values()), "cuts_by_kind": dict(self.cuts),
                "cuts_losing_unsynced_writes": dict(self.lost),
                "loss_model": dict(self.losses), "torn_sectors": self.torn,
                "rules_at_cuts_inside_a_snapshot": dict(self.rules),
                "cuts_inside_a_purge": self.purge_mid, "files_with_lost_writes": dict(
                    self.files_lost), "log_records": self.records, "log_mib": round(
                    self.log_bytes / 2**20, 1)}


def check_folder(folder: Path, exp: Expected, rs: RuleSets) -> tuple[list[str], str | None]:
    """Problems in a rebuilt folder, and which rules it holds ("old" / "new")."""
    import sqlite3

    from faultsuite.inproc import Door

    journal = folder / "journal.db"
    if not journal.exists() or not (folder / "rules.db").exists():
        return [f"a database file is missing: {sorted(p.name for p in folder.iterdir())}"], None
    try:
        problems = check_journal(journal, exp.committed, exp.purge_upto)
        conn = sqlite3.connect(str(journal))
        try:
            lowest = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
        finally:
            conn.close()
        if exp.purged_upto and lowest is not None and lowest <= exp.purged_upto:
            problems.append(f"purge returned but row {lowest} <= {exp.purged_upto} is back")
        version, which, rule_problems = rs.state()
        problems += rule_problems
        outcome = None
        if (version, which) == exp.rules_old:
            outcome = "old"
        elif exp.rules_new is not None and (version, which) == exp.rules_new:
            outcome = "new"
        else:
            problems.append(f"rules version {version} set {which}: expected {exp.rules_old}"
                            + (f" or {exp.rules_new}" if exp.rules_new else ""))
        if problems:
            return problems, outcome
        door = Door(folder, limit=10**9)  # the door restarts on what the loss left
        try:
            last = door.journal.last_seq
            decision = door.tap(uid_of(0))
            door.settle()
            if not decision.granted:
                problems.append(f"after restart a member was refused: {decision.reason}")
            if door.journal.last_seq != last + 1:
                problems.append(f"after restart the next event is {door.journal.last_seq}, "
                                f"not {last + 1}")
        finally:
            door.close()
        return problems, outcome
    except sqlite3.Error as exc:
        return [f"SQLite error reading the rebuilt folder: {exc}"], None


def simulate(run: LoggedRun, rs: RuleSets, rng: random.Random, n: int, tally: Tally) -> None:
    """`n` power losses on one logged run, each rebuilt and checked."""
    disk = Disk(run.snapshot, run.storage)
    exp = Expected(rules_old=run.initial_rules)
    tally.records += len(run.records)
    tally.log_bytes += run.log.stat().st_size
    seen = 0
    for at, kind in run.choose_cuts(rng, n):
        for rec in run.records[seen:at]:
            if rec.op == Op.MARK:
                exp.see(rec.text)
        seen = at
        disk.advance(run.records, at)
        loss = rng.choices(LOSSES, LOSS_WEIGHTS)[0]
        files, report = disk.after_loss(loss, rng)
        write_folder(files, run.cut)
        problems, outcome = check_folder(run.cut, exp, rs)
        tally.cuts[kind] += 1
        tally.losses[loss.value] += 1
        tally.torn += report.torn
        if report.lost:
            tally.lost[kind] += 1
            for name in report.differ:
                tally.files_lost[name] += 1
        if exp.rules_new is not None and outcome is not None:
            tally.rules[outcome] += 1
        if exp.purge_upto > exp.purged_upto:
            tally.purge_mid += 1
        if problems:
            tally.failed_cuts += 1
            tally.events_lost += any("committed events lost" in p for p in problems)
            if len(tally.problems) < 10:
                tally.problems.append(f"cut at record {at}/{len(run.records)} ({kind}, loss "
                                      f"{loss.value}, lost {report.differ}): "
                                      + "; ".join(problems))


def negative_control(root: Path, rng: random.Random, cuts: int, taps: int) -> Tally:
    """The same checker on a journal without fsync: it must find committed events lost."""
    plan = Plan(cycles=2, taps=taps, members=50, old_rows=0, cuts=cuts, sync_off=True)
    run = LoggedRun(root, plan, rng.randrange(1 << 30))
    rs = run.prepare()
    run.execute(rs)
    tally = Tally()
    simulate(run, rs, rng, cuts, tally)
    return tally


@scenario("power_loss",
          "unsynced writes lost (whole, in part, torn sector) at many instants of taps / rule "
          "snapshots / retention: integrity ok, committed events kept, no gap, rules old-or-new,"
          " retention a prefix, the door restarts", order=11)
def power_loss(ctx: Context, res: Result) -> None:
    rng = random.Random(ctx.seed)
    runs = ctx.n(1, 5)
    plan = (Plan(cycles=2, taps=40, members=2000, old_rows=6000, cuts=120) if not ctx.long
            else Plan(cycles=3, taps=60, members=8000, old_rows=20000, cuts=300))
    tally = Tally()
    for i in range(runs):
        run = LoggedRun(ctx.workdir / f"run-{i}", plan, rng.randrange(1 << 30))
        rs = run.prepare()
        run.execute(rs)
        res.check(run.complete(), f"run {i}: replaying the whole log does not give the folder "
                                  "the run left: the shim missed a write")
        failed = tally.failed_cuts
        simulate(run, rs, rng, plan.cuts, tally)
        if tally.failed_cuts == failed:
            run.discard()  # its log is large; a failing run keeps it for inspection
    res.trials = sum(tally.cuts.values())
    res.failures += tally.failed_cuts
    res.failed.extend(tally.problems[:max(0, 10 - len(res.failed))])
    for kind in KINDS:
        res.check(tally.cuts[kind] > 0, f"no loss simulated during {kind}")
        res.check(tally.lost[kind] > 0, f"no simulated loss during {kind} lost an unsynced "
                                        "write: the trials did not test fsync")
    if ctx.long:
        res.check(res.trials >= 1000, f"only {res.trials} losses simulated (>= 1,000 wanted)")
        res.check(tally.rules["old"] > 0 and tally.rules["new"] > 0,
                  f"rules inside a snapshot were not seen both ways: {dict(tally.rules)}")
    neg = negative_control(ctx.workdir / "negative", rng, ctx.n(12, 40), ctx.n(20, 60))
    caught = neg.events_lost
    res.check(caught > 0, f"negative control: with the journal unsynced, the checker found "
                          f"nothing in {sum(neg.cuts.values())} losses (it cannot fail)")
    res.figures.update(tally.figures())
    res.figures["negative_control"] = {"cuts": sum(neg.cuts.values()), "caught": caught,
                                       "first": neg.problems[:1]}
    res.notes.append(
        f"{res.trials} losses by kind {json.dumps(dict(tally.cuts))}; unsynced writes lost "
        f"in {json.dumps(dict(tally.lost))}; model {json.dumps(dict(tally.losses))}, "
        f"{tally.torn} torn sectors; rules inside a snapshot {json.dumps(dict(tally.rules))}; "
        f"{tally.purge_mid} inside a purge; log {tally.records} records "
        f"({tally.log_bytes / 2**20:.1f} MiB), replayed byte for byte; negative control "
        f"(journal unsynced): {caught} of {sum(neg.cuts.values())} losses caught")


if __name__ == "__main__":
    sys.exit(workload(sys.argv[1]))
