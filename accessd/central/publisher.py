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
from accessd.protocol.codec import encode
from accessd.protocol.rules import CREDENTIAL_FIELDS, MEMBER_FIELDS, make_delta, make_snapshot
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
    info = store.site(site) or {}
    schedule = info.get("schedule")
    check_calendar({"schedule": schedule, "members": members})  # a typo is never signed
    version = store.latest_version(site) + 1
    snapshot = make_snapshot(key, site=site, version=version, members=members,
                             credentials=creds, schedule=schedule, stored_seq=stored,
                             pending=pending)
    issued = snapshot["payload"]["issued_at"]
    previous_text = store.latest_snapshot(site)
    delta_doc, changes = None, len(members) + len(creds)
    if previous_text is not None:
        prev = json.loads(previous_text)["payload"]
        pm = {m["id"]: _norm(m, MEMBER_FIELDS) for m in prev["members"]}
        pc = {c["hash"]: _norm(c, CREDENTIAL_FIELDS) for c in prev["credentials"]}
        cur_m = {m["id"]: _norm(m, MEMBER_FIELDS) for m in snapshot["payload"]["members"]}
        cur_c = {c["hash"]: _norm(c, CREDENTIAL_FIELDS)
                 for c in snapshot["payload"]["credentials"]}
        up_m = [m for i, m in cur_m.items() if pm.get(i) != m]
        up_c = [c for h, c in cur_c.items() if pc.get(h) != c]
        gone_m = sorted(set(pm) - set(cur_m))
        gone_c = sorted(set(pc) - set(cur_c))
        changes = len(up_m) + len(up_c) + len(gone_m) + len(gone_c)
        if delta:
            new_schedule = schedule if schedule != prev.get("schedule") else None
            delta_doc = make_delta(key, site=site, version=version,
                                   base_version=prev["version"], members=up_m,
                                   credentials=up_c, removed_members=gone_m,
                                   removed_credentials=gone_c, schedule=new_schedule,
                                   stored_seq=stored, issued_at=_parse(issued),
                                   pending=pending)
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
