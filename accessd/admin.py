"""What the host does to the rule cache, each change journalled so the central office learns it.

The CLI is a thin layer over this: each function changes the rule cache in one transaction and
then journals the change (`member.enrolled`, `member.updated`, `credential.revoked`) with the
member's record and the credential's keyed hash, never the card number. The running daemon
reads the rule cache afresh on each tap, so a change takes effect at the next card.

The journalled change is, for the office, a proposal: it reaches other doors only once the
office accepts it (docs/central.md). A change that is already so writes nothing and journals
nothing; a resume of a member the office sent is journalled as a request and changes nothing
here (`StatusChange.change` says which).
"""

from __future__ import annotations

import os
import pwd
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from accessd.config import Config
from accessd.credentials import (
    CredentialHasher,
    check_secrets,
    load_or_create_site_secret,
    short,
)
from accessd.decision import Plan, Status
from accessd.errors import AccessdError, AmbiguousMember, MemberNotFound
from accessd.events import Event, EventType
from accessd.rights import Change
from accessd.store.journal import Journal
from accessd.store.rules import Member, RuleCache


@dataclass(frozen=True)
class StatusChange:
    """What a suspend, resume or revoke did: `change` is changed, unchanged or proposed."""

    member: Member
    change: Change
    message: str


@dataclass
class Site:
    """The stores and key of one door, opened for an administrative command."""

    config: Config
    rules: RuleCache
    journal: Journal
    hasher: CredentialHasher

    @classmethod
    def open(cls, config: Config, door: str | None = None) -> Site:
        """The rule cache (the Pi's doors share it) and the journal of `door` (default the
        first door), where the host's changes are journalled for the office."""
        _refuse_root_on_service_files(config.storage.dir)
        check_secrets(config)  # a loose secret: one line naming the file, the key, the path
        spec = config.door_spec(door)
        key = load_or_create_site_secret(config.site.secret_file)
        return cls(config, RuleCache(config.storage.rules_db),
                   Journal(spec.journal_file, config.site.id, spec.id),
                   CredentialHasher(key))

    def close(self) -> None:
        self.rules.close()
        self.journal.close()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_root_on_service_files(storage: Path) -> None:
    """Root writing the service's databases would leave files the daemon cannot write."""
    if os.geteuid() != 0 or not storage.exists():
        return
    owner = storage.stat().st_uid
    if owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise AccessdError(f"{storage} belongs to {name}: run this as that user "
                           f"(sudo -u {name} accessd …, or the installed /usr/local/bin/accessd)")


def folded(text: str) -> str:
    """A name as compared: case, accents and spacing do not count ("Zoé  B" = "zoe b")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


SHOWN_MATCHES = 8


def find_member(rules: RuleCache, text: str) -> Member:
    """The member a host means: an id, or a name (case- and accent-insensitive).

    Tried in order, the first step that finds anyone decides: the id; the whole name; one
    word of the name ("Martin"); the start of the name or of one of its words ("lou"), or of
    the id. One match is the member; several raise AmbiguousMember listing them with their
    ids (the host then types the id); none raises MemberNotFound.
    """
    wanted = folded(text)
    if not wanted:
        raise MemberNotFound("name a member: an id or a name")
    try:
        return rules.member(text.strip())
    except MemberNotFound:
        pass
    # every member: SQLite's LIKE folds neither accents nor non-ASCII case
    people = [(m, folded(m.name)) for m in rules.members()]
    steps = (
        lambda m, name: name == wanted,
        lambda m, name: wanted in name.split(),
        lambda m, name: name.startswith(wanted)
        or any(w.startswith(wanted) for w in name.split())
        or (len(wanted) >= 4 and m.id.casefold().startswith(wanted)),
    )
    for matches in steps:
        found = list({m.id: m for m, name in people if matches(m, name)}.values())
        if len(found) == 1:
            return rules.member(found[0].id)
        if found:
            listed = ", ".join(f"{m.name} ({m.id}, {m.status})"
                               for m in found[:SHOWN_MATCHES])
            more = (f" and {len(found) - SHOWN_MATCHES} more ('accessd list --search')"
                    if len(found) > SHOWN_MATCHES else "")
            raise AmbiguousMember(f"{text.strip()!r} matches {len(found)} members: {listed}"
                                  f"{more}; give the id", [(m.id, m.name) for m in found])
    raise MemberNotFound(f"no member {text.strip()!r} (no id or name matches; 'accessd list' "
                         "shows them)")


def member_by_card(site: Site, uid: str) -> Member:
    """The member holding the card `uid` (a normalised card number)."""
    member = site.rules.find_by_credential(site.hasher(uid))
    if member is None:
        raise MemberNotFound("this card is not enrolled")
    return member


def _member_detail(member: Member) -> dict[str, Any]:
    d = member.to_dict()
    d.pop("credentials")
    return d


def enroll(site: Site, *, name: str, plan: Plan, uid: str | None = None,
           credential_hash: str | None = None, technology: str | None = None,
           valid_from: date | None = None, valid_until: date | None = None,
           member_id: str | None = None, operator: str = "host") -> Member:
    """Enrol a new member, or a new card for an existing member (`member_id`)."""
    if uid is not None:
        credential_hash = site.hasher(uid)
    member = site.rules.enroll(name=name, plan=plan, credential_hash=credential_hash,
                               valid_from=valid_from, valid_until=valid_until,
                               member_id=member_id, technology=technology)
    site.journal.append(Event(
        type=EventType.MEMBER_ENROLLED, member_id=member.id, member_name=member.name,
        plan=str(member.plan), credential=short(credential_hash) if credential_hash else None,
        detail={"member": _member_detail(member), "credential_hash": credential_hash,
                "technology": technology, "operator": operator}))
    return member


def set_status(site: Site, member_id: str, status: Status,
               operator: str = "host") -> StatusChange:
    """Suspend, resume or revoke a member (RevokedError out of `revoked`)."""
    member, verdict = site.rules.set_member_status(member_id, status)
    if verdict.change is Change.UNCHANGED:
        return StatusChange(member, verdict.change,
                            f"{member.name} ({member.id}) is already {member.status}")
    proposed = verdict.change is Change.PROPOSED
    row = _member_detail(member)
    row["status"] = str(status)  # what the host asks for, when only the office may grant it
    site.journal.append(Event(
        type=EventType.MEMBER_UPDATED, member_id=member.id, member_name=member.name,
        plan=str(member.plan), reason=f"{status}_requested" if proposed else str(status),
        detail={"member": row, "operator": operator}))
    return StatusChange(member, verdict.change, verdict.why)


def revoke_card(site: Site, *, uid: str | None = None, credential: str | None = None,
                operator: str = "host") -> StatusChange:
    """Revoke one card, named by its number or by the short hash `list`/`show` print."""
    prefix = site.hasher(uid) if uid is not None else (credential or "")
    member, verdict, full = site.rules.revoke_credential(prefix)
    if verdict.change is Change.UNCHANGED:
        return StatusChange(member, verdict.change, f"card {short(full)}: {verdict.why}")
    site.journal.append(Event(
        type=EventType.CREDENTIAL_REVOKED, member_id=member.id, member_name=member.name,
        plan=str(member.plan), credential=short(full), reason="revoked",
        detail={"credential_hash": full, "operator": operator}))
    return StatusChange(member, verdict.change, f"card {short(full)} revoked")
