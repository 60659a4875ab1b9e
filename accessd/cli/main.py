"""`accessd`: the host's command line, and the way the daemon is started.

Each command builds the library objects, calls them, and turns library errors into one clear
line on stderr and a non-zero exit status. Every command and option is listed in docs/cli.md
(a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, NoReturn

from accessd import __version__
from accessd.cli.timeparse import TimeSpec, parse_when
from accessd.errors import AccessdError
from accessd.schema import MEMBERS, add_options

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(AccessdError):
    """The command line itself is wrong (argparse's complaint, on one line)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `accessd: error: COMMAND: what is wrong (…)`; the usage
    block is for `--help`. Sub-parsers are of the same class (argparse's default)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("accessd").strip()
        where = f"{command}: " if command else ""
        hint = f"'{self.prog} --help' lists the options"
        raise UsageError(f"{where}{' '.join(message.split())} ({hint})")


# who runs a command: the person behind sudo (the host's wrapper runs as the service user)
def _operator() -> str:
    """Who runs the command: the person behind sudo, else the login (read at parse time)."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "host"


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _name(text: str) -> str:
    """A member's name: not empty, no control characters, at most 100 characters."""
    name = " ".join(text.split())
    if not name:
        raise argparse.ArgumentTypeError("a member needs a name (it is empty)")
    if any(not c.isprintable() for c in name):
        raise argparse.ArgumentTypeError("a name cannot hold control characters")
    if len(name) > 100:
        raise argparse.ArgumentTypeError(f"a name has at most 100 characters ({len(name)})")
    return name


def _card(text: str) -> str:
    """A card number as typed, normalised at once (the error never repeats the number)."""
    from accessd.errors import CardNumberError
    from accessd.readers.uid import normalise_uid

    try:
        return normalise_uid(text)
    except CardNumberError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _when(text: str) -> TimeSpec:
    return parse_when(text)


def _door_option(p: argparse.ArgumentParser, what: str) -> None:
    """--door on a Pi that drives several doors ([[doors]]); default: the first."""
    p.add_argument("--door", metavar="ID", help=f"{what} (a Pi with several [[doors]]; "
                                                 "default: the first door)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="accessd",
        description="Offline-first door access controller: the daemon and the host's tools.",
    )
    parser.add_argument("--version", action="version", version=f"accessd {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file (default: $ACCESSD_CONFIG or "
                             "/etc/accessd/accessd.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, handler: Callable[[argparse.Namespace], int]
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    from accessd.cli import commands as c

    add("run", "Run the door daemon in the foreground (what systemd starts).", c.cmd_run)
    add("check-config", "Validate the configuration file and exit; prints the problem if any.",
        c.cmd_check_config)

    p = add("enroll", "Enrol a member's card: present it on the reader or type its number.",
            c.cmd_enroll)
    # the member's fields come from the member schema (accessd.schema)
    add_options(p, MEMBERS, ("name", "plan"), required=("name", "plan"), types={"name": _name})
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--card", metavar="NUMBER", type=_card,
                     help="card UID in hex (e.g. 0A1B2C3D4E, 04:A2:2B:1C); kept only as a "
                          "keyed hash")
    src.add_argument("--present", action="store_true",
                     help="take the next card presented on the door reader (the daemon must "
                          "be running); that presentation opens nothing")
    src.add_argument("--no-card", action="store_true",
                     help="create the member without a card (add one later with --member)")
    p.add_argument("--reader", help="with --present: the reader to listen on (default: any)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="with --present: seconds to wait for the card (default 30)")
    add_options(p, MEMBERS, ("valid_from", "valid_until"),
                types={"valid_from": _date, "valid_until": _date})
    p.add_argument("--force", action="store_true",
                   help="accept an --until that is already past (the card opens nothing)")
    p.add_argument("--member", metavar="MEMBER", help="add the card to this existing member, "
                   "by id or name (name, plan and dates are updated too)")
    p.add_argument("--operator", default=_operator(),
                   help="who does this (journalled; default $SUDO_USER, else $USER)")
    p.add_argument("--json", action="store_true", help="print the member as JSON")
    p.add_argument("--door", metavar="ID",
                   help="a Pi with several [[doors]]: the door whose journal records the "
                        "enrolment (default: the first door) and whose readers --present "
                        "listens on (default: every reader)")

    p = add("revoke", "Revoke a member (all cards) or one card, for good.", c.cmd_revoke)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("member", nargs="?", help="member id or name")
    target.add_argument("--card", metavar="NUMBER", type=_card,
                        help="revoke the card with this UID")
    target.add_argument("--credential", metavar="HASH",
                        help="revoke the card with this short hash (from 'show')")
    p.add_argument("--operator", default=_operator(),
                   help="who does this (journalled; default $SUDO_USER, else $USER)")
    _door_option(p, "the door whose journal records the change")

    for name, verb in (("suspend", "Suspend a member: cards refused until 'resume'."),
                       ("resume", "Resume a suspended member.")):
        p = add(name, verb, c.cmd_suspend if name == "suspend" else c.cmd_resume)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("member", nargs="?", help="member id or name")
        target.add_argument("--card", metavar="NUMBER", type=_card,
                            help="the member holding this card")
        p.add_argument("--operator", default=_operator(),
                       help="who does this (journalled; default $SUDO_USER, else $USER)")
        _door_option(p, "the door whose journal records the change")

    p = add("list", "List members.", c.cmd_list)
    p.add_argument("--plan", choices=["subscriber", "occasional"], help="only this plan")
    p.add_argument("--status", choices=["active", "suspended", "revoked"],
                   help="only this status")
    p.add_argument("--search", metavar="TEXT", help="name or id contains TEXT")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")

    p = add("show", "Show one member and their cards.", c.cmd_show)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("member", nargs="?", help="member id or name")
    who.add_argument("--card", metavar="NUMBER", type=_card,
                     help="the member holding this card")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("log", "Show the journal: entries, denials, door events.", c.cmd_log)
    p.add_argument("--member", help="member id or name (a unique start of it is enough)")
    p.add_argument("--door", help="only this door (default: every door of this Pi)")
    p.add_argument("--result", choices=["granted", "denied"], help="only this result")
    p.add_argument("--type", help="event type, '*' as wildcard (e.g. 'door.*', 'access.denied')")
    p.add_argument("--since", type=_when, metavar="WHEN",
                   help="from then on: today, yesterday, a weekday (monday), a date "
                        "(2026-11-02), a date and time (2026-11-02 08:00), or an age "
                        "(30m, 24h, 7d, 2w); site time")
    p.add_argument("--until", type=_when, metavar="WHEN",
                   help="before then (same forms; a day means its midnight)")
    p.add_argument("--limit", type=positive_int, default=50, help="at most N entries (default 50)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line, the event schema of docs/journal.md")

    p = add("why", "Explain the last decision for a card or member, in one sentence.",
            c.cmd_why)
    p.add_argument("who", nargs="?", metavar="CARD|NAME",
                   help="a card number, a member's name or id (default: the last decision at "
                        "this door)")
    p.add_argument("--json", action="store_true",
                   help="print the decision and the sentence as JSON")

    p = add("open", "Release the door now (manual release, journalled with your name).",
            c.cmd_open)
    p.add_argument("--operator", required=True, type=_name,
                   help="your name, recorded in the journal")
    p.add_argument("--seconds", type=float,
                   help="release time, 3 s to one hour (default: [lock] release_s)")
    _door_option(p, "the door to release")

    p = add("door-mode", "Hold the door open or locked until further notice, or give it back "
            "to its unlock schedule (journalled).", c.cmd_door_mode)
    p.add_argument("mode", choices=["open", "locked", "auto"],
                   help="open: held released; locked: kept locked, the schedule suspended; "
                        "auto: the unlock schedule (if any) decides again")
    p.add_argument("--operator", required=True, help="your name, recorded in the journal")
    _door_option(p, "the door")

    p = add("status", "Show readers, lock, door, clock trust, journal depth, rule version.",
            c.cmd_status)
    p.add_argument("--json", action="store_true", help="print JSON")
    _door_option(p, "the door to show first (every door is listed under doors)")

    p = add("doctor", "Check the door's health, each problem with its fix; exit status 1 when "
            "something needs action.", c.cmd_doctor)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")

    p = add("door-key", "Print this door's public signing key, for the office to register "
            "(made on first use).", c.cmd_door_key)
    p.add_argument("--new", action="store_true",
                   help="make a new key (a key roll); it is used from the next start")
    p.add_argument("--door", metavar="ID", help="only this door's key (default: every door "
                                                "of this Pi, one line each)")

    from accessd.cli import card as card_cli

    card_cli.register(sub)
    try:
        from accessd.central import cli as central_cli
    except ImportError:
        central_cli = None  # type: ignore[assignment]
    if central_cli is not None and hasattr(central_cli, "register"):
        central_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error is one line on stderr, never a traceback."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or EXIT_OK)
    except UsageError as exc:
        return error(exc, EXIT_USAGE)
    except AccessdError as exc:
        return error(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except (OSError, ValueError, LookupError, sqlite3.Error) as exc:  # the system said no
        return error(exc)
    except Exception as exc:  # a bug: one line here, the traceback only when asked for
        if os.environ.get("ACCESSD_DEBUG"):
            raise
        return error(f"unexpected {type(exc).__name__}: {exc} (a bug in accessd; "
                     "ACCESSD_DEBUG=1 shows where)")


def error(what: object, status: int = EXIT_ERROR) -> int:
    """Print `accessd: error: …` on one line (newlines in a message become spaces)."""
    print(f"accessd: error: {' '.join(str(what).split())}", file=sys.stderr)
    return status


def print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
