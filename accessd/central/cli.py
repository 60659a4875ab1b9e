"""`accessd central ...`: the central office's commands, a thin layer over this package.

`register(subparsers)` adds them to the main `accessd` parser; `main(argv)` runs them alone.
Each command builds the library object, calls it, and turns library errors into one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from accessd.cli.main import Parser, UsageError, error, positive_int
from accessd.errors import AccessdError
from accessd.schema import BOOKINGS, MEMBERS, RIGHTS, add_options, cli_values

DEFAULT_STORE = "accessd-central.db"
# `member set` takes every member field that has an option in the member schema
MEMBER_OPTIONS = tuple(f.name for f in MEMBERS.fields if f.cli)
RIGHT_OPTIONS = tuple(f.name for f in RIGHTS.fields if f.cli)
ENV_STORE = "ACCESSD_CENTRAL_STORE"


class CentralError(AccessdError):
    """A central office command could not do what was asked."""


# -- shared options ---------------------------------------------------------------------------
def _store_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=os.environ.get(ENV_STORE, DEFAULT_STORE),
                   help=f"SQLite path or postgresql:// URL (default: ${ENV_STORE} or "
                        f"{DEFAULT_STORE})")


def _broker_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    g.add_argument("--port", type=int, default=8883, help="MQTT broker port (default 8883)")
    g.add_argument("--username", default="central", help="broker login (default central)")
    g.add_argument("--password-file", type=Path, help="file holding the broker password")
    g.add_argument("--ca-file", type=Path, help="CA certificate that signed the broker's")
    g.add_argument("--client-cert", type=Path, help="client certificate, if the broker asks")
    g.add_argument("--client-key", type=Path, help="client certificate's private key")
    g.add_argument("--no-tls", action="store_true", help="plain TCP (tests, localhost only)")
    g.add_argument("--prefix", default="accessd", help="topic prefix (default accessd)")


def _publish_opts(p: argparse.ArgumentParser) -> None:
    """--key (sign and send the change at once) and the broker options."""
    p.add_argument("--key", type=Path, help="the office's private key: publish the change at "
                                            "once (a delta)")
    p.add_argument("--no-send", action="store_true",
                   help="with --key: record the signed version without sending it")
    _broker_opts(p)


def _settings(args: argparse.Namespace) -> Any:
    from accessd.credentials import read_secret_file
    from accessd.protocol.transport import BrokerSettings

    password = read_secret_file(args.password_file) if args.password_file else ""
    return BrokerSettings(host=args.host, port=args.port, username=args.username,
                          password=password, tls=not args.no_tls, ca_file=args.ca_file,
                          cert_file=args.client_cert, key_file=args.client_key)


def _open(args: argparse.Namespace) -> Any:
    from accessd.central.store import open_store

    return open_store(args.store)


def _since(text: str | None) -> datetime | None:
    """`24h`, `7d`, `30m` ago, or an ISO date/time (UTC when no offset is given)."""
    if not text:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CentralError(f"--since: expected 24h, 7d or an ISO date, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- commands ---------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    from accessd.central.collector import Collector
    from accessd.protocol.signing import OfficeKey

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    key = OfficeKey.load(args.key)
    store = _open(args)
    collector = Collector(store, _settings(args), key=key, prefix=args.prefix,
                          group=args.group, client_id=args.client_id,
                          verify_workers=args.verify_workers)
    if not store.door_keys():
        logging.warning("no door key is registered: every event will be refused until "
                        "`accessd central door add` registers the doors")
    signal.signal(signal.SIGTERM, lambda *_: collector.request_stop())
    try:
        collector.run_forever()
    except KeyboardInterrupt:
        collector.stop()
    finally:
        store.close()
    s = collector.stats
    print(f"stored {s.stored}, dropped {s.duplicates} copies, refused {s.invalid}, "
          f"{s.conflicts} conflicts", file=sys.stderr)
    return 0


def cmd_door(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        if args.door_command == "add":
            if args.public_key_file:
                try:
                    line = args.public_key_file.read_text(encoding="ascii").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise CentralError(f"{args.public_key_file}: {exc}") from None
            else:
                line = args.public_key
            kid = store.add_door_key(args.site, args.door, line)
            print(f"key {kid} registered for {args.site}/{args.door}: its events are stored "
                  "from now on (collectors see it within 10 s)")
        elif args.door_command == "remove":
            if not store.remove_door_key(args.site, args.door, args.key_id):
                raise CentralError(f"no key {args.key_id} for {args.site}/{args.door}")
            print(f"key {args.key_id} of {args.site}/{args.door} removed: events it signs are "
                  "refused from now on")
        elif args.door_command == "set":
            closures = args.closures.split(",") if args.closures is not None else None
            row = store.rooms.set_door(args.site, args.door, args.kind, name=args.name,
                                       closures=closures)
            print(json.dumps(row, sort_keys=True, ensure_ascii=False))
        else:
            rows = store.door_keys(args.site, args.door)
            for r in rows:
                print(json.dumps(r, sort_keys=True) if args.json else
                      f"{r['site']}/{r['door']:<12} {r['key_id']}  added {r['added_at']}")
            if not rows and not args.json:
                print("no door key registered", file=sys.stderr)
    finally:
        store.close()
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        for alarm_id in args.clear or ():
            if not store.clear_alarm(alarm_id):
                raise CentralError(f"no open alarm {alarm_id}")
            print(f"cleared {alarm_id}", file=sys.stderr)
        rows = store.alarms(open_only=not args.all, site=args.site)
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True, ensure_ascii=False))
        return 0
    if not rows and not args.clear:
        print("no open alarm" if not args.all else "no alarm", file=sys.stderr)
    for r in rows:
        state = f"cleared {r['cleared']}" if r["cleared"] else "OPEN"
        print(f"{r['id']}  {r['site']}/{r['door']}  {r['kind']}  x{r['count']}  "
              f"{r['first_seen']} .. {r['last_seen']}  {state}\n    {r['detail']}")
    return 0


def cmd_conflicts(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        rows = store.conflicts(args.site, args.door)
    finally:
        store.close()
    for r in rows:
        if args.json:
            print(json.dumps(r, sort_keys=True, ensure_ascii=False))
        else:
            kept, refused = r["kept"], r["refused"]
            print(f"{r['site']}/{r['door']}#{r['seq']}  x{r['count']}  kept {kept.get('id')} "
                  f"({kept.get('type')} {kept.get('ts')}), refused {refused.get('id')} "
                  f"({refused.get('type')} {refused.get('ts')})")
    if not rows and not args.json:
        print("no conflict", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from accessd.central.migrate import migrate
    from accessd.central.store import open_store

    if args.source == args.target:
        raise CentralError("--from and --to are the same store")
    source = open_store(args.source)
    try:
        target = open_store(args.target)
        try:
            report = migrate(source, target, chunk=args.chunk,
                             say=lambda line: print(line, file=sys.stderr))
        finally:
            target.close()
    finally:
        source.close()
    for line in report.differ[:20]:
        print(f"differs: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    if not report.ok:
        raise CentralError(f"the target does not match the source ({len(report.differ)} events"
                           f" differ, {len(report.problems)} problems); nothing was "
                           "overwritten, run it again once fixed")
    print(f"migrated: {report.read.get('events', 0)} events checked, "
          f"{sum(report.copied.values())} rows new in the target")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from accessd.protocol.signing import OfficeKey

    key = OfficeKey.generate()
    private, public = args.out / f"{args.name}.key", args.out / f"{args.name}.pub"
    if private.exists():
        raise CentralError(f"{private} exists; refusing to overwrite a signing key")
    key.save(private, public)
    print(f"private key: {private} (keep it at the office, mode 0600)")
    print(f"public key:  {public} (copy to each door: mqtt.rules_public_key_file)")
    print(f"key id:      {key.key_id}")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from accessd.credentials import read_secret_file

    store = _open(args)
    try:
        schedule = None
        if args.opens or args.closes or args.days or args.closures is not None:
            current = (store.site(args.site) or {}).get("schedule") or {}
            from accessd.central.report import DEFAULT_SCHEDULE

            schedule = {**DEFAULT_SCHEDULE, **current}
            schedule["timezone"] = args.timezone or schedule["timezone"]
            for key in ("opens", "closes"):
                if getattr(args, key):
                    schedule[key] = getattr(args, key)
            if args.days:
                schedule["days"] = [d.strip() for d in args.days.split(",") if d.strip()]
            if args.closures is not None:
                schedule["closures"] = sorted(c.strip() for c in args.closures.split(",")
                                              if c.strip())
            from jsonschema import Draft202012Validator

            from accessd.protocol.codec import schema

            errors = list(Draft202012Validator(schema("rules")["$defs"]["schedule"])
                          .iter_errors(schedule))
            if errors:
                raise CentralError(f"schedule: {errors[0].message}")
        key = read_secret_file(args.key_file) if args.key_file else None
        if key is not None:
            try:
                bytes.fromhex(key)
            except ValueError:
                raise CentralError(f"{args.key_file}: the site key must be hexadecimal"
                                   ) from None
        store.set_site(args.site, name=args.name, timezone=args.timezone,
                       credential_key=key, schedule=schedule)
        if args.door_enrolment_days is not None and not 1 <= args.door_enrolment_days <= 366:
            raise CentralError("--door-enrolment-days: from 1 to 366")
        if args.door_enrolments or args.door_enrolment_days:
            current = store.door_policy(args.site)
            store.set_door_policy(args.site, args.door_enrolments or current["door_enrolments"],
                                  args.door_enrolment_days or current["days"])
        plans = {}
        for item in args.plan_doors or ():
            plan, _, doors = item.partition("=")
            plans[plan.strip()] = [d.strip() for d in doors.split(",") if d.strip()]
        if plans or args.booking_lead is not None or args.billing:
            store.rooms.set_access(args.site, plans=plans, booking_lead_min=args.booking_lead,
                                   billing=args.billing)
        info = store.site(args.site) or {}
        info["credential_key"] = "<set>" if info.get("credential_key") else None
        info["door_enrolments"] = store.door_policy(args.site)
        info.pop("access", None)
        info.pop("billing", None)
        info.update(store.rooms.settings(args.site))
        info["doors"] = store.rooms.doors(args.site)
        print(json.dumps(info, indent=2))
    finally:
        store.close()
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from accessd.central import publisher
    from accessd.central.members import read_members
    from accessd.credentials import CredentialHasher
    from accessd.protocol.signing import OfficeKey

    key = OfficeKey.load(args.key)
    store = _open(args)
    try:
        if args.members:
            site_key = (store.site(args.site) or {}).get("credential_key")
            hasher = CredentialHasher(bytes.fromhex(site_key)) if site_key else None
            members, creds = read_members(args.members, hasher)
            counts = store.import_members(args.site, members, creds, exact=args.exact)
            print(f"{args.members}: {counts['members']} members, {counts['credentials']} "
                  f"cards; {counts['removed_members']} members and "
                  f"{counts['removed_credentials']} cards removed", file=sys.stderr)
            if counts["kept_from_doors"]:
                print(f"{args.members}: {len(counts['kept_from_doors'])} members accepted from "
                      f"doors are not in the file, kept (--exact removes them): "
                      f"{', '.join(counts['kept_from_doors'])}", file=sys.stderr)
            if counts["kept_revoked"]:
                print(f"{args.members}: {counts['kept_revoked']} revoked for good, kept "
                      f"revoked: {', '.join(counts['kept_revoked_ids'])}", file=sys.stderr)
        docs = publisher.build(store, key, args.site, delta=args.delta)
    finally:
        store.close()
    print(f"site {args.site}: rules version {docs.version} signed by {key.key_id} "
          f"({docs.changes} changes{', delta too' if docs.delta else ''})")
    if args.no_send:
        return 0
    try:
        publisher.send(docs, _settings(args), prefix=args.prefix)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise CentralError(str(exc)) from None
    print(f"published to {args.prefix}/{args.site}/rules/")
    return 0


def add_member_edit(members: Any) -> None:
    """`member set` and `member list` beside the office's `member export|erase`
    (accessd.central.officecli): one member at a time, options from the member schema."""
    m = members.add_parser("set", help="create or change a member (the fields given)",
                           description="Create or change one member at the office: the "
                                       "fields given change, the others stay. Its cards and "
                                       "status change with the members file and `revoke`.")
    _store_opt(m)
    m.add_argument("--site", required=True, help="site id")
    m.add_argument("--id", required=True, help="member id")
    add_options(m, MEMBERS, MEMBER_OPTIONS)
    m.add_argument("--json", action="store_true", help="print the member as JSON")
    m = members.add_parser("list", help="the site's members",
                           description="The site's members, every field the office keeps.")
    _store_opt(m)
    m.add_argument("--site", required=True, help="site id")
    m.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_member_edit(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        if args.member_command == "set":
            values = cli_values(MEMBERS, args, MEMBER_OPTIONS)
            row = store.set_member(args.site, args.id, values)
            print(json.dumps(row, sort_keys=True, ensure_ascii=False) if args.json else
                  f"member {row['id']} saved; run `accessd central publish` to send it")
            return 0
        rows = store.members(args.site)
    finally:
        store.close()
    for r in rows:
        print(json.dumps(r, sort_keys=True, ensure_ascii=False) if args.json else
              "  ".join(str(r[c] or "-") for c in ("id", "name", "plan", "status")))
    if not rows and not args.json:
        print(f"no member at {args.site}", file=sys.stderr)
    return 0


def _site_tz(store: Any, site: str) -> Any:
    from accessd.central.report import site_schedule

    return site_schedule(store, site).tz


def _publish_after(store: Any, args: argparse.Namespace, what: str) -> None:
    """With --key: sign and send the change now (a delta, and the snapshot)."""
    from accessd.central import publisher
    from accessd.protocol.signing import OfficeKey

    if not getattr(args, "key", None):
        print(f"{what}; run `accessd central publish --delta` to send it to the doors",
              file=sys.stderr)
        return
    docs = publisher.build(store, OfficeKey.load(args.key), args.site, delta=True)
    print(f"{what}; rules version {docs.version} ({docs.changes} changes)", file=sys.stderr)
    if args.no_send:
        return
    try:
        publisher.send(docs, _settings(args), prefix=args.prefix)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise CentralError(f"{exc} (version {docs.version} is recorded: publish again)"
                           ) from None
    print(f"published to {args.prefix}/{args.site}/rules/", file=sys.stderr)


def cmd_right(args: argparse.Namespace) -> int:
    from accessd.schema import RIGHTS

    store = _open(args)
    try:
        if args.right_command == "add":
            row = store.rooms.add_right(args.site, cli_values(RIGHTS, args, RIGHT_OPTIONS))
            print(json.dumps(row, sort_keys=True) if args.json else
                  f"{row['effect']} {row['member_id']} at {row['door']} saved as {row['id']}")
            _publish_after(store, args, "the right is recorded")
            return 0
        if args.right_command == "remove":
            if not store.rooms.remove_right(args.site, args.id):
                raise CentralError(f"no right {args.id} at {args.site}")
            _publish_after(store, args, f"right {args.id} removed")
            return 0
        rows = store.rooms.rights(args.site, args.member)
    finally:
        store.close()
    for r in rows:
        print(json.dumps(r, sort_keys=True) if args.json else
              f"{r['id']}  {r['member_id']:<12} {r['effect']:<5} {r['door']:<10} "
              f"{r['days'] or 'every day'} {r['start'] or '00:00'}-{r['end'] or '24:00'} "
              f"valid {r['valid_from'] or '…'} → {r['valid_until'] or '…'}"
              + (f"  ({r['note']})" if r["note"] else ""))
    return 0


def cmd_booking(args: argparse.Namespace) -> int:
    from accessd.central.bookings import parse_local

    store = _open(args)
    try:
        tz = _site_tz(store, args.site)
        if args.booking_command == "add":
            start = parse_local(args.start, tz, "--start")
            end = parse_local(args.end, tz, "--end")
            row = store.rooms.add_booking(args.site, member_id=args.member_id, door=args.door,
                                          start=start, end=end, summary=args.summary,
                                          booking_id=args.id)
            print(json.dumps(row, sort_keys=True) if args.json else
                  f"booking {row['id']}: {row['member_id']} in {row['door']} "
                  f"{_local(row['start'], tz)} → {_local(row['end'], tz)[11:]}")
            _publish_after(store, args, "the booking is recorded")
        elif args.booking_command == "cancel":
            if not args.key and not args.no_publish:
                raise CentralError("a cancellation goes to the doors at once: give --key "
                                   "(and the broker options), or --no-publish to record it "
                                   "only")
            row = store.rooms.cancel_booking(args.site, args.id)
            print(f"booking {row['id']} cancelled")
            _publish_after(store, args, "the cancellation is recorded")
        elif args.booking_command == "import":
            _import_bookings(store, args, tz)
        else:
            since = _since(args.since) or datetime.now(UTC)
            rows = store.rooms.bookings(args.site, since=since, member_id=args.member,
                                        door=args.door,
                                        status=None if args.all else "active")
            for r in rows:
                print(json.dumps(r, sort_keys=True, ensure_ascii=False) if args.json else
                      f"{r['id']}  {_local(r['start'], tz)} → {_local(r['end'], tz)[11:]}  "
                      f"{r['door']:<10} {r['member_id']:<12} {r['status']:<9} "
                      f"{r['summary'] or ''}")
            if not rows and not args.json:
                print("no booking", file=sys.stderr)
    finally:
        store.close()
    return 0


def _local(instant: str, tz: Any) -> str:
    from accessd.events import parse_ts

    return parse_ts(instant).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _import_bookings(store: Any, args: argparse.Namespace, tz: Any) -> None:
    from accessd.central.bookings import fetch, read_csv, read_ics

    emails = {str(m["email"]).lower(): m["id"] for m in store.members(args.site)
              if m.get("email")}
    if args.csv:
        parsed = read_csv(args.csv, tz, emails)
        source = f"csv:{args.csv.name}"
    else:
        doors = {}
        for d in store.rooms.doors(args.site):
            doors[d["door"]] = d["door"]
            if d["name"]:
                doors[str(d["name"]).lower()] = d["door"]
        if args.url:
            data, source = fetch(args.url), f"ics:{args.url}"
        else:
            try:
                data = args.ics.read_bytes()
            except OSError as exc:
                raise CentralError(f"{args.ics}: cannot read: {exc.strerror}") from None
            source = f"ics:{args.ics.name}"
        parsed = read_ics(data, tz, emails=emails, doors=doors, door=args.door,
                          horizon_days=args.horizon)
        if args.door:
            source += f"#{args.door}"
    usable = []
    for row in parsed.rows:  # a row the office refuses (unknown room or member) is skipped
        try:
            store.rooms._member(args.site, row["member_id"])
            room = store.rooms.door(args.site, row["door"])
            if room is None or room["kind"] != "meeting_room":
                raise CentralError(f"{row['door']!r} is not a meeting room of {args.site}")
        except (AccessdError, ValueError) as exc:
            parsed.skipped.append(f"{row.get('summary') or row['id']}: {exc}")
            continue
        usable.append(row)
    counts = store.rooms.sync_source(args.site, source, usable)
    for line in parsed.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"{source}: {counts['added']} added, {counts['changed']} changed, "
          f"{counts['cancelled']} cancelled, {counts['unchanged']} unchanged, "
          f"{len(parsed.skipped)} skipped")
    if counts["added"] or counts["changed"] or counts["cancelled"]:
        _publish_after(store, args, "the bookings are recorded")


def cmd_revoke(args: argparse.Namespace) -> int:
    from accessd.rights import Change

    if not (args.member or args.credential):
        raise CentralError("name a --member or a --credential to revoke")
    store = _open(args)
    try:
        done = store.revoke(args.site, member_id=args.member, credential_hash=args.credential)
    finally:
        store.close()
    if done is Change.UNCHANGED:
        print("already revoked: nothing changed")
        return 0
    print("revoked for good; run `accessd central publish` to send it to the doors")
    return 0


def _operator() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "office"


def _print_proposals(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for p in rows:
            print(json.dumps(p, sort_keys=True, ensure_ascii=False))
        return
    for p in rows:
        row = p["proposed"]
        if p["kind"] == "member":
            what = (f"member {p['member_id']} {row.get('name')!r} {row.get('plan')} "
                    f"{row.get('status')}, valid {row.get('valid_from') or '…'} → "
                    f"{row.get('valid_until') or '…'}")
        else:
            what = f"card {p['credential_hash'][:12]} {row.get('status')} for {p['member_id']}"
        grants = ", ".join(p["grants"]) or "nothing more than the office has"
        print(f"{p['id']:>5}  {p['received_at'][:16].replace('T', ' ')}  {p['site']}/"
              f"{p['door']} #{p['seq']}  {p['state']:<8}  {what}\n       grants: {grants}"
              + (f"\n       done at once: {p['applied']}" if p["applied"] else "")
              + (f"\n       {p['state']} by {p['decided_by']}" if p["decided_by"] else "")
              + (f": {p['note']}" if p["note"] else ""))


def cmd_pending(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        rows = store.proposals(args.site, state=args.state)
        policy = store.door_policy(args.site)
    finally:
        store.close()
    _print_proposals(rows, args.json)
    if not args.json:
        print(f"{len(rows)} {args.state if args.state != 'all' else ''} proposal(s) at "
              f"{args.site}; door enrolments: {policy['door_enrolments']}".replace("  ", " "),
              file=sys.stderr)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all:
        raise CentralError("give proposal ids, or --all (not both)")
    store = _open(args)
    try:
        done = store.approve(args.site, None if args.all else args.ids, by=args.by)
    finally:
        store.close()
    _print_proposals(done, args.json)
    approved = sum(p["state"] == "approved" for p in done)
    print(f"{approved} approved, {len(done) - approved} rejected (revoked at the office); run "
          "`accessd central publish` to send them to the doors", file=sys.stderr)
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        done = store.reject(args.site, args.ids, by=args.by, note=args.note)
    finally:
        store.close()
    _print_proposals(done, args.json)
    print(f"{len(done)} rejected; the next publish removes them at the door that proposed "
          "them", file=sys.stderr)
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    from accessd.central.publisher import send_command
    from accessd.protocol.commands import make_command
    from accessd.protocol.signing import OfficeKey

    key = OfficeKey.load(args.key)
    env = make_command(key, type=args.type.replace("-", "_"), site=args.site, door=args.door,
                       operator=args.operator, ttl_s=args.ttl,
                       seconds=args.seconds if args.type == "release" else None)
    try:
        send_command(env, _settings(args), prefix=args.prefix)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise CentralError(str(exc)) from None
    print(f"{args.type} sent to {args.site}/{args.door} (id {env['payload']['id']}, valid "
          f"until {env['payload']['expires_at']})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from accessd.central.report import (
        HOURS_COLUMNS,
        IN_PROGRESS,
        NO_END,
        VISIT_COLUMNS,
        monthly_billing,
    )
    from accessd.central.retention import frozen_lines

    store = _open(args)
    try:
        billing = monthly_billing(store, args.site, args.month)
        frozen = frozen_lines(store, args.site, args.month)  # kept once the month is done
    finally:
        store.close()
    tz = billing.schedule.tz
    for warning in billing.warnings:
        print(f"accessd: warning: {warning}", file=sys.stderr)
    waiting = billing.in_progress
    if waiting:
        ends = ", ".join(sorted({v.end.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
                                 for v in waiting}))
        print(f"accessd: note: {len(waiting)} visit{'s' if len(waiting) > 1 else ''} in "
              f"progress, billed once closed (at {ends} unless an exit comes first)",
              file=sys.stderr)
    if args.visits:
        shown = [v for v in billing.visits if v.closed_by != IN_PROGRESS]
        rows = [{"member_id": v.member_id, "member_name": v.member_name, "door": v.door,
                 "entered_at": v.start.astimezone(tz).isoformat(timespec="minutes"),
                 "left_at": (v.end.astimezone(tz).isoformat(timespec="minutes")
                             if v.closed_by != NO_END else ""),
                 "hours": round(v.hours, 2), "closed_by": v.closed_by} for v in shown]
        columns = VISIT_COLUMNS
    else:
        rows, columns = (frozen if frozen is not None else billing.rows()), HOURS_COLUMNS
    if args.csv:
        w = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    elif not rows:
        print(f"no occasional visits at {args.site} in {args.month}")
    elif args.visits:
        flags = {"closing_time": "  (no exit: closed at closing time)",
                 NO_END: "  (no exit, entered after closing time: not billed)"}
        for v in shown:
            left = v.end.astimezone(tz).strftime("%H:%M %Z") if v.closed_by != NO_END else "?"
            print(f"{v.start.astimezone(tz):%Y-%m-%d %H:%M %Z} → {left}  {v.hours:5.2f} h  "
                  f"{v.member_name}{flags.get(v.closed_by, '')}")
    else:
        for r in rows:
            notes = [f"{n} {what}" for n, what in (
                (r["visits_closed_at_closing_time"], "without exit"),
                (r["visits_without_end"], "not billed: no end")) if n]
            booked = (f"  booked {r['booked_hours']:7.2f} h  billed {r['billed_hours']:7.2f} h "
                      f"({r['billing']})" if r["booked_hours"] or r["billing"] == "booked"
                      else "")
            print(f"{r['member_name']:<30} {r['visits']:3} visits {r['hours']:7.2f} h"
                  + booked + (f"  ({', '.join(notes)})" if notes else ""))
    return 0


def cmd_entries(args: argparse.Namespace) -> int:
    from accessd.central.report import recent_entries, site_schedule

    store = _open(args)
    try:
        rows = recent_entries(store, args.site, since=_since(args.since), door=args.door,
                              limit=args.limit)
        tz = site_schedule(store, args.site).tz
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))
        return 0
    from accessd.events import parse_ts

    for r in rows:
        local = parse_ts(r["ts"]).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        who = r["member_name"] or r["member_id"] or f"card {r['credential'] or '?'}"
        print(f"{local}  {r['door']:<10} {r['result'] or '':<8} {r['reason'] or '':<22} {who}")
    return 0


# -- the parser -------------------------------------------------------------------------------
def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `central` and its commands to the main parser's subparsers."""
    central = subparsers.add_parser(
        "central", help="the central office: collector, rules, reports",
        description="Central office commands: collect every door's events, publish signed "
                    "rules, send commands, report hours and entries.")
    sub = central.add_subparsers(dest="central_command", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str,
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    p = add("collect", cmd_collect, "Store every door's events (run one or more, as a service).")
    _store_opt(p)
    _broker_opts(p)
    p.add_argument("--group", default="accessd-collectors",
                   help="shared subscription group: collectors in one group share the load")
    p.add_argument("--client-id", default="accessd-collector-1",
                   help="unique per collector; its broker session keeps messages while down")
    p.add_argument("--key", type=Path, required=True,
                   help="the office's private key: acknowledgements to doors are signed")
    p.add_argument("--verify-workers", type=int, metavar="N", default=0,
                   help="processes checking event signatures beside the collector, for "
                        "idle cores (default 0: in the collector; run more collectors first)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")

    p = add("door", cmd_door, "Register, list and remove the doors' signing keys.")
    doors = p.add_subparsers(dest="door_command", metavar="ACTION", required=True)
    d = doors.add_parser("add", help="register a door's public key (from `accessd door-key`)",
                         description="Register a door's public key: its events are stored "
                                     "from then on. A door may have several keys (a roll).")
    _store_opt(d)
    d.add_argument("--site", required=True, help="site id")
    d.add_argument("--door", required=True, help="door id")
    line = d.add_mutually_exclusive_group(required=True)
    line.add_argument("--public-key", metavar="LINE",
                      help="the line `accessd door-key` printed at the door")
    line.add_argument("--public-key-file", type=Path, metavar="FILE",
                      help="a file holding that line")
    d = doors.add_parser("set", help="describe a door: entrance, work room or meeting room",
                         description="Register or change a door of the site: its kind "
                                     "(a booking of any room opens the entrances; meeting "
                                     "rooms are bookable), name and closed days.")
    _store_opt(d)
    d.add_argument("--site", required=True, help="site id")
    d.add_argument("--door", required=True, help="door id")
    d.add_argument("--kind", required=True, choices=("entrance", "room", "meeting_room"),
                   help="entrance, room (a work room) or meeting_room (bookable)")
    d.add_argument("--name", help="display name (a calendar's LOCATION may name it)")
    d.add_argument("--closures", help="days this door is closed to opening-hours access, "
                                      "comma separated YYYY-MM-DD ('' clears)")
    d = doors.add_parser("list", help="the registered keys",
                         description="The registered door keys.")
    _store_opt(d)
    d.add_argument("--site", help="only this site")
    d.add_argument("--door", help="only this door")
    d.add_argument("--json", action="store_true", help="one JSON object per line")
    d = doors.add_parser("remove", help="stop accepting a key (a stolen door, a rolled key)",
                         description="Remove a door's key: events it signs are refused.")
    _store_opt(d)
    d.add_argument("--site", required=True, help="site id")
    d.add_argument("--door", required=True, help="door id")
    d.add_argument("--key-id", required=True, help="the key's id (from `door list`)")

    p = add("alarms", cmd_alarms, "Alarms: refused events, conflicts, new journals, losses.")
    _store_opt(p)
    p.add_argument("--site", help="only this site")
    p.add_argument("--all", action="store_true", help="cleared alarms too")
    p.add_argument("--clear", action="append", metavar="ID",
                   help="clear this alarm (after dealing with it); may be repeated")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("conflicts", cmd_conflicts,
            "Events that differ from the stored ones with their numbers (both kept here).")
    _store_opt(p)
    p.add_argument("--site", help="only this site")
    p.add_argument("--door", help="only this door")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("migrate", cmd_migrate,
            "Copy an office store to another database (SQLite <-> PostgreSQL), then verify.")
    p.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="the store to copy (SQLite path or postgresql:// URL)")
    p.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the store to fill (created if new); rows already there are kept")
    p.add_argument("--chunk", type=int, default=5000, help="rows per transaction (5000)")

    p = add("keygen", cmd_keygen, "Make the office's Ed25519 signing key pair.")
    p.add_argument("--out", type=Path, required=True, help="folder for NAME.key and NAME.pub")
    p.add_argument("--name", default="office", help="file name stem (default office)")

    p = add("site", cmd_site, "Register a site: name, time zone, card key, opening hours.")
    _store_opt(p)
    p.add_argument("--site", required=True, help="site id, as in the doors' [site] id")
    p.add_argument("--name", help="display name")
    p.add_argument("--timezone", help="IANA time zone, e.g. Europe/Paris")
    p.add_argument("--key-file", type=Path,
                   help="the site's card key (the doors' site.key), to hash card numbers")
    p.add_argument("--opens", help="opening time for occasional members, HH:MM")
    p.add_argument("--closes", help="closing time, HH:MM")
    p.add_argument("--days", help="open days, e.g. mon,tue,wed,thu,fri")
    p.add_argument("--closures", help="closed dates, comma separated YYYY-MM-DD ('' clears)")
    p.add_argument("--door-enrolments", choices=("approve", "auto-restricted"),
                   help="what becomes of a door's enrolments: approve (default: each waits "
                        "for `approve`) or auto-restricted (a new member is admitted at once "
                        "as occasional, for --door-enrolment-days)")
    p.add_argument("--door-enrolment-days", type=int, metavar="N",
                   help="auto-restricted: days a new member is admitted for (default 30)")
    p.add_argument("--plan-doors", action="append", metavar="PLAN=DOORS",
                   help="the doors a plan gives (its access group), e.g. "
                        "occasional=entrance,work or subscriber=* (default: every door); "
                        "may be repeated")
    p.add_argument("--booking-lead", type=int, metavar="MINUTES",
                   help="a booking opens its room and the entrances this long before its "
                        "start (0-1440, default 0)")
    p.add_argument("--billing", choices=("measured", "booked"),
                   help="occasional members are billed by measured use (default) or by "
                        "booked hours; the report shows both")

    p = add("publish", cmd_publish, "Sign and publish a site's rules (from a members file).")
    _store_opt(p)
    _broker_opts(p)
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--members", type=Path, help="members file (.csv or .json) to import first")
    p.add_argument("--exact", action="store_true",
                   help="with --members: the file is the whole list, members accepted from "
                        "doors that it does not name are removed too")
    p.add_argument("--key", type=Path, required=True, help="the office's private key")
    p.add_argument("--delta", action="store_true",
                   help="also send a delta from the previous version (faster for doors)")
    p.add_argument("--no-send", action="store_true",
                   help="record the signed version without publishing it")

    p = add("right", cmd_right, "Members' extra rights and restrictions: a door, weekdays, "
                                "a time window, valid from/until.")
    rights = p.add_subparsers(dest="right_command", metavar="ACTION", required=True)
    r = rights.add_parser("add", help="give an extra right (allow) or a restriction (deny)",
                          description="Give a member an extra right (effect allow) or a "
                                      "restriction (effect deny, which wins over every "
                                      "grant) at a door or every door (*), on weekdays, in a "
                                      "time window (site time), from/until days.")
    _store_opt(r)
    r.add_argument("--site", required=True, help="site id")
    add_options(r, RIGHTS, RIGHT_OPTIONS, required=("member_id", "door", "effect"))
    r.add_argument("--json", action="store_true", help="print the right as JSON")
    _publish_opts(r)
    r = rights.add_parser("remove", help="remove a right or restriction",
                          description="Remove a right or a restriction (by its id).")
    _store_opt(r)
    r.add_argument("--site", required=True, help="site id")
    r.add_argument("--id", required=True, help="the right's id (from `right list`)")
    _publish_opts(r)
    r = rights.add_parser("list", help="the site's rights and restrictions",
                          description="The site's rights and restrictions.")
    _store_opt(r)
    r.add_argument("--site", required=True, help="site id")
    r.add_argument("--member", help="only this member's")
    r.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("booking", cmd_booking, "Bookings of meeting rooms: add, list, cancel, import "
                                    "from CSV or iCalendar.")
    books = p.add_subparsers(dest="booking_command", metavar="ACTION", required=True)
    b = books.add_parser("add", help="book a meeting room for a member",
                         description="Book a meeting room for a member: the member may open "
                                     "the room and the entrances from the site's lead time "
                                     "before the start until the end.")
    _store_opt(b)
    b.add_argument("--site", required=True, help="site id")
    add_options(b, BOOKINGS, ("member_id", "door", "start", "end", "summary"),
                required=("member_id", "door", "start", "end"))
    b.add_argument("--id", help="change this booking instead of adding one")
    b.add_argument("--json", action="store_true", help="print the booking as JSON")
    _publish_opts(b)
    b = books.add_parser("cancel", help="cancel a booking: revoked at the doors at once",
                         description="Cancel a booking and publish at once: the doors refuse "
                                     "it as soon as they have the new rules.")
    _store_opt(b)
    b.add_argument("--site", required=True, help="site id")
    b.add_argument("id", help="the booking's id (from `booking list`)")
    b.add_argument("--no-publish", action="store_true",
                   help="record the cancellation only (the next publish sends it)")
    _publish_opts(b)
    b = books.add_parser("list", help="bookings not yet over (or since --since)",
                         description="Bookings that end after --since (default now).")
    _store_opt(b)
    b.add_argument("--site", required=True, help="site id")
    b.add_argument("--since", help="24h, 7d or an ISO date/time (default: now)")
    b.add_argument("--member", help="only this member's")
    b.add_argument("--door", help="only this room's")
    b.add_argument("--all", action="store_true", help="cancelled ones too")
    b.add_argument("--json", action="store_true", help="one JSON object per line")
    b = books.add_parser("import", help="bookings from a CSV file or an iCalendar file/feed",
                         description="Import bookings: a CSV file (columns id, member or "
                                     "email, door, start, end, summary) or an iCalendar file "
                                     "or feed (events of members by e-mail; recurring "
                                     "events expanded). The source's bookings become what "
                                     "it says: removed events are cancelled.")
    _store_opt(b)
    b.add_argument("--site", required=True, help="site id")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, metavar="FILE", help="a CSV file")
    src.add_argument("--ics", type=Path, metavar="FILE", help="an iCalendar (.ics) file")
    src.add_argument("--url", help="an iCalendar feed (https:// or webcal://)")
    b.add_argument("--door", help="the room of every event of the calendar (default: the "
                                  "room its LOCATION names)")
    b.add_argument("--horizon", type=int, default=90, metavar="DAYS",
                   help="occurrences up to this many days ahead (default 90)")
    _publish_opts(b)

    p = add("revoke", cmd_revoke, "Revoke a member or a card at the office, for good.")
    _store_opt(p)
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--member", help="member id")
    p.add_argument("--credential", help="full credential hash")

    p = add("pending", cmd_pending, "List the changes doors proposed, and what each grants.")
    _store_opt(p)
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--state", default="pending",
                   choices=("pending", "approved", "rejected", "all"),
                   help="which proposals (default pending)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("approve", cmd_approve, "Accept proposals from doors: they go out at the next "
                                    "publish.")
    _store_opt(p)
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="proposal ids (from pending)")
    p.add_argument("--all", action="store_true", help="every pending proposal of the site")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--by", default=_operator(),
                   help="who decides (recorded; default $SUDO_USER or $USER)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("reject", cmd_reject, "Refuse proposals from doors: the proposing door drops them.")
    _store_opt(p)
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="proposal ids (from pending)")
    p.add_argument("--site", help="only at this site")
    p.add_argument("--note", help="why (recorded)")
    p.add_argument("--by", default=_operator(),
                   help="who decides (recorded; default $SUDO_USER or $USER)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("command", cmd_command, "Send a signed command to one door.")
    _broker_opts(p)
    p.add_argument("type", choices=("release", "request-snapshot"), help="what the door does")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--door", required=True, help="door id")
    p.add_argument("--key", type=Path, required=True, help="the office's private key")
    p.add_argument("--operator", required=True, help="who asks (journalled at the door)")
    p.add_argument("--seconds", type=float, default=5.0, help="release time (3-600 s)")
    p.add_argument("--ttl", type=float, default=30.0,
                   help="seconds the command stays valid (default 30)")

    p = add("report", cmd_report, "Occasional members' hours in a month, for billing.")
    _store_opt(p)
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--month", required=True, help="YYYY-MM, in the site's local time")
    p.add_argument("--csv", action="store_true", help="CSV on standard output")
    p.add_argument("--visits", action="store_true", help="one line per visit, not per member")

    p = add("entries", cmd_entries, "Recent access decisions at a site, newest first.")
    _store_opt(p)
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--since", help="24h, 7d, 30m or an ISO date/time")
    p.add_argument("--door", help="only this door")
    p.add_argument("--limit", type=positive_int, default=50,
                   help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    from accessd.central.officecli import register as register_office

    register_office(add, _store_opt, _broker_opts)  # web, user, member, retention
    return central


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="accessd", description="accessd central office")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `accessd central ...` alone (argv without the leading 'accessd')."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except UsageError as exc:
        return error(exc, 2)
    except (AccessdError, ValueError) as exc:
        return error(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
