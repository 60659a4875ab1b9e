"""`accessd why [CARD|NAME]`: the last decision for a card or a member, in one sentence.

"Louis Martin was refused at 18:02 CET because occasional members enter 09:00–18:00 Monday
to Friday". It reads the journal (what the door decided and why) and the rule cache (the
member's dates and state now, the opening hours the door applies), nothing else: it works
whether or not the daemon runs.
"""

from __future__ import annotations

from typing import Any

from accessd.admin import Site, find_member
from accessd.cli.timeparse import when_words
from accessd.credentials import short
from accessd.errors import AmbiguousMember, CardNumberError, MemberNotFound
from accessd.events import JournalEntry
from accessd.readers.uid import normalise_uid
from accessd.schedule import Schedule
from accessd.store.journal import LogFilter
from accessd.store.rules import Member
from accessd.words import Because, reason_words

ACCESS = "access.*"


def door_schedule(site: Site) -> Schedule:
    """The opening hours the door applies: the office's published ones if usable, else the
    configuration's (as the daemon decides)."""
    from accessd.daemon.service import config_schedule

    try:
        published = site.rules.schedule()
    except (ValueError, TypeError):
        published = None
    return published or config_schedule(site.config)


def _find(site: Site, text: str | None) -> tuple[JournalEntry | None, Member | None, str]:
    """The latest access decision for what was named, the member if known, and how to name
    the subject when there is no decision."""
    journal = site.journal
    if text is None or not text.strip():
        found = journal.query(LogFilter(type=ACCESS, limit=1))
        return (found[0] if found else None), None, "this door"
    try:
        member = find_member(site.rules, text)
    except AmbiguousMember:
        raise
    except MemberNotFound as not_a_member:
        try:
            uid = normalise_uid(text)
        except CardNumberError:
            # someone the rules no longer hold: the journal still has their name
            found = journal.query(LogFilter(member=text.strip(), type=ACCESS, limit=1))
            if not found:
                raise not_a_member from None
            return found[0], None, text.strip()
        full = site.hasher(uid)
        found = journal.query(LogFilter(credential=short(full), type=ACCESS, limit=1))
        holder = site.rules.find_by_credential(full)
        return (found[0] if found else None), holder, f"this card ({short(full)})"
    found = journal.query(LogFilter(member_id=member.id, type=ACCESS, limit=1))
    return (found[0] if found else None), member, f"{member.name} ({member.id})"


def explain(site: Site, text: str | None) -> dict[str, Any]:
    """{"sentence": …, "event": the decision in its wire form or None, "member_id": …}."""
    entry, member, subject = _find(site, text)
    tz = site.config.site.tz
    if entry is None:
        sentence = f"{subject[0].upper()}{subject[1:]} has no decision in the journal"
        if member is not None and not member.credentials:
            sentence += (f"; {member.name} has no card yet (accessd enroll --member "
                         f"{member.id} --card NUMBER)")
        elif member is not None:
            sentence += (f" (kept {site.config.storage.retention_days} days): no card of "
                         f"{member.name} was presented at this door; {member.name} is "
                         f"{member.status}")
        return {"sentence": sentence, "event": None,
                "member_id": member.id if member else None}
    ev = entry.event
    if member is None and ev.member_id:
        try:
            member = site.rules.member(ev.member_id)
        except MemberNotFound:
            member = None
    if ev.member_name:
        who = subject_of = ev.member_name
    else:
        subject_of = subject if subject.startswith("this card") else \
            f"card {ev.credential}" if ev.credential else "someone"
        who = subject_of[0].upper() + subject_of[1:]
    schedule = door_schedule(site)
    because = Because(
        who=subject_of, schedule=schedule, day=ev.ts.astimezone(tz).date(),
        valid_from=member.valid_from if member else None,
        valid_until=member.valid_until if member else None,
        status_now=str(member.status) if member else None)
    verb = ("let out" if ev.reason == "exit" else "let in") if ev.result == "granted" \
        else "refused"
    where = f" at reader {ev.reader}" if len(site.config.readers) > 1 and ev.reader else ""
    sentence = (f"{who} was {verb}{where} {when_words(ev.ts, tz)} "
                f"because {reason_words(ev.reason or '', because)}")
    if not ev.clock_trusted and ev.reason != "clock_untrusted":
        sentence += " (the door's clock was not synchronised then)"
    return {"sentence": sentence, "event": entry.to_dict(),
            "member_id": ev.member_id or (member.id if member else None)}
