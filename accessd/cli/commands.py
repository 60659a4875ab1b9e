"""The handlers behind each `accessd` command; each returns the process exit status."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import Any

from accessd.admin import (
    Site,
    StatusChange,
    enroll,
    find_member,
    member_by_card,
    revoke_card,
    set_status,
)
from accessd.cli.main import UsageError, print_json
from accessd.cli.timeparse import local_time
from accessd.config import Config, load_config
from accessd.credentials import check_secrets
from accessd.decision import Plan, Status
from accessd.errors import ControlError, MemberNotFound
from accessd.rights import Change
from accessd.store.journal import LogFilter
from accessd.store.rules import Member


def _config(args: argparse.Namespace) -> Config:
    """The configuration, its secret files checked: a loose one is refused in one line naming
    the configuration file, the key and the secret (docs/configuration.md), whatever the
    command."""
    cfg = load_config(args.config)
    check_secrets(cfg)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from accessd.daemon.service import run

    return run(load_config(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    from accessd.daemon.service import check_startup

    check_startup(cfg)
    for d in cfg.doors:
        readers = ", ".join(f"{r.name} ({r.type}, {r.direction})" for r in d.readers)
        print(f"{cfg.path}: ok — site {cfg.site.id}, door {d.id}, "
              f"{cfg.site.timezone}, readers: {readers}, lock {d.lock.type} "
              f"{d.lock.release_s:g} s, mqtt {'on' if cfg.mqtt.enabled else 'off'}"
              + (f", unlocked {','.join(d.unlock.days)} {d.unlock.start:%H:%M}-"
                 f"{d.unlock.end:%H:%M}" + (" (first in)" if d.unlock.first_in else "")
                 if d.unlock else ""))
    return 0


def _print_member(m: Member, as_json: bool, cfg: Config) -> None:
    if as_json:
        print_json(m.to_dict())
        return
    validity = f"{m.valid_from or '…'} → {m.valid_until or '…'}"
    print(f"{m.id}  {m.name}\n  plan: {m.plan}  status: {m.status}  valid: {validity}  "
          f"origin: {m.origin}")
    for c in m.credentials:
        enrolled = _shown_time(c["enrolled_at"], cfg)
        print(f"  card {c['credential']}  {c['status']}  {c['technology'] or ''}  "
              f"enrolled {enrolled}")


def _shown_time(stamp: str | None, cfg: Config) -> str:
    """A stored UTC stamp as the host reads it: site time with the zone."""
    from accessd.events import parse_ts

    if not stamp:
        return "-"
    try:
        return local_time(parse_ts(stamp), cfg.site.tz, "%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def member_of(site: Site, text: str | None, card: str | None) -> Member:
    """The member named on the command line: by id or name, or by one of their cards."""
    if card is not None:
        return member_by_card(site, card)
    assert text is not None
    return find_member(site.rules, text)


def cmd_enroll(args: argparse.Namespace) -> int:
    cfg = _config(args)
    vf, vu = args.valid_from, args.valid_until
    if vf and vu and vu < vf:
        raise UsageError(f"enroll: --until {vu} is before --from {vf}: the validity would "
                         "end before it starts")
    today = datetime.now(cfg.site.tz).date()
    if vu and vu < today and not args.force:
        raise UsageError(f"enroll: --until {vu} is in the past (today is {today} at the "
                         "site): the card would open nothing; add --force to enrol it anyway")
    uid = technology = credential_hash = None
    if args.card is not None:
        uid, technology = args.card, "typed"
    with Site.open(cfg, args.door) as site:
        member_id = find_member(site.rules, args.member).id if args.member else None
        if args.present:
            from accessd.daemon.control import call

            print(f"Present the card on "
                  f"{'reader ' + args.reader if args.reader else 'the reader'}"
                  f" (waiting {args.timeout:g} s)…", file=sys.stderr)
            reply = call(cfg.storage.control_socket,
                         {"op": "capture", "reader": args.reader, "timeout": args.timeout,
                          "door": args.door}, timeout=args.timeout + 5)
            if not reply.get("credential_hash"):
                raise ControlError("no card was presented in time")
            credential_hash, technology = reply["credential_hash"], reply.get("technology")
        member = enroll(site, name=args.name, plan=Plan(args.plan), uid=uid,
                        credential_hash=credential_hash,
                        technology=technology, valid_from=vf,
                        valid_until=vu, member_id=member_id,
                        operator=args.operator)
    if not args.json:
        print("enrolled:", file=sys.stderr)
    _print_member(member, args.json, cfg)
    return 0


def _print_change(done: StatusChange, changed: str) -> None:
    """One line: what was done, or why nothing was (already so, or the office decides)."""
    if done.change is Change.CHANGED:
        print(changed)
    elif done.change is Change.PROPOSED:
        print(f"{done.message}; the request is journalled for the office")
    else:
        print(f"{done.message}: nothing changed, nothing journalled")


def cmd_revoke(args: argparse.Namespace) -> int:
    with Site.open(_config(args), args.door) as site:
        if args.member:
            m = find_member(site.rules, args.member)
            done = set_status(site, m.id, Status.REVOKED, args.operator)
            _print_change(done, f"revoked member {m.id} ({m.name}): all cards refused")
        else:
            done = revoke_card(site, uid=args.card, credential=args.credential,
                               operator=args.operator)
            _print_change(done, f"revoked one card of {done.member.id} ({done.member.name})")
    return 0


def _set_status(args: argparse.Namespace, status: Status, verb: str) -> int:
    with Site.open(_config(args), args.door) as site:
        m = member_of(site, args.member, args.card)
        done = set_status(site, m.id, status, args.operator)
    _print_change(done, f"{verb} {done.member.id} ({done.member.name})")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    return _set_status(args, Status.SUSPENDED, "suspended")


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_status(args, Status.ACTIVE, "resumed")


def cmd_list(args: argparse.Namespace) -> int:
    with Site.open(_config(args)) as site:
        members = site.rules.members(plan=args.plan, status=args.status, search=args.search)
    if args.json:
        for m in members:
            print_json(m.to_dict())
        return 0
    if not members:
        print("no members", file=sys.stderr)
        return 0
    print(f"{'ID':<14} {'NAME':<28} {'PLAN':<11} {'STATUS':<10} VALID UNTIL")
    for m in members:
        print(f"{m.id:<14} {m.name[:28]:<28} {m.plan!s:<11} {m.status!s:<10} "
              f"{m.valid_until or '-'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with Site.open(cfg) as site:
        member = member_of(site, args.member, args.card)
    _print_member(member, args.json, cfg)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from accessd.cli.logtext import entry_line

    cfg = _config(args)
    tz = cfg.site.tz
    since = args.since.resolve(tz) if args.since else None
    until = args.until.resolve(tz) if args.until else None
    doors = [cfg.door_spec(args.door)] if args.door else list(cfg.doors)
    entries = []
    for d in doors:  # each door its own journal; merged newest first, as one journal is
        with Site.open(cfg, d.id) as site:
            member_id = name = None
            if args.member:
                try:
                    member_id = find_member(site.rules, args.member).id
                except MemberNotFound as exc:
                    if getattr(exc, "matches", None):
                        raise  # several members: the host picks one by id
                    name = args.member  # gone from the rules: the journal's names still tell
            entries += site.journal.query(LogFilter(
                member=name, member_id=member_id, door=args.door, result=args.result,
                type=args.type, since=since, until=until, limit=args.limit))
    if len(doors) > 1:
        entries = sorted(entries, key=lambda e: e.event.ts, reverse=True)[:args.limit]
    for e in entries:
        if args.json:
            print_json(e.to_dict())
        else:
            print(entry_line(e, tz))
    if not entries and not args.json:
        print("no events match", file=sys.stderr)
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    from accessd.cli.why import explain

    cfg = _config(args)
    with Site.open(cfg) as site:
        answer = explain(site, args.who)
    if args.json:
        print_json(answer)
    else:
        print(answer["sentence"])
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from accessd.cli.doctor import print_checks, run_checks

    checks = run_checks(args.config)
    return print_checks(checks, as_json=args.json)


def cmd_open(args: argparse.Namespace) -> int:
    from accessd.daemon.control import call

    cfg = _config(args)
    reply = call(cfg.storage.control_socket,
                 {"op": "open", "operator": args.operator, "seconds": args.seconds,
                  "sudo_user": os.environ.get("SUDO_USER"), "door": args.door})
    which = f"door {reply['door']}" if cfg.several_doors else "door"
    print(f"{which} released for {reply['seconds']:g} s (journalled as {reply['operator']}, "
          f"name given: {args.operator})")
    return 0


def cmd_door_mode(args: argparse.Namespace) -> int:
    from accessd.daemon.control import call

    cfg = _config(args)
    reply = call(cfg.storage.control_socket,
                 {"op": "mode", "mode": args.mode, "operator": args.operator,
                  "sudo_user": os.environ.get("SUDO_USER"), "door": args.door})
    which = f"door {reply['door']}" if cfg.several_doors else "door"
    print(f"{which}: {reply['mode']} ({reply['why']})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from accessd.cli.statustext import status_lines, stored_status
    from accessd.daemon.control import call

    cfg = _config(args)
    try:
        status: dict[str, Any] = call(cfg.storage.control_socket,
                                      {"op": "status", "door": args.door})
        status.pop("ok", None)
        status["daemon"] = "running"
    except ControlError as exc:
        status = stored_status(cfg, str(exc))
    if args.json:
        print_json(status)
    else:
        print("\n".join(status_lines(status, cfg)))
    return 0 if status["daemon"] == "running" else 3


def cmd_door_key(args: argparse.Namespace) -> int:
    """The door's public key line; the private key never leaves the device."""
    from accessd.protocol.signing import DoorKey, public_line

    cfg = _config(args)
    doors = [cfg.door_spec(args.door)] if args.door or args.new else list(cfg.doors)
    for d in doors:  # each door signs its own events with its own key
        path = d.door_key_file
        if args.new:
            key = DoorKey.create(path, replace=True)
            print(f"new door key {key.key_id} in {path}: register it at the office (accessd "
                  "central door add), restart accessd, then remove the old key there",
                  file=sys.stderr)
        else:
            key = DoorKey.load_or_create(path)
        print(public_line(key.public, f"{cfg.site.id}/{d.id}"))
    return 0

