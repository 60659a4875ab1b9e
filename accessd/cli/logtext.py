"""A journal entry as one line a host reads (`accessd log`): site time with its zone, the event
type (what `--type` filters on) and what happened in words. `--json` keeps the wire form."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from accessd.cli.timeparse import local_time
from accessd.events import Event, JournalEntry
from accessd.words import SHORT_REASONS, alarm_words


def _who(ev: Event) -> str:
    if ev.member_name:
        return ev.member_name
    if ev.member_id:
        return ev.member_id
    return f"card {ev.credential}" if ev.credential else "someone"


def _reason(ev: Event) -> str:
    return SHORT_REASONS.get(ev.reason or "", (ev.reason or "").replace("_", " "))


def _seconds(ev: Event) -> str:
    s = ev.detail.get("seconds")
    return f" for {s:g} s" if isinstance(s, int | float) else ""


def _access(ev: Event) -> str:
    at = f" at {ev.reader}" if ev.reader else ""
    if ev.result == "granted":
        verb = "let out" if ev.reason == "exit" else "let in"
        return f"{_who(ev)} {verb}{at} ({_reason(ev)})"
    return f"{_who(ev)} refused{at}: {_reason(ev)}"


def _release(ev: Event) -> str:
    by = ev.detail.get("operator") or "?"
    typed = ev.detail.get("operator_typed")
    said = f" (name given: {typed})" if typed and typed != by else ""
    how = "remotely " if ev.type == "lock.remote_release" else ""
    return f"door released{_seconds(ev)} {how}by {by}{said}"


def _host_change(ev: Event) -> str:
    by = ev.detail.get("operator")
    tail = f" by {by}" if by else ""
    if ev.type == "member.enrolled":
        card = f" with card {ev.credential}" if ev.credential else " (no card)"
        return f"{_who(ev)} enrolled, {ev.plan}{card}{tail}"
    if ev.type == "credential.revoked":
        return f"card {ev.credential} of {_who(ev)} revoked{tail}"
    what = (ev.reason or "updated").replace("_requested", " (asked of the office)")
    return f"{_who(ev)}: {what}{tail}"


def _door(ev: Event) -> str:
    open_for = ev.detail.get("open_for")
    for_ = f" after {open_for:.0f} s" if isinstance(open_for, int | float) else ""
    if ev.type == "door.opened":
        return f"door opened ({ev.detail.get('by', 'authorised')})"
    if ev.type == "door.closed":
        cleared = ev.detail.get("cleared") or []
        ends = (f"; alarm off: {', '.join(alarm_words(a) for a in cleared)}"
                if cleared else "")
        return f"door closed{for_}{ends}"
    return f"alarm: {alarm_words(str(ev.type))}{for_}"


def _alarm(ev: Event) -> str:
    kind = str(ev.type).removeprefix("alarm.")
    if kind == "reader_lockout":
        return f"alarm: {alarm_words('reader_lockout:' + (ev.reader or '?'))}"
    error = ev.detail.get("error")
    return f"alarm: {alarm_words(kind)}" + (f" ({ev.reason})" if ev.reason else "") + \
        (f": {error}" if error else "")


SUMMARIES: dict[str, Callable[[Event], str]] = {
    "access.granted": _access,
    "access.denied": _access,
    "exit.request": lambda ev: "exit button pressed: door released",
    "lock.manual_release": _release,
    "lock.remote_release": _release,
    "member.enrolled": _host_change,
    "member.updated": _host_change,
    "credential.revoked": _host_change,
    "reader.online": lambda ev: f"reader {ev.reader} online",
    "reader.offline": lambda ev: (f"reader {ev.reader} offline: "
                                  f"{ev.detail.get('detail', '')}".rstrip(": ")),
    "rules.applied": lambda ev: f"rules version {ev.detail.get('version', '?')} applied",
    "rules.rejected": lambda ev: f"rules refused: {ev.reason}",
    "command.rejected": lambda ev: f"a command from the office refused: {ev.reason}",
    "daemon.started": lambda ev: f"accessd {ev.detail.get('version', '')} started".replace(
        "  ", " "),
    "daemon.stopped": lambda ev: "accessd stopped (door locked)",
    "journal.purged": lambda ev: (f"{ev.detail.get('deleted', '?')} entries older than "
                                  f"{ev.detail.get('retention_days', '?')} days deleted"),
}


def summary(ev: Event) -> str:
    """What happened, in words."""
    kind = str(ev.type)
    if kind in SUMMARIES:
        return SUMMARIES[kind](ev)
    if kind.startswith("door."):
        return _door(ev)
    if kind.startswith("alarm."):
        return _alarm(ev)
    return " ".join(x for x in (kind, ev.reason or "") if x)


def entry_line(e: JournalEntry, tz: tzinfo) -> str:
    ev = e.event
    mark = "  [clock untrusted]" if not ev.clock_trusted else ""
    return f"{e.seq:>6}  {local_time(ev.ts, tz)}  {ev.type!s:<20} {summary(ev)}{mark}"

