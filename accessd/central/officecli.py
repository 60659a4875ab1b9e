"""`accessd central web|user|member|retention`: the office in a browser, its users, a member's
rights, and retention. Registered by `accessd.central.cli.register`; each command builds the
library object, calls it, and turns library errors into one line."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accessd.errors import AccessdError

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


class OfficeCliError(AccessdError):
    """An office command could not do what was asked."""


def _actor() -> str:
    return "cli:" + (os.environ.get("SUDO_USER") or os.environ.get("USER") or "office")


def _open(args: argparse.Namespace) -> Any:
    from accessd.central.store import open_store

    return open_store(args.store)


def _need_office() -> None:
    missing = []
    for module in ("starlette", "jinja2", "uvicorn", "argon2", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OfficeCliError(f"the office's web needs {', '.join(missing)}: "
                             "pip install 'accessd[office]'")


# -- web ----------------------------------------------------------------------------------------
def cmd_web(args: argparse.Namespace) -> int:
    import logging

    _need_office()
    import uvicorn

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise OfficeCliError(f"--listen: expected HOST:PORT, got {args.listen!r}")
    data: dict[str, Any] = {"store": args.store, "timezone": args.timezone,
                            "retention": not args.no_retention, "prefix": args.prefix}
    if args.key:
        data["key"] = str(args.key.resolve())
        data["broker"] = {"host": args.host, "port": args.port, "username": args.username,
                          "password_file": str(args.password_file.resolve())
                          if args.password_file else None,
                          "tls": not args.no_tls,
                          "ca_file": str(args.ca_file.resolve()) if args.ca_file else None,
                          "cert_file": str(args.client_cert.resolve())
                          if args.client_cert else None,
                          "key_file": str(args.client_key.resolve())
                          if args.client_key else None}
    from accessd.central.users import Users
    from accessd.central.web.settings import config_from_json

    config = config_from_json(data)  # fails here, once, on a bad key or password file
    store = _open(args)  # creates the tables before the workers race to
    try:
        if not Users(store).list():
            logging.warning("no web user yet: add one with `accessd central user add`")
    finally:
        store.close()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    common = {"host": host.strip("[]"), "port": int(port), "proxy_headers": True,
              "forwarded_allow_ips": args.forwarded_allow_ips, "log_level": args.log_level.lower(),
              "timeout_graceful_shutdown": 5, "server_header": False}
    if args.workers > 1:
        os.environ["ACCESSD_WEB_CONFIG"] = json.dumps(data)
        uvicorn.run("accessd.central.web.app:from_env", factory=True, workers=args.workers,
                    **common)
    else:
        from accessd.central.web.app import create_app

        uvicorn.run(create_app(config), **common)
    return 0


# -- users --------------------------------------------------------------------------------------
def _password(args: argparse.Namespace) -> str:
    """From standard input (--password-stdin: the first line), else asked twice."""
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise OfficeCliError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise OfficeCliError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise OfficeCliError("the two passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from accessd.central import audit
    from accessd.central.users import Users

    store = _open(args)
    try:
        users = Users(store)
        if args.user_command == "add":
            user = users.add(args.name, _password(args), args.role, args.site or [])
            audit.record(store, actor=_actor(), action="user.add", target=user.username,
                         detail={"role": user.role, "sites": list(user.sites)})
            print(f"user {user.username} added: {user.role}"
                  + (f" of {', '.join(user.sites)}" if user.sites else
                     (" of every site" if user.role != "operator" else "")))
        elif args.user_command == "passwd":
            users.set_password(args.name, _password(args))
            audit.record(store, actor=_actor(), action="user.passwd", target=args.name.lower())
            print(f"password of {args.name.lower()} changed; their sessions are closed")
        elif args.user_command == "remove":
            users.remove(args.name)
            audit.record(store, actor=_actor(), action="user.remove", target=args.name.lower())
            print(f"user {args.name.lower()} removed; their sessions are closed")
        else:
            rows = users.list()
            for r in rows:
                print(json.dumps(r, sort_keys=True) if args.json else
                      f"{r['username']:<24} {r['role']:<9} "
                      f"{', '.join(r['sites']) or 'every site'}")
            if not rows and not args.json:
                print("no web user", file=sys.stderr)
    finally:
        store.close()
    return 0


# -- a member's rights --------------------------------------------------------------------------
def cmd_member(args: argparse.Namespace) -> int:
    from accessd.central import audit, privacy

    if args.member_command in ("set", "list"):  # one member at a time (accessd.central.cli)
        from accessd.central.cli import cmd_member_edit

        return cmd_member_edit(args)
    store = _open(args)
    try:
        if args.member_command == "export":
            data = privacy.export(store, args.site, args.member)
            text = (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
                    if args.format == "json" else privacy.export_csv(data))
            audit.record(store, actor=_actor(), action="member.export", site=args.site,
                         target=args.member, detail={"format": args.format})
            if args.out:
                fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                print(f"{args.out}: {len(data['events'])} events, {len(data['cards'])} cards",
                      file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        return _erase(args, store)
    finally:
        store.close()


def _erase(args: argparse.Namespace, store: Any) -> int:
    from accessd.central import audit, privacy
    from accessd.central.memberops import Publishing
    from accessd.protocol.signing import OfficeKey

    if not args.yes:
        if not sys.stdin.isatty():
            raise OfficeCliError("erasing cannot be undone: add --yes (no terminal to ask on)")
        typed = input(f"Erase {args.member} at {args.site} for good? Type the member id: ")
        if typed.strip() != args.member:
            raise OfficeCliError("not confirmed: nothing erased")
    key = OfficeKey.load(args.key)
    settings = None
    if not args.no_send:
        from accessd.central.cli import _settings

        settings = _settings(args)
    done = privacy.erase(store, args.site, args.member)
    published = Publishing(key, settings, args.prefix).publish(store, args.site)
    pruned = privacy.prune_versions(store, args.site)
    audit.record(store, actor=_actor(), action="member.erase", site=args.site,
                 target=done["pseudonym"],
                 detail={k: v for k, v in done.items() if k != "pseudonym"}
                 | {"rule_versions_pruned": pruned})
    print(f"erased: {done['events']} events now say {done['pseudonym']}, {done['cards']} "
          f"cards and {done['proposals']} proposals deleted; {published.words()}")
    return 0 if published.sent or args.no_send else 1


# -- retention ----------------------------------------------------------------------------------
def cmd_retention(args: argparse.Namespace) -> int:
    from accessd.central import audit, retention

    store = _open(args)
    try:
        if args.months is not None:
            try:
                retention.set_months(store, args.months)
            except ValueError as exc:
                raise OfficeCliError(f"--months: {exc}") from None
            audit.record(store, actor=_actor(), action="retention.set",
                         detail={"months": args.months})
        if args.apply or args.dry_run:
            run = retention.apply(store, dry_run=args.dry_run)
            if not args.dry_run:
                audit.record(store, actor=_actor(), action="retention.applied",
                             detail={"cutoff": run.cutoff, "deleted": run.deleted,
                                     "frozen": len(run.frozen)})
            what = "would delete" if args.dry_run else "deleted"
            print(f"cut-off {run.cutoff}: {what} "
                  + ", ".join(f"{n} {t}" for t, n in sorted(run.deleted.items()))
                  + (f"; froze {len(run.frozen)} site-months" if run.frozen else ""))
        print(f"movement logs kept {retention.months(store)} months; last run: "
              f"{retention.setting(store, 'retention_last_run') or 'never'}")
    finally:
        store.close()
    return 0


# -- the parsers --------------------------------------------------------------------------------
def register(add: Add, store_opt: Callable[[argparse.ArgumentParser], None],
             broker_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    p = add("web", cmd_web, "Serve the office in a browser (overview, entries, members, "
                            "billing, usage report).")
    store_opt(p)
    broker_opts(p)
    p.add_argument("--listen", default="127.0.0.1:8080",
                   help="address and port to serve on, behind the TLS front (default "
                        "127.0.0.1:8080)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (several need a PostgreSQL store to scale)")
    p.add_argument("--key", type=Path,
                   help="the office's private key: member actions sign and publish rules "
                        "(without it, they are off)")
    p.add_argument("--timezone", default="Europe/Paris",
                   help="time zone for dates when no site is chosen (default Europe/Paris)")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                   help="proxies whose X-Forwarded-For/-Proto are believed (default "
                        "127.0.0.1)")
    p.add_argument("--no-retention", action="store_true",
                   help="do not apply the office's retention hourly (another process does)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")

    p = add("user", cmd_user, "Manage who may log in to the office's web: add, passwd, "
                              "list, remove.")
    users = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    u = users.add_parser("add", help="add a user (the password is asked, or read from stdin)",
                         description="Add a web user: operator (every site), manager (the "
                                     "sites named) or viewer (usage report).")
    store_opt(u)
    u.add_argument("name", help="user name (a-z 0-9 . _ - @)")
    u.add_argument("--role", required=True, choices=("operator", "manager", "viewer"),
                   help="what the user may do")
    u.add_argument("--site", action="append", metavar="SITE",
                   help="a site a manager or viewer sees; may be repeated")
    u.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    u = users.add_parser("passwd", help="set a user's password (their sessions end)",
                         description="Set a web user's password; every session of theirs "
                                     "ends.")
    store_opt(u)
    u.add_argument("name", help="user name")
    u.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    u = users.add_parser("list", help="the web users", description="The web users and roles.")
    store_opt(u)
    u.add_argument("--json", action="store_true", help="one JSON object per line")
    u = users.add_parser("remove", help="remove a user (their sessions end)",
                         description="Remove a web user; every session of theirs ends.")
    store_opt(u)
    u.add_argument("name", help="user name")

    p = add("member", cmd_member, "One member: add or change, list, export everything held "
                                  "about them, or erase them.")
    acts = p.add_subparsers(dest="member_command", metavar="ACTION", required=True)
    from accessd.central.cli import add_member_edit

    add_member_edit(acts)
    m = acts.add_parser("export", help="everything the office holds about a member",
                        description="Everything the office holds about one member, as JSON "
                                    "or CSV (audited).")
    store_opt(m)
    m.add_argument("--site", required=True, help="site id")
    m.add_argument("--member", required=True, help="member id")
    m.add_argument("--format", choices=("json", "csv"), default="json",
                   help="json (default) or csv")
    m.add_argument("--out", type=Path, help="write to this file (mode 0600), not stdout")
    m = acts.add_parser("erase", help="remove a member's identity everywhere",
                        description="Erase a member: their rows go at the office and, by "
                                    "signed rules, at the doors; their entries keep a "
                                    "pseudonym; frozen billing lines stay (audited).")
    store_opt(m)
    broker_opts(m)
    m.add_argument("--site", required=True, help="site id")
    m.add_argument("--member", required=True, help="member id")
    m.add_argument("--key", type=Path, required=True, help="the office's private key")
    m.add_argument("--no-send", action="store_true",
                   help="record the signed rules without publishing them")
    m.add_argument("--yes", action="store_true",
                   help="do not ask to type the member id (scripts)")

    p = add("retention", cmd_retention, "How long the office keeps movement logs; apply it now.")
    store_opt(p)
    p.add_argument("--months", type=int, help="keep movement logs this many months (1-120)")
    p.add_argument("--apply", action="store_true",
                   help="freeze finished months' billing and usage, then delete older logs")
    p.add_argument("--dry-run", action="store_true", help="say what --apply would delete")
