"""Publishing a site's rules: build from the store, sign, record, then send.

Every version is recorded with its full signed snapshot before it is sent, so the retained
snapshot on the broker is always the latest version (a delta is also sent, for speed), a door
that missed a delta can always be answered by the collector, and a delta is computed against
exactly what the previous version contained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from accessd.central.store import CentralStore
from accessd.errors import ScheduleError
from accessd.protocol.codec import encode
from accessd.protocol.rules import KEYS, ROW_FIELDS, make_delta, make_snapshot
from accessd.protocol.signing import OfficeKey
from accessd.protocol.topics import Topics
from accessd.protocol.transport import BrokerSettings, connected_client
from accessd.schedule import check_calendar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Documents:
    site: str
    version: int
    snapshot: dict[str, Any]
    delta: dict[str, Any] | None
    changes: int  # rows changed since the previous version


def _norm(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: row.get(k) for k in fields}


def build(store: CentralStore, key: OfficeKey, site: str, *, delta: bool = False,
          ) -> Documents:
    """The next version's snapshot (and delta from the previous one if asked), recorded.

    Read in this order, so that a door never drops a change the office accepted or has
    not decided: the stored marks, then the pending proposals, then the rows. A proposal
    stored after the marks are read is above them; one decided after the pending list is
    read is still listed (kept a version longer); one approved before it is in the rows.
    """
    stored = store.stored_seq(site)
    pending = store.pending_seqs(site)
    members, creds = store.rules(site)
    rights = store.rooms.rights(site)
    bookings = store.rooms.published_bookings(site)
    access = store.rooms.access_document(site)
    info = store.site(site) or {}
    schedule = info.get("schedule")
    version = store.latest_version(site) + 1
    snapshot = make_snapshot(key, site=site, version=version, members=members,
                             credentials=creds, schedule=schedule, stored_seq=stored,
                             pending=pending, rights=rights, bookings=bookings, access=access)
    try:  # what a door would refuse whole is never signed and recorded
        check_calendar(snapshot["payload"])
    except ScheduleError as exc:
        raise ValueError(f"site {site}: the rules mean nothing somewhere: {exc}") from None
    issued = snapshot["payload"]["issued_at"]
    previous_text = store.latest_snapshot(site)
    delta_doc = None
    changes = len(members) + len(creds) + len(rights) + len(bookings)
    if previous_text is not None:
        prev = json.loads(previous_text)["payload"]
        up: dict[str, list[dict[str, Any]]] = {}
        gone: dict[str, list[str]] = {}
        for table, fields in ROW_FIELDS.items():
            key_of = KEYS[table]
            before = {r[key_of]: _norm(r, fields) for r in prev.get(table, ())}
            now = {r[key_of]: _norm(r, fields) for r in snapshot["payload"].get(table, ())}
            up[table] = [r for k, r in now.items() if before.get(k) != r]
            gone[table] = sorted(set(before) - set(now))
        changes = sum(map(len, up.values())) + sum(map(len, gone.values()))
        new_access = access if access != prev.get("access") else None
        changes += new_access is not None
        if delta:
            new_schedule = schedule if schedule != prev.get("schedule") else None
            delta_doc = make_delta(key, site=site, version=version,
                                   base_version=prev["version"], members=up["members"],
                                   credentials=up["credentials"],
                                   removed_members=gone["members"],
                                   removed_credentials=gone["credentials"],
                                   schedule=new_schedule,
                                   stored_seq=stored, issued_at=_parse(issued),
                                   pending=pending, rights=up["rights"],
                                   bookings=up["bookings"], removed_rights=gone["rights"],
                                   removed_bookings=gone["bookings"],
                                   access=new_access)
    elif delta:
        log.info("site %s: no previous version, publishing a full snapshot only", site)
    store.record_version(site, version, issued, encode(snapshot).decode("utf-8"),
                         encode(delta_doc).decode("utf-8") if delta_doc else None)
    return Documents(site, version, snapshot, delta_doc, changes)


def _parse(ts: str) -> Any:
    from accessd.events import parse_ts

    return parse_ts(ts)


def send(docs: Documents, settings: BrokerSettings, *, prefix: str,
         client_id: str = "accessd-publisher", timeout_s: float = 30.0) -> None:
    """Publish the delta (QoS 1) then the retained snapshot, and wait for the broker."""
    topics = Topics(prefix, docs.site)
    client = connected_client(settings, client_id)
    try:
        infos = []
        if docs.delta is not None:
            infos.append(client.publish(topics.rules_delta, encode(docs.delta), qos=1))
        infos.append(client.publish(topics.rules_snapshot, encode(docs.snapshot), qos=1,
                                    retain=True))
        for info in infos:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise TimeoutError(f"the broker {settings} did not take the rules within "
                                   f"{timeout_s:g} s (version {docs.version} is recorded; "
                                   "run publish again or let doors ask for it)")
    finally:
        client.disconnect()
        client.loop_stop()


def send_command(envelope: dict[str, Any], settings: BrokerSettings, *, prefix: str,
                 client_id: str = "accessd-publisher", timeout_s: float = 15.0) -> None:
    p = envelope["payload"]
    client = connected_client(settings, client_id)
    try:
        info = client.publish(Topics(prefix, p["site"], p["door"]).command, encode(envelope),
                              qos=1)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"the broker {settings} did not take the command")
    finally:
        client.disconnect()
        client.loop_stop()
