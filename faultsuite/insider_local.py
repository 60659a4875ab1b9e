"""The insider scenario's attacks from inside the building: the host's account (its sudo
wrapper, its own Unix account) and changes to a door's own files and processes. Registered in
`faultsuite.insider_attacks.ATTACKS` like the attacks over the broker."""

from __future__ import annotations

import base64
import json
import os
import pwd
from typing import TYPE_CHECKING

from faultsuite.daemon import PYTHON, until
from faultsuite.insider_attacks import attack, other, some
from faultsuite.insider_oracle import Member
from faultsuite.insider_site import DOORS, SITE, now, run

if TYPE_CHECKING:
    from faultsuite.insider import Insider

SYSTEM_PYTHON = "/usr/bin/python3"  # one the account `nobody` may run


# -- the host's account ----------------------------------------------------------------------
FORBIDDEN_HOST_ARGS = [  # the first two are issue 8's own, run every time
    ["central", "site", "--store", "{stolen}", "--site", SITE, "--key-file", "{site_key}"],
    ["list", "--config", "{other}"],
    ["central", "publish", "--site", SITE, "--key", "{office_key}", "--no-send", "--store",
     "{stolen}"],
    ["run"], ["check-config"], ["door-key", "--new"],
    ["--config", "{other}", "list"],
    ["list", "--config={other}"], ["list", "--conf", "{other}"],
    ["enroll", "--name", "X", "--plan", "subscriber", "--no-card", "--", "--config", "{other}"],
    ["open", "--operator", "x", "--store", "{stolen}"], ["status", "-c", "{other}"],
    ["log", "--journal", "{stolen}"], ["card", "keygen"], ["unknown-verb"],
]


@attack
def host_wrapper(rig: Insider) -> None:
    """The host's sudo wrapper refuses everything beyond the host's fixed commands (one line,
    exit 2, nothing written); what its commands print holds no secret."""
    door = rig.rng.choice(DOORS)
    d = rig.doors[door]
    stolen = rig.work / rig.name("stolen.db")
    other_cfg = rig.work / "other.toml"
    other_cfg.write_text(d.config.read_text().replace(str(d.site.storage),
                                                      str(rig.work / "elsewhere")))
    names = {"stolen": stolen, "site_key": d.secret, "office_key": rig.office.key_path,
             "other": other_cfg}
    for args in FORBIDDEN_HOST_ARGS[:2] + some(rig, FORBIDDEN_HOST_ARGS[2:], 3,
                                                everything=False):
        argv = [a.format(**names) for a in args]
        r = d.host(*argv, sudo_user=rig.rng.choice(["claire", "marc"]))
        rig.check(r.returncode == 2 and r.stderr.startswith("accessd: error:")
                  and r.stderr.count("\n") == 1 and not r.stdout,
                  f"accessd-host {' '.join(argv)}: exit {r.returncode}, {r.stderr!r}")
        rig.figures["wrapper_refusals"] += 1
    rig.check(not stolen.exists() and not (rig.work / "elsewhere").exists(),
              "a refused command wrote a file")
    secrets = secret_texts(rig, door)
    allowed = [["status", "--json"], ["list", "--json"], ["log", "--limit", "20", "--json"],
               ["show", "pia", "--json"], ["door-key"], ["why", "--json"], ["why", "pia"],
               ["doctor", "--json"]]  # doctor reads the secrets to try the broker login
    for args in [["doctor", "--json"], *rig.rng.sample(allowed[:-1], len(allowed) - 1
                                                        if rig.ctx.long else 2)]:
        r = d.host(*args)
        ok = (0, 1) if args[0] == "doctor" else (0,)  # 1: something needs action
        rig.check(r.returncode in ok, f"accessd-host {' '.join(args)}: exit {r.returncode} "
                                      f"{r.stderr.strip()[:300]}")
        leaked = [name for name, text in secrets.items() if text in r.stdout + r.stderr]
        rig.check(not leaked, f"accessd-host {' '.join(args)} printed {leaked}")


def secret_texts(rig: Insider, door: str) -> dict[str, str]:
    """The door's secrets as text that would show in an output."""
    d = rig.doors[door]
    out = {"site key": d.secret.read_text().strip(),
           "mqtt password": rig.broker.password(f"door-{SITE}-{door}")}
    pem = d.key_path.read_text()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    out["door key"] = body
    raw = base64.b64decode(body)[-32:]
    out["door key (hex)"], out["door key (base64)"] = raw.hex(), base64.b64encode(raw).decode()
    return out


@attack
def host_reads_secrets(rig: Insider) -> None:
    """The host's own account (here `nobody`: not the service user, not in its group) can
    read none of the door's secrets or databases and cannot reach its control socket."""
    door = rig.rng.choice(DOORS)
    d = rig.doors[door]
    nobody = pwd.getpwnam("nobody")
    for folder in (rig.work.parent, rig.work, rig.broker.folder, rig.broker.creds,
                   rig.broker.creds / "doors", d.secret.parent, d.root):
        folder.chmod(folder.stat().st_mode | 0o111)  # the suite's own folders: passable
    targets = {"site key": d.secret, "mqtt password": d.secret.parent / "mqtt.pw",
               "door key": d.key_path, "rules.db": d.rules_path, "journal.db": d.journal_path,
               "storage folder": d.site.storage}
    order = list(targets.items())
    rig.rng.shuffle(order)
    probe = (
        "import json, os, socket, sys\n"
        "out = {}\n"
        "for name, path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        (os.listdir if os.path.isdir(path) else lambda p: open(p, 'rb').read(1))(path)\n"
        "        out[name] = 'read'\n"
        "    except OSError as e:\n"
        "        out[name] = e.__class__.__name__\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[2]); s.sendall(b'{\"op\": \"open\", \"operator\": \"x\"}\\n')\n"
        "    out['control socket'] = s.recv(4096).decode() or 'connected'\n"
        "except OSError as e:\n"
        "    out['control socket'] = e.__class__.__name__\n"
        "print(json.dumps(out))\n")
    r = run([SYSTEM_PYTHON, "-I", "-c", probe, json.dumps([(k, str(v)) for k, v in order]),
             str(d.site.socket)], cwd="/", user=nobody.pw_uid, group=nobody.pw_gid)
    rig.need(r.returncode == 0, f"the probe as nobody failed: {r.stderr[-500:]}")
    seen = json.loads(r.stdout)
    for name, outcome in seen.items():
        rig.check(outcome == "PermissionError", f"the host's account: {name}: {outcome}")
    rig.figures["secrets_probed"] += len(seen)


@attack
def host_open(rig: Insider) -> None:
    """A manual release through the wrapper journals the person sudo names (SUDO_USER),
    whatever name is typed; the typed name is kept beside it."""
    door = rig.rng.choice(DOORS)
    typed = rig.rng.choice(["Boss", "root", "the office", "Claire", "olivia", "homeassistant"])
    person = rig.rng.choice(["claire", "marc", "host2"])
    mark = rig.doors[door].last_seq()
    form = rig.rng.choice([["--operator", typed], [f"--operator={typed}"]])
    r, _ = rig.host_change(door, "open", *form, "--seconds", "3", sudo_user=person)
    rig.check(f"journalled as {person}" in r.stdout, f"open said: {r.stdout.strip()}")
    rows = rig.doors[door].events(mark, ("lock.manual_release",))
    rig.need(len(rows) == 1, f"{len(rows)} manual releases journalled")
    detail = json.loads(rows[0]["detail"])
    rig.check((detail.get("operator"), detail.get("operator_typed"), detail.get("peer_uid"))
              == (person, typed, os.geteuid()), f"journalled as {detail}")


@attack
def host_revocation(rig: Insider) -> None:
    """revoke, then suspend, then resume, through the wrapper: the revoked member stays
    revoked; a revoked card is never enrolled again. For the host's own new member (works at
    its door at once, not at the other before the office approves), or an office member (the
    office suspends it at once, revokes it only if the operator approves)."""
    door = rig.rng.choice(DOORS)
    o = other(door)
    variant = rig.rng.choice(["own_member", "office_member", "office_card"])
    if variant == "own_member":
        uid = rig.uid("walk-in")
        r, began = rig.host_change(door, "enroll", "--name", rig.name("Walk-in"), "--plan",
                                   "subscriber", "--card", uid, "--json")
        mid = json.loads(r.stdout)["id"]
        rig.rights.host_enrol(door, mid, Member("subscriber"), rig.h(uid))
        rig.timeline.commit([door], began, now())
        rig.tap(door, uid, "subscriber")
        rig.tap(o, uid, "unknown_credential")
    else:
        [(mid, uid)] = rig.victims(1)
    if variant == "office_card":
        r, began = rig.host_change(door, "revoke", "--card", uid)
        rig.rights.host_revoke(door, rig.h(uid))
        reason = "credential_revoked"
    else:
        r, began = rig.host_change(door, "revoke", mid)
        rig.rights.host_revoke(door, mid)
        reason = "member_revoked"
        for verb in rig.rng.sample(["suspend", "resume"], 2):
            r2, _ = rig.host_change(door, verb, mid, rc=1)
            rig.check("revoked for good" in r2.stderr, f"{verb}: {r2.stderr.strip()}")
    rig.timeline.commit([door], began, now())
    rig.tap(door, uid, reason)
    r3, _ = rig.host_change(door, "enroll", "--name", "Again", "--plan", "subscriber",
                            "--card", uid, rc=1)
    said = r3.stderr.strip()
    rig.check("enrol a new card" in said if variant == "office_card" else
              f"already enrolled to {mid}" in said, f"enrolling the card again: {said}")
    rig.quiet(door)
    rig.need(until(lambda: bool(rig.store.proposals(SITE)), 10), "nothing reached the office")
    mine = [p for p in rig.store.proposals(SITE) if p["member_id"] == mid]
    if variant != "own_member":  # while the operator decides: suspended at every door,
        rig.publish("the routine members file")  # whatever the office's file says
        rig.tap(o, uid, "member_suspended")
    approve = variant == "own_member" or rig.rng.random() < 0.5
    ids = [str(p["id"]) for p in mine]
    if approve:
        rig.office.central("approve", *ids, "--site", SITE, store=True)
        if variant == "own_member":
            rig.rights.approve(door, mid)
            rig.rights.office_revoke(mid)
        else:
            rig.rights.office_revoke(mid if variant == "office_member" else rig.h(uid))
    elif ids:
        rig.office.central("reject", *ids, "--site", SITE, store=True)
    rig.publish("the office's decision")
    if approve:  # the member revoked; its card goes with it (refused as the card's
        rig.tap(o, uid, (reason, "unknown_credential"))  # member's, or no longer known)
    else:
        rig.tap(o, uid, "subscriber")
    rig.tap(door, uid, (reason, "unknown_credential"))  # terminal where it was revoked


# -- state changes under a door ---------------------------------------------------------------
@attack
def second_daemon(rig: Insider) -> None:
    """A second `accessd run` on the same storage (same configuration file, or a copy of it)
    exits at once with one line; the first keeps its socket, its relay and its broker session
    (no second connection with its client id)."""
    door = rig.rng.choice(DOORS)
    d = rig.doors[door]
    config = d.config
    if rig.rng.random() < 0.5:
        config = rig.work / rig.name("copy.toml")
        config.write_text(d.config.read_text())
    client_id = f"accessd-{SITE}-{door}"
    before = rig.broker.connections(client_id)
    socket_id = d.site.socket.stat().st_ino
    r = run([PYTHON, "-m", "accessd", "--config", config, "run"], timeout=60)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    rig.check(r.returncode == 1 and len(lines) == 1 and "another accessd daemon" in lines[0],
              f"a second daemon: exit {r.returncode}, said {lines[:3]}")
    rig.check(d.site.socket.exists() and d.site.socket.stat().st_ino == socket_id,
              "the first daemon's control socket was replaced")
    rig.check(rig.broker.connections(client_id) == before,
              "the second daemon connected to the broker with the door's client id")
    rig.check(d.status()["uplink"].get("connected") is True, "the first daemon's uplink "
                                                              "lost its broker session")


@attack
def stored_bad_values(rig: Insider) -> None:
    """Values that mean nothing, written into a stopped door's databases (by hand, an older
    version): a member's plan `vip` or validity 2026-02-30, a schedule in `Europe/Pariss`, the
    rule version `6.0` or garbage, the acknowledged mark as garbage. The door starts, decides
    every tap (no grant from a bad row), alarms once per value, delivers its journal, and the
    office's next publish repairs the rules."""
    door = rig.rng.choice(DOORS)
    d = rig.doors[door]
    (v1, c1), (v2, c2) = rig.victims(2)
    rig.quiet(door)
    version = d.status()["rules"]["version"]
    acked = d.status()["journal"]["acked_seq"]
    plants = {
        "plan vip": ("rules", "UPDATE members SET plan = 'vip' WHERE id = ?", (v1,),
                     "invalid_record"),
        "validity 2026-02-30": ("rules", "UPDATE members SET valid_until = '2026-02-30' "
                                "WHERE id = ?", (v2,), "invalid_record"),
        "schedule Europe/Pariss": ("rules", "INSERT INTO meta(key, value) VALUES ('schedule', "
                                   "?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                   (json.dumps({"timezone": "Europe/Pariss", "opens": "09:00",
                                                "closes": "18:00", "days": ["mon"],
                                                "closures": []}),), "unusable_schedule"),
        "rule version": ("rules", "UPDATE meta SET value = ? WHERE key = 'rule_version'",
                         (f"{version}.0",), "invalid_version"),
        "acknowledged mark": ("journal", "UPDATE meta SET value = ? WHERE key = 'acked_seq'",
                              (rig.rng.choice([f"{acked}.0", "abc", "-5", "true", "1e9"]),),
                              ""),
    }
    chosen = some(rig, sorted(plants), 2)
    garbage = "rule version" in chosen and not {"plan vip", "validity 2026-02-30",
                                                 "schedule Europe/Pariss"} & set(chosen)
    if garbage and rig.rng.random() < 0.7:  # means no version: the door asks for a snapshot,
        db, sql, _, why = plants["rule version"]  # which would repair the other plants first
        plants["rule version"] = (db, sql, (rig.rng.choice(["abc", "-3", "true"]),), why)
    from faultsuite.insider import sqlite_by_hand

    code = d.stop()
    rig.check(code == 0, f"the daemon's exit status {code}")
    for name in chosen:
        db, sql, args, _ = plants[name]
        sqlite_by_hand(d.rules_path if db == "rules" else d.journal_path, (sql, args))
    mark = d.last_seq()
    d.start()
    rig.tap(door, rig.probe, "subscriber")
    rig.tap(door, rig.oli, "outside_opening_hours")  # the schedule is read: fallback hours
    rig.tap(door, c1, "invalid_record" if "plan vip" in chosen else "subscriber")
    rig.tap(door, c2, "invalid_record" if "validity 2026-02-30" in chosen else "subscriber")
    status = d.status()
    rig.check(status["decisions"]["internal_errors"] == 0, f"internal errors: {status}")
    alarms = {e["reason"] for e in d.events(mark, ("alarm.rule_cache",))}
    for name in chosen:
        reason = plants[name][3]
        if reason:
            rig.check(reason in alarms, f"{name}: no alarm.rule_cache {reason} ({alarms})")
    rig.quiet(door)
    rig.publish("the office's next publish repairs the rules")
    rig.tap(door, c1, "subscriber")
    rig.tap(door, c2, "subscriber")
    rig.figures["bad_values_planted"] += len(chosen)
