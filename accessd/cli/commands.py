"""The handlers behind each `accessd` command; each returns the process exit status."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from accessd.admin import Site, StatusChange, enroll, revoke_card, set_status
from accessd.cli.main import print_json
from accessd.config import Config, load_config
from accessd.decision import Plan, Status
from accessd.errors import AccessdError, ControlError
from accessd.readers.uid import normalise_uid
from accessd.rights import Change
from accessd.store.journal import LogFilter
from accessd.store.rules import Member


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from accessd.daemon.service import run

    return run(_config(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
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


def _print_member(m: Member, as_json: bool) -> None:
    if as_json:
        print_json(m.to_dict())
        return
    validity = f"{m.valid_from or '…'} → {m.valid_until or '…'}"
    print(f"{m.id}  {m.name}\n  plan: {m.plan}  status: {m.status}  valid: {validity}  "
          f"origin: {m.origin}")
    for c in m.credentials:
        print(f"  card {c['credential']}  {c['status']}  {c['technology'] or ''}  "
              f"enrolled {c['enrolled_at']}")


def cmd_enroll(args: argparse.Namespace) -> int:
    cfg = _config(args)
    uid = technology = credential_hash = None
    if args.card:
        uid, technology = normalise_uid(args.card), "typed"
    elif args.present:
        from accessd.daemon.control import call

        print(f"Present the card on {'reader ' + args.reader if args.reader else 'the reader'}"
              f" (waiting {args.timeout:g} s)…", file=sys.stderr)
        reply = call(cfg.storage.control_socket,
                     {"op": "capture", "reader": args.reader, "timeout": args.timeout,
                      "door": args.door}, timeout=args.timeout + 5)
        if not reply.get("credential_hash"):
            raise ControlError("no card was presented in time")
        credential_hash, technology = reply["credential_hash"], reply.get("technology")
    with Site.open(cfg, args.door) as site:
        member = enroll(site, name=args.name, plan=Plan(args.plan), uid=uid,
                        credential_hash=credential_hash,
                        technology=technology, valid_from=args.valid_from,
                        valid_until=args.valid_until, member_id=args.member,
                        operator=args.operator)
    if not args.json:
        print("enrolled:", file=sys.stderr)
    _print_member(member, args.json)
    return 0


def _print_change(done: StatusChange, changed: str) -> None:
    """One line: what was done, or why nothing was (already so, or the office decides)."""
    if done.change is Change.CHANGED:
        print(changed)
    elif done.change is Change.PROPOSED:
        print(f"{done.message}; the request is journalled for the office")
    else:
        print(f"{done.message}: nothing changed")


def cmd_revoke(args: argparse.Namespace) -> int:
    with Site.open(_config(args), args.door) as site:
        if args.member:
            done = set_status(site, args.member, Status.REVOKED, args.operator)
            m = done.member
            _print_change(done, f"revoked member {m.id} ({m.name}): all cards refused")
        else:
            uid = normalise_uid(args.card) if args.card else None
            done = revoke_card(site, uid=uid, credential=args.credential,
                               operator=args.operator)
            _print_change(done, f"revoked one card of {done.member.id} ({done.member.name})")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    with Site.open(_config(args), args.door) as site:
        done = set_status(site, args.member, Status.SUSPENDED, args.operator)
    _print_change(done, f"suspended {done.member.id} ({done.member.name})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with Site.open(_config(args), args.door) as site:
        done = set_status(site, args.member, Status.ACTIVE, args.operator)
    _print_change(done, f"resumed {done.member.id} ({done.member.name})")
    return 0


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
    with Site.open(_config(args)) as site:
        if args.card:
            found = site.rules.find_by_credential(site.hasher(normalise_uid(args.card)))
            if found is None:
                raise AccessdError("this card is not enrolled")
            member = found
        else:
            member = site.rules.member(args.member)
    _print_member(member, args.json)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    cfg = _config(args)
    doors = [cfg.door_spec(args.door)] if args.door else list(cfg.doors)
    entries = []
    for d in doors:  # each door its own journal; merged newest first, as one journal is
        with Site.open(cfg, d.id) as site:
            entries += site.journal.query(LogFilter(
                member=args.member, door=args.door, result=args.result, type=args.type,
                since=args.since, until=args.until, limit=args.limit))
    if len(doors) > 1:
        entries = sorted(entries, key=lambda e: e.event.ts, reverse=True)[:args.limit]
    tz = cfg.site.tz
    for e in entries:
        if args.json:
            print_json(e.to_dict())
            continue
        ev = e.event
        who = ev.member_name or (f"card {ev.credential}" if ev.credential else "")
        what = " ".join(x for x in (ev.result, ev.reason) if x)
        mark = "" if ev.clock_trusted else "  [clock untrusted]"
        print(f"{e.seq:>7}  {ev.ts.astimezone(tz):%Y-%m-%d %H:%M:%S}  {ev.type!s:<24} "
              f"{ev.reader or '':<8} {who:<24} {what}{mark}")
    return 0


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
    from accessd.daemon.control import call

    cfg = _config(args)
    try:
        status: dict[str, Any] = call(cfg.storage.control_socket,
                                      {"op": "status", "door": args.door})
        status.pop("ok", None)
        status["daemon"] = "running"
    except ControlError as exc:
        with Site.open(cfg, args.door) as site:
            status = {"daemon": f"not running ({exc})", "rule_version": site.rules.version,
                      **site.rules.counts(),
                      "journal": {"last_seq": site.journal.last_seq,
                                  "acked_seq": site.journal.acked_seq,
                                  "depth": site.journal.depth()}}
    if args.json:
        print_json(status)
        return 0 if status["daemon"] == "running" else 3
    for key, value in status.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
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
