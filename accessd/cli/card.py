"""`accessd card ...`: authenticated cards (NTAG 424 DNA, DESFire EV2/EV3) from the host's CLI.

Thin over `accessd.cards`: issuing, re-keying and wiping run on the next card presented (on
the door's reader through the running daemon, or on `--device`), then change the rule cache
as `enroll` and `revoke` do. The key commands act on the master key file and are the site
administrator's, run as the service user; none of them prints a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from accessd.cli.main import print_json

DEVICE_HELP = ("issue on this nfcpy reader (e.g. usb, tty:USB0:pn532) instead of the running "
               "daemon's; needs the master key file (run as the service user)")


def register(sub: Any) -> None:
    """Add `card` and its actions to the top-level subparsers of `accessd`."""
    desc = "Authenticated cards: issue, re-key, wipe; master keys; SUN diagnostics."
    card = sub.add_parser("card", help=desc, description=desc)
    actions = card.add_subparsers(dest="card_command", metavar="ACTION", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        p.set_defaults(handler=globals()[f"cmd_{name.replace('-', '_')}"])
        return p

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reader", help="the daemon's NFC reader to use (default: the first)")
        p.add_argument("--device", metavar="PATH", help=DEVICE_HELP)
        p.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for the card (default 30)")

    operator = os.environ.get("SUDO_USER") or os.environ.get("USER") or "host"

    from accessd.cli.main import _date

    p = add("issue", "Personalise a blank NTAG 424 DNA or DESFire EV2/EV3 card for a member "
                     "and enrol it.")
    p.add_argument("--name", help="member's display name (required for a new member)")
    p.add_argument("--plan", choices=["subscriber", "occasional"],
                   help="subscriber: 24/7; occasional: opening hours only (required for a new "
                        "member)")
    p.add_argument("--member", metavar="ID", help="give the card to this existing member")
    p.add_argument("--from", dest="valid_from", type=_date, metavar="DATE",
                   help="first valid day, YYYY-MM-DD (site time)")
    p.add_argument("--until", dest="valid_until", type=_date, metavar="DATE",
                   help="last valid day, inclusive, YYYY-MM-DD (site time)")
    where(p)
    p.add_argument("--operator", default=operator, help="who does this (journalled)")
    p.add_argument("--json", action="store_true", help="print the member and card as JSON")

    p = add("rekey", "Change an issued card's keys to the current master key version.")
    where(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("wipe", "Return a card to its factory state and revoke its credential.")
    where(p)
    p.add_argument("--operator", default=operator, help="who does this (journalled)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    add("keygen", "Create the master key file, or add a new master key version (rollover).")

    p = add("keys", "List the master key versions and how many cards were last seen at each.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("retire-key", "Retire a master key version: cards still holding it are refused.")
    p.add_argument("version", type=int, help="the version to retire")

    p = add("verify-sun", "Decode a SUN URL (e and c) and check its MAC with the given keys.")
    p.add_argument("url", help="the URL read from an NTAG 424 DNA (quote it for the shell)")
    p.add_argument("--meta-key", required=True, metavar="HEX",
                   help="SDM meta-read key, 32 hex digits (decrypts e)")
    p.add_argument("--file-key", required=True, metavar="HEX",
                   help="SDM file-read key, 32 hex digits (checks c)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _config(args: argparse.Namespace) -> Any:
    from accessd.config import load_config
    from accessd.credentials import check_secrets

    cfg = load_config(args.config)
    check_secrets(cfg)  # a loose secret: one line naming the file, the key and the path
    return cfg


def _announce(args: argparse.Namespace, what: str) -> None:
    place = f"NFC device {args.device}" if args.device else (
        f"reader {args.reader}" if args.reader else "the door's NFC reader")
    print(f"Present the card to {what} on {place} and hold it there (waiting "
          f"{args.timeout:g} s)...", file=sys.stderr)


def cmd_issue(args: argparse.Namespace) -> int:
    from accessd.admin import Site
    from accessd.cards import host
    from accessd.decision import Plan
    from accessd.errors import AccessdError
    from accessd.store.rules import new_member_id

    cfg = _config(args)
    with Site.open(cfg) as site:
        if args.member:
            existing = site.rules.member(args.member)
            name, plan = args.name or existing.name, Plan(args.plan or existing.plan)
            valid_from = args.valid_from or existing.valid_from
            valid_until = args.valid_until or existing.valid_until
        elif not (args.name and args.plan):
            raise AccessdError("a new member needs --name and --plan (or give --member ID)")
        else:
            name, plan = args.name, Plan(args.plan)
            valid_from, valid_until = args.valid_from, args.valid_until
    member_id = args.member or new_member_id()
    _announce(args, "issue")
    done = host.run(cfg, "issue", device=args.device, reader=args.reader,
                    timeout=args.timeout, member_ref=member_id)
    try:
        with Site.open(cfg) as site:
            member = host.enroll_issued(site, done, member_id=member_id, name=name, plan=plan,
                                        valid_from=valid_from, valid_until=valid_until,
                                        operator=args.operator)
    except AccessdError as exc:
        raise AccessdError(f"{exc}; the card was personalised but not enrolled: run 'accessd "
                           "card wipe' on it, then issue it again") from None
    card = {"card": done.card, "key_version": done.key_version,
            "credential": done.credential_hash[:12]}
    if args.json:
        print_json({**member.to_dict(), "issued": card})
        return 0
    print(f"issued {_label(done.card)} (key version {done.key_version}) to {member.id} "
          f"({member.name}), card {card['credential']}")
    return 0


def _on_next_card(args: argparse.Namespace, action: str) -> tuple[Any, Any]:
    """(configuration, the job's answer) of `action` on the next card presented."""
    from accessd.cards import host

    cfg = _config(args)
    _announce(args, {"rekey": "re-key"}.get(action, action))
    return cfg, host.run(cfg, action, device=args.device, reader=args.reader,
                         timeout=args.timeout)


def cmd_rekey(args: argparse.Namespace) -> int:
    from accessd.admin import Site
    from accessd.cards import host

    cfg, done = _on_next_card(args, "rekey")
    with Site.open(cfg) as site:
        host.record_rekeyed(site, done)
    result = {"card": done.card, "key_version": done.key_version,
              "credential": done.credential_hash[:12]}
    if args.json:
        print_json(result)
    else:
        print(f"{_label(done.card)} {result['credential']} now at key version "
              f"{done.key_version}")
    return 0


def cmd_wipe(args: argparse.Namespace) -> int:
    from accessd.admin import Site
    from accessd.cards import host

    cfg, done = _on_next_card(args, "wipe")
    with Site.open(cfg) as site:
        member = host.revoke_wiped(site, done, args.operator)
    result = {"card": done.card, "credential": done.credential_hash[:12],
              "revoked_from": member.id if member else None}
    if args.json:
        print_json(result)
    else:
        tail = f"; its credential of {member.id} is revoked" if member else ""
        print(f"{_label(done.card)} {result['credential']} is back to factory state{tail}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from accessd.cards import keys

    cfg = _config(args)
    path = cfg.cards.master_key_file
    created = not path.exists()
    mk = keys.new_version(path)
    if created:
        print(f"created {path} (mode 0600) with master key version {mk.version}")
    else:
        print(f"added master key version {mk.version} to {path}: cards are issued with it "
              "and re-keyed to it as they are presented; retire the old version once "
              "'accessd card keys' shows no card left on it")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from accessd.admin import Site
    from accessd.cards.keys import Keyring
    from accessd.store.cards import CardStore

    cfg = _config(args)
    ring = Keyring.load(cfg.cards.master_key_file, cfg.site.id)
    with Site.open(cfg) as site:
        seen = CardStore(site.rules.db.conn).versions()
    current = ring.current.version
    rows = [{"version": k.version,
             "state": "retired" if k.retired else ("current" if k.version == current
                                                  else "accepted"),
             "cards": seen.get(k.version, 0)} for k in ring.keys.values()]
    if args.json:
        for row in rows:
            print_json(row)
        return 0
    print(f"{'VERSION':<8} {'STATE':<9} CARDS LAST SEEN")
    for row in rows:
        print(f"{row['version']:<8} {row['state']:<9} {row['cards']}")
    return 0


def cmd_retire_key(args: argparse.Namespace) -> int:
    from accessd.cards import keys

    cfg = _config(args)
    keys.retire(cfg.cards.master_key_file, args.version)
    print(f"master key version {args.version} retired: cards still holding it are refused "
          "(reason key_version_retired) until re-keyed with 'accessd card rekey'")
    return 0


def cmd_verify_sun(args: argparse.Namespace) -> int:
    from accessd.cards import sun
    from accessd.errors import SunMessageError

    meta, file_key = _key(args.meta_key, "--meta-key"), _key(args.file_key, "--file-key")
    message = sun.parse_url(args.url)
    result = sun.verify(message, meta, lambda uid: file_key)
    if result is None:
        raise SunMessageError("e does not decrypt to UID and read counter with --meta-key "
                              "(wrong key, or another SDM layout)")
    out = {"uid": result.uid.hex().upper(), "read_counter": result.counter,
           "mac_valid": result.mac_valid}
    if args.json:
        print_json(out)
    else:
        print(f"uid: {out['uid']}\nread counter: {result.counter}\n"
              f"mac: {'valid' if result.mac_valid else 'INVALID'}")
    return 0 if result.mac_valid else 1


def _key(text: str, option: str) -> bytes:
    from accessd.errors import SunMessageError

    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SunMessageError(f"{option}: not hexadecimal") from None
    if len(key) != 16:
        raise SunMessageError(f"{option}: an AES-128 key is 32 hex digits")
    return key


def _label(kind: str) -> str:
    return {"ntag424": "NTAG 424 DNA", "desfire": "DESFire card"}.get(kind, kind)
