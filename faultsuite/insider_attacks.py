"""The attacks of the `insider` scenario over the broker, one function each (faultsuite/insider.py
runs them; faultsuite/insider_local.py has those on the door's own machine).

Each takes the rig, draws its parameters from the rig's random generator, mounts the attack
with the tools the attacker has (a broker login and what it can publish, a door's SD card, the
central login, the office's key), proves that it ran (the broker's answer to each publish, the
refusals the doors or the office counted) and checks what the attack must not achieve. The
invariants run after each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faultsuite.daemon import PYTHON, until
from faultsuite.insider_oracle import REVOKED
from faultsuite.insider_site import (
    DOORS,
    NOT_AUTHORIZED,
    PREFIX,
    PUBLISHED,
    RULES_MAX_BYTES,
    SITE,
    Client,
    now,
    run,
)

if TYPE_CHECKING:
    from faultsuite.insider import Insider

Attack = Callable[["Insider"], None]
ATTACKS: dict[str, Attack] = {}  # this module's, then faultsuite.insider_local's


def attack(fn: Attack) -> Attack:
    ATTACKS[fn.__name__] = fn
    return fn


def topic(door: str, leaf: str) -> str:
    return f"{PREFIX}/{SITE}/{door}/{leaf}"


RULES = f"{PREFIX}/{SITE}/rules"


def other(door: str) -> str:
    return DOORS[1 - DOORS.index(door)]


def event(rig: Insider, door: str, seq: int, type_: str, *, site_door: str | None = None,
          member: dict[str, Any] | None = None, uid: str | None = None,
          **fields: Any) -> dict[str, Any]:
    """The payload of an event as a door publishes it (schemas/event.json), before signing:
    what someone holding the door's login (or its SD card) can make."""
    from accessd.events import Event, JournalEntry, event_type, format_ts, utcnow
    from accessd.uplink.outbox import event_message

    detail: dict[str, Any] = {"operator": "mallory"}
    if member is not None:
        detail["member"] = {"valid_from": None, "valid_until": None, "origin": "site",
                            "updated_at": format_ts(utcnow()), **member}
        fields.setdefault("member_id", member["id"])
    if uid is not None:
        detail["credential_hash"] = rig.h(uid)
    entry = JournalEntry(seq, uuid.uuid4().hex, SITE, site_door or door,
                         Event(event_type(type_), detail=detail, **fields))
    return event_message(entry, rig.journal_id(door))


def encode(doc: Any) -> bytes:
    from accessd.protocol.codec import encode as enc

    return enc(doc)


def signed(key: Any, payloads: list[dict[str, Any]], form: str) -> list[bytes]:
    """Events signed with `key` as a door sends them: version 2 (one event a message,
    signed over its canonical JSON) or version 3 (lines of one text signed as carried), one
    event a message or all of them in one."""
    from accessd.protocol.delivery import encode_event, encode_events

    if form == "v2":
        return [encode_event(key, p) for p in payloads]
    if form == "v3":
        return [encode_events(key, [p]) for p in payloads]
    return [encode_events(key, payloads)]


def unsigned_v3(payload: dict[str, Any], key_id: str | None = None) -> bytes:
    """A version 3 message with no signature (or, with `key_id`, a made-up one)."""
    from accessd.protocol.signing import canonical

    doc: dict[str, Any] = {"v": 3, "events": canonical(payload).decode()}
    if key_id is not None:
        doc.update(sig="A" * 86 + "==", key_id=key_id)
    return encode(doc)


FORMS = ("v2", "v3", "v3 batch")


def journalled(rig: Insider, door: str, after: int, etype: str,
               timeout: float = 20) -> dict[str, Any] | None:
    """The first event of this type the door journals after `after` (waiting for it)."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = rig.doors[door].events(after, (etype,))
        return bool(found)

    until(seen, timeout)
    return found[0] if found else None


def some(rig: Insider, items: list[Any], least: int, *, everything: bool = True) -> list[Any]:
    """A random selection in a random order: all of them in quick mode (`everything`: CI
    sees every case each run), at least `least` in long mode (many trials cover them all)."""
    if everything and not rig.ctx.long:
        return rig.rng.sample(items, len(items))
    most = len(items) if rig.ctx.long else least
    return rig.rng.sample(items, rig.rng.randint(least, max(least, most)))


def publish_all(rig: Insider, client: Client, messages: list[tuple[str, bytes]],
                expect: tuple[int, ...] = PUBLISHED, what: str = "") -> None:
    for t, payload in messages:
        code = client.publish(t, payload)
        rig.need(code in expect, f"{what or t}: the broker answered {code}, expected {expect}")
        rig.figures["publishes_by_attackers"] += 1


def host_change_rows(rig: Insider) -> dict[str, dict[str, Any]]:
    """The four host changes a stolen door login once got granted at every door (issue 8)."""
    return {
        "new_member": {"id": rig.name("m-evil"), "name": "Mallory", "plan": "subscriber",
                       "status": "active"},
        "unsuspend": {"id": "sam", "name": "Sam", "plan": "subscriber", "status": "active"},
        "extra_card": {"id": "ana", "name": "Ana", "plan": "subscriber", "status": "active"},
        "raise_plan": {"id": "oli", "name": "Oli", "plan": "subscriber", "status": "active",
                       "valid_until": "2099-12-31"},
        "unrevoke": {"id": "rex", "name": "Rex", "plan": "subscriber", "status": "active"},
    }


def check_nothing_granted(rig: Insider, evil: str, extra: str) -> None:
    """After the office's next routine publish, at both doors: none of it took."""
    rig.publish("the office's routine publish after the attack")
    for d in DOORS:
        rig.tap(d, evil, "unknown_credential")
        rig.tap(d, rig.sam, "member_suspended")
        rig.tap(d, extra, "unknown_credential")
        rig.tap(d, rig.oli, "outside_opening_hours")
        rig.tap(d, rig.rex, "member_revoked")


# -- a stolen door login: the door's broker password, not its key ---------------------------
@attack
def login_forged_events(rig: Insider) -> None:
    """Forged events on the door's own topic with its next numbers: unsigned, signed by the
    thief's own key, claiming the door's key id, with a large floor, not even JSON. All are
    refused with an alarm naming the door; the door's own event with that number is stored."""
    from accessd.protocol.signing import DoorKey

    door = rig.rng.choice(DOORS)
    rig.quiet(door)
    last = rig.doors[door].last_seq()
    mine = DoorKey.generate()
    variants: dict[str, tuple[str, Callable[[], bytes]]] = {
        "unsigned": ("event_unsigned", lambda: encode(event(
            rig, door, last + 1, "access.granted", member_id="mallory", result="granted",
            reason="subscriber"))),
        "own_key": ("event_unknown_key", lambda: encode(mine.sign(event(
            rig, door, last + 1, "access.granted", member_id="mallory", result="granted",
            reason="subscriber")))),
        "claims_the_door_key": ("event_bad_signature", lambda: encode({
            **mine.sign(event(rig, door, last + 1, "member.enrolled",
                              member={"id": "m-x", "name": "X", "plan": "subscriber",
                                      "status": "active"}, uid=rig.uid("forged card"))),
            "key_id": rig.door_key_ids[door]})),
        "floor_own_key": ("event_unknown_key", lambda: encode(mine.sign({**event(
            rig, door, last + 500, "access.denied", result="denied",
            reason="unknown_credential"), "floor": last + 500}))),
        "floor_unsigned": ("event_unsigned", lambda: encode({**event(
            rig, door, last + 1, "access.denied", result="denied",
            reason="unknown_credential"), "floor": last + 900})),
        "other_door_unsigned": ("event_unsigned", lambda: encode(event(
            rig, door, last + 1, "access.granted", site_door=other(door), result="granted",
            reason="subscriber"))),
        "not_json": ("event_invalid", lambda: b'{"payload": {"seq": ' + str(last + 1).encode()),
        "unsigned_v3": ("event_unsigned", lambda: unsigned_v3(event(
            rig, door, last + 1, "access.granted", member_id="mallory", result="granted",
            reason="subscriber"))),
        "own_key_v3": ("event_unknown_key", lambda: signed(mine, [event(
            rig, door, last + 1, "access.granted", member_id="mallory", result="granted",
            reason="subscriber"), event(rig, door, last + 2, "access.granted",
                                        member_id="mallory", result="granted",
                                        reason="subscriber")], "v3 batch")[0]),
        "claims_the_door_key_v3": ("event_bad_signature", lambda: unsigned_v3(event(
            rig, door, last + 1, "access.granted", member_id="mallory", result="granted",
            reason="subscriber"), rig.door_key_ids[door])),
    }
    chosen = some(rig, sorted(variants), 2)
    thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
    try:
        for name in chosen:
            kind, make = variants[name]
            publish_all(rig, thief, [(topic(door, "event"), make())], what=name)
            rig.expect_refused(door, kind)
    finally:
        thief.close()
    rig.wait_refusals()
    mark = rig.store.stored_seq(SITE).get(door, 0)
    rig.check(mark <= last, f"the office's mark moved to {mark} past the door's {last}")
    rig.tap(door, rig.probe, "subscriber")  # the door's own event with that number
    rig.quiet(door)
    stored = {e["seq"]: e["id"] for e in rig.store.events(SITE, door=door)}
    real = {e["seq"]: e["id"] for e in rig.doors[door].events(last)}
    rig.check(last + 1 in real and stored.get(last + 1) == real[last + 1],
              f"#{last + 1}: the office holds {stored.get(last + 1)}, the door "
              f"{real.get(last + 1)}")


@attack
def login_acl(rig: Insider) -> None:
    """What the generated ACL refuses a door login and Home Assistant's login: every topic
    that is not theirs (the broker answers "not authorized"); what it lets through is the
    door's own event, status and rule request, which prove nothing without the door's key.
    Also: the thief connects with the door's own client id, which the broker lets it take
    over for a moment (a denial of service): the door goes on deciding and reconnects."""
    door = rig.rng.choice(DOORS)
    o = other(door)
    forbidden = [topic(o, "event"), topic(door, "ack"), topic(o, "ack"), topic(door, "command"),
                 topic(o, "status"), topic(door, "ha/release"), f"{RULES}/snapshot",
                 f"{RULES}/delta", f"homeassistant/lock/accessd_{SITE}_{o}/lock/config"]
    rig.rng.shuffle(forbidden)
    thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
    ha = Client(rig.broker, "homeassistant", rig.name("ha"))
    try:
        for t in forbidden:
            retain = rig.rng.random() < 0.5
            code = thief.publish(t, b'{"v": 1, "forged": true}', retain=retain)
            rig.check(code == NOT_AUTHORIZED, f"door login published on {t}: broker said {code}")
        for t in (topic(door, "ha/release"), topic(o, "ha/release"), topic(door, "event"),
                  f"{RULES}/snapshot", topic(door, "command")):
            code = ha.publish(t, b"UNLOCK")
            rig.check(code == NOT_AUTHORIZED, f"Home Assistant published on {t}: "
                                              f"broker said {code}")
        code = thief.publish(f"{RULES}/request", encode({"v": 1, "site": SITE, "door": door,
                                                          "have_version": 0,
                                                          "reason": "thief"}))
        rig.check(code in PUBLISHED, f"the door login's own rule request: broker said {code}")
        rig.figures["acl_refusals"] += len(forbidden) + 5
    finally:
        thief.close()
        ha.close()
    # the door's own client id: the broker hands the session to the thief
    client_id = f"accessd-{SITE}-{door}"
    before = rig.broker.connections(client_id)
    taker = Client(rig.broker, f"door-{SITE}-{door}", client_id)
    try:
        rig.tap(door, rig.probe, "subscriber")  # the door decides, online or not
    finally:
        taker.close()
    rig.need(until(lambda: rig.doors[door].status()["uplink"].get("connected") is True, 20),
             "the door did not reconnect after its client id was taken")
    rig.check(rig.broker.connections(client_id) >= before + 1,
              "the thief's connection with the door's client id is not in the broker's log")


@attack
def login_fake_acks(rig: Insider) -> None:
    """While the office is away, fake acknowledgements claim the door's waiting events are
    stored: the door login may not publish them (ACL); the central login (no office key) may,
    unsigned, signed by another key, or replaying genuine ones (another door's, an old one
    of this door). The door ignores each, counted; nothing it holds is dropped."""
    from accessd.protocol.signing import OfficeKey

    door = rig.rng.choice(DOORS)
    d = rig.doors[door]
    rig.quiet(door)
    genuine_other = [p for t, p in rig.witness.received if t == topic(other(door), "ack")]
    genuine_mine = [p for t, p in rig.witness.received if t == topic(door, "ack")]
    rig.need(bool(genuine_other and genuine_mine), "no genuine acknowledgement captured yet")
    rig.collector.stop()
    try:
        for _ in range(rig.rng.randint(1, 3)):
            rig.tap(door, rig.probe, "subscriber")
        last = d.status()["journal"]["last_seq"]
        acked = d.status()["journal"]["acked_seq"]
        rig.need(acked < last, "events acknowledged with the office away")
        jid = rig.journal_id(door)
        thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
        central = Client(rig.broker, "central", rig.name("central"))
        intruder = OfficeKey.generate()
        fakes = [encode({"v": 1, "acked": last}),
                 encode({"v": 2, "site": SITE, "door": door, "journal": jid, "acked": last}),
                 encode(intruder.sign({"v": 2, "site": SITE, "door": door, "journal": jid,
                                       "acked": last})),
                 encode(intruder.sign({"v": 2, "site": SITE, "door": door, "journal": jid,
                                       "acked": float(last)})),
                 rig.rng.choice(genuine_other)]
        rig.rng.shuffle(fakes)
        refused = d.status()["uplink"]["acks_refused"]
        try:
            for fake in fakes[:2]:
                code = thief.publish(topic(door, "ack"), fake)
                rig.check(code == NOT_AUTHORIZED, f"the door login acknowledged: broker {code}")
            publish_all(rig, central, [(topic(door, "ack"), f) for f in fakes],
                        what="a fake acknowledgement")
            publish_all(rig, central, [(topic(door, "ack"), genuine_mine[0])],
                        what="an old genuine acknowledgement")
        finally:
            thief.close()
            central.close()
        counted = until(lambda: d.status()["uplink"]["acks_refused"] == refused + len(fakes),
                        10)
        rig.check(counted, f"the door counted {d.status()['uplink']['acks_refused'] - refused}"
                           f" refused acknowledgements of {len(fakes)}")
        j = d.status()["journal"]
        rig.check(j["acked_seq"] == acked and j["depth"] == last - acked,
                  f"a fake acknowledgement moved the door's mark: {j}, was {acked}")
        rig.figures["fake_acks"] += len(fakes)
    finally:
        rig.start_collector()


@attack
def login_enrolments(rig: Insider) -> None:
    """The four host changes a door login once got granted at every door (a new member, a
    suspended one made active, an extra card, an occasional member raised), and a revoked
    member made active, forged on the door's topic (unsigned or signed by the thief's key)
    and on the other door's (the ACL refuses). None is stored; after the office's routine
    publish, none is granted anywhere."""
    from accessd.protocol.signing import DoorKey

    door = rig.rng.choice(DOORS)
    rig.quiet(door)
    last = rig.doors[door].last_seq()
    mine = DoorKey.generate()
    evil, extra = rig.uid("evil card"), rig.uid("extra card for ana")
    rows = host_change_rows(rig)
    cards = {"new_member": evil, "extra_card": extra}
    thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
    try:
        for i, (what, row) in enumerate(rows.items(), 1):
            etype = "member.enrolled" if what in cards else "member.updated"
            payload = event(rig, door, last + i, etype, member=row, uid=cards.get(what))
            form = rig.rng.choice(("unsigned v2", "unsigned v3", *FORMS[:2]))
            raw = (encode(payload) if form == "unsigned v2" else unsigned_v3(payload)
                   if form == "unsigned v3" else signed(mine, [payload], form)[0])
            publish_all(rig, thief, [(topic(door, "event"), raw)], what=what)
            rig.expect_refused(door, "event_unsigned" if "unsigned" in form
                               else "event_unknown_key")
            code = thief.publish(topic(other(door), "event"), raw)
            rig.check(code == NOT_AUTHORIZED, f"{what} on the other door's topic: {code}")
    finally:
        thief.close()
    rig.wait_refusals()
    check_nothing_granted(rig, evil, extra)
    rig.check(rig.store.proposals(SITE) == [], "a forged event became a proposal")


# -- a stolen door: its login and its key (the SD card) --------------------------------------
@attack
def stolen_door_proposals(rig: Insider) -> None:
    """With the door's own key, the same changes (and a revoked member made active, an entry
    in the log, an event for the other door) are stored as the door's: they wait in
    `central pending` (the un-revocation is rejected at once) and grant nothing at either
    door after the routine publish; the operator rejects them. The event for the other door
    is refused (`event_wrong_door`)."""
    from accessd.protocol.signing import DoorKey

    door = rig.rng.choice(DOORS)
    key = DoorKey.load(rig.doors[door].key_path)  # read from the stolen SD card
    rig.quiet(door)
    last = rig.doors[door].last_seq()
    evil, extra = rig.uid("evil card"), rig.uid("extra card for ana")
    rows = host_change_rows(rig)
    cards = {"new_member": evil, "extra_card": extra}
    order = list(rows)
    rig.rng.shuffle(order)
    payloads, seq = [], last
    for what in order:
        seq += 1
        etype = "member.enrolled" if what in cards else "member.updated"
        payloads.append(event(rig, door, seq, etype, member=rows[what], uid=cards.get(what)))
    if rig.rng.random() < 0.7:  # an entry for the log: stored as genuine (by design)
        seq += 1
        payloads.append(event(rig, door, seq, "access.granted", member_id="ana",
                              result="granted", reason="subscriber"))
    for p in payloads:
        rig.forged[door][p["seq"]] = p["id"]
    messages = signed(key, payloads, rig.rng.choice(FORMS))
    wrong = event(rig, door, seq + 1, "access.granted", site_door=other(door),
                  result="granted", reason="subscriber")  # alone: it would sink a batch
    messages.insert(rig.rng.randrange(len(messages) + 1),
                    signed(key, [wrong], rig.rng.choice(FORMS[:2]))[0])
    rig.expect_refused(door, "event_wrong_door")
    thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
    try:
        publish_all(rig, thief, [(topic(door, "event"), m) for m in messages])
    finally:
        thief.close()
    forged_seqs = set(range(last + 1, seq + 1))

    def proposals() -> list[dict[str, Any]]:
        r = rig.office.central("pending", "--site", SITE, "--state", "all", "--json",
                               store=True)
        return [p for p in map(json.loads, r.stdout.splitlines())
                if p["door"] == door and p["seq"] in forged_seqs]

    rig.need(until(lambda: len(proposals()) >= 6, 15),
             f"the stolen door's changes did not reach the office: {proposals()}")
    found = proposals()
    by_member = {(p["kind"], p["member_id"]): p["state"] for p in found}
    rig.check(by_member.get(("member", "rex")) == "rejected",
              f"the revoked member's un-revocation was not rejected: {by_member}")
    for k in (("member", rows["new_member"]["id"]), ("card", rows["new_member"]["id"]),
              ("member", "sam"), ("card", "ana"), ("member", "oli")):
        rig.check(by_member.get(k) == "pending", f"{k}: {by_member.get(k)}, expected pending")
    check_nothing_granted(rig, evil, extra)
    ids = [str(p["id"]) for p in found if p["state"] == "pending"]
    rig.office.central("reject", *ids, "--site", SITE, "--note", "a stolen door", store=True)
    rig.check(rig.store.proposals(SITE) == [], "pending proposals left after the rejection")
    rig.figures["stolen_key_events"] += len(payloads) + 1


@attack
def stolen_door_restricts(rig: Insider) -> None:
    """With the door's key: suspend a member, revoke a card, revoke a member. The office
    applies each as a suspension at once (a restriction is safe), the revocations wait for an
    operator: a stolen door cannot revoke anyone for good. The operator rejects them and the
    office's members file makes the three active again at both doors."""
    from accessd.protocol.signing import DoorKey

    door = rig.rng.choice(DOORS)
    (v1, c1), (v2, c2), (v3, c3) = rig.victims(3)
    key = DoorKey.load(rig.doors[door].key_path)
    changes = [("credential.revoked", None, c2),
               ("member.updated", {"id": v3, "name": v3, "plan": "subscriber",
                                   "status": "revoked"}, None)]
    if rig.rng.random() < 0.5:  # with the door's own CLI, as root on the stolen Pi
        r = rig.doors[door].accessd("suspend", v1)
        rig.need(r.returncode == 0, f"accessd suspend on the stolen door: {r.stderr}")
        rig.tap(door, c1, "member_suspended")  # at once, there
    else:
        changes.append(("member.updated", {"id": v1, "name": v1, "plan": "subscriber",
                                           "status": "suspended"}, None))
    rig.quiet(door)
    last = rig.doors[door].last_seq()
    rig.rng.shuffle(changes)
    payloads = []
    for i, (etype, row, uid) in enumerate(changes, 1):
        fields = {"member_id": v2} if uid else {}
        payloads.append(event(rig, door, last + i, etype, member=row, uid=uid, **fields))
        rig.forged[door][last + i] = payloads[-1]["id"]
    messages = signed(key, payloads, rig.rng.choice(FORMS))
    thief = Client(rig.broker, f"door-{SITE}-{door}", rig.name("thief"))
    try:
        publish_all(rig, thief, [(topic(door, "event"), m) for m in messages])
    finally:
        thief.close()
    rig.figures["stolen_key_events"] += len(payloads)
    rig.need(until(lambda: len(rig.store.proposals(SITE)) == 2, 15),
             f"the revocations are not pending: {rig.store.proposals(SITE)}")
    rig.publish("the office's rows as they are", members=False)
    for d in DOORS:
        for uid in (c1, c2, c3):
            rig.tap(d, uid, "member_suspended")
    rig.publish("the routine members file: it lifts a suspension, not a pending revocation")
    for d in DOORS:
        rig.tap(d, c1, "subscriber")
        rig.tap(d, c2, "member_suspended")
        rig.tap(d, c3, "member_suspended")
    ids = [str(p["id"]) for p in rig.store.proposals(SITE)]
    rig.office.central("reject", *ids, "--site", SITE, "--note", "a stolen door", store=True)
    rig.publish("the members file again: the restrictions were only suspensions")
    for d in DOORS:
        for uid in (c1, c2, c3):
            rig.tap(d, uid, "subscriber")


# -- the central login without the office's key ----------------------------------------------
@attack
def central_login(rig: Insider) -> None:
    """The central login may publish anywhere under the prefix, but without the office's
    key: unsigned and foreign-signed rule documents, an old genuine one replayed, unsigned
    and foreign-signed commands, a genuine command replayed, forged events on both doors'
    topics, UNLOCK on a door's Home Assistant topic. Each is refused (the doors journal why,
    the office alarms the events); nothing is granted or released."""
    from accessd.protocol.commands import make_command
    from accessd.protocol.signing import OfficeKey

    intruder = OfficeKey.generate()
    if rig.store.latest_version(SITE) < 2:  # the first snapshot is to be an old one
        rig.publish("a second version")
    latest = json.loads(rig.store.latest_snapshot(SITE) or "{}")["payload"]
    doc = {**latest, "version": latest["version"] + 10,
           "members": [{**m, "status": "active"} for m in latest["members"]]}
    door = rig.rng.choice(DOORS)
    marks = {d: rig.doors[d].last_seq() for d in DOORS}
    genuine = rig.office.central("command", "release", "--site", SITE, "--door", door,
                                 "--key", rig.office.key_path, "--operator", "olivia",
                                 "--seconds", "3", *rig.office.broker_args())
    rig.need(until(lambda: bool(rig.doors[door].events(marks[door],
                                                        ("lock.remote_release",))), 10),
             f"the office's genuine release was not carried out: {genuine.stdout}")
    rig.need(until(lambda: any(t == topic(door, "command") for t, _ in rig.witness.received),
                   5), "the genuine command was not captured")
    command = [p for t, p in rig.witness.received if t == topic(door, "command")][-1]
    steps: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "unsigned_rules": (f"{RULES}/snapshot", encode(doc), {"rules.rejected": "unsigned"}),
        "foreign_rules": (f"{RULES}/snapshot", encode(intruder.sign(doc)),
                          {"rules.rejected": "unknown_key"}),
        "old_rules": (f"{RULES}/snapshot", (rig.first_snapshot or "").encode(),
                      {"rules.rejected": "stale_version"}),
        "unsigned_command": (topic(door, "command"), encode(make_command(
            intruder, type="release", site=SITE, door=door, operator="mallory",
            seconds=5)["payload"]), {"command.rejected": "unsigned"}),
        "foreign_command": (topic(door, "command"), encode(make_command(
            intruder, type="release", site=SITE, door=door, operator="mallory", seconds=5)),
            {"command.rejected": "unknown_key"}),
        "replayed_command": (topic(door, "command"), command,
                             {"command.rejected": "replayed"}),
        "ha_unlock": (topic(door, "ha/release"), b"UNLOCK", {}),
    }
    chosen = some(rig, sorted(steps), 3)
    central = Client(rig.broker, "central", rig.name("central"))
    marks = {d: rig.doors[d].last_seq() for d in DOORS}
    try:
        for name in chosen:
            t, payload, _ = steps[name]
            publish_all(rig, central, [(t, payload)], what=name)
        for d in DOORS:  # forged events: the central login has no door key either
            payload = event(rig, d, rig.doors[d].last_seq() + 1, "access.granted",
                            member_id="mallory", result="granted", reason="subscriber")
            publish_all(rig, central, [(topic(d, "event"), encode(intruder.sign(payload)))])
            rig.expect_refused(d, "event_unknown_key")
    finally:
        central.close()
    for name in chosen:
        for etype, reason in steps[name][2].items():
            at = DOORS if etype == "rules.rejected" else (door,)
            for d in at:
                seen = until(lambda d=d, etype=etype, reason=reason: any(
                    e["reason"] == reason for e in rig.doors[d].events(marks[d], (etype,))),
                    10)
                rig.check(seen, f"{name}: door {d} journalled no {etype} {reason}")
    rig.wait_refusals()
    released = rig.doors[door].events(marks[door], ("lock.remote_release",
                                                    "lock.manual_release"))
    rig.check(not released, f"released by the central login: {released}")
    rig.publish("the genuine snapshot retained again")


# -- documents signed with the office's real key ---------------------------------------------
@attack
def office_key_documents(rig: Insider) -> None:
    """An office typo or a compromised publisher, signed with the office's real key: an
    unknown time zone, an impossible closure or validity date, a version written 6.0 or
    true, a mark written 3.0, an orphan credential (snapshot or delta), a revoked member made
    active (small, or in a document large enough for the isolated child), a document over the
    doors' size limit. Refused whole (the office's own CLI refuses the typos first), or
    applied with the revoked member kept revoked; every door keeps deciding."""
    from accessd.protocol.signing import OfficeKey

    key = OfficeKey.load(rig.office.key_path)
    for args in (["--timezone", "Europe/Pariss"], ["--closures", "2026-02-30"]):
        r = rig.office.central("site", "--site", SITE, *args, ok=False, store=True)
        rig.check(r.returncode == 1 and r.stderr.count("\n") == 1,
                  f"central site {' '.join(args)}: exit {r.returncode} {r.stderr!r}")
    latest = json.loads(rig.store.latest_snapshot(SITE) or "{}")["payload"]
    base = {k: v for k, v in latest.items() if k not in ("version", "issued_at")}
    rex_card = rig.h(rig.rex)

    def snapshot(**changes: Any) -> dict[str, Any]:
        from accessd.events import format_ts, utcnow

        return {**base, "version": rig.store.latest_version(SITE) + 1,
                "issued_at": format_ts(utcnow()), **changes}

    def unrevoked() -> dict[str, Any]:
        return {"members": [{**m, "status": "active"} if m["id"] == "rex" else m
                            for m in base["members"]],
                "credentials": [{**c, "status": "active"} if c["hash"] == rex_card else c
                                for c in base["credentials"]]}

    def filler(n: int) -> list[dict[str, Any]]:
        return [{"id": f"filler-{i:06d}", "name": f"Filler {i}", "plan": "occasional",
                 "status": "active", "valid_from": None, "valid_until": None}
                for i in range(n)]

    sched = base["schedule"]
    cases: dict[str, tuple[Callable[[], dict[str, Any]], str, str]] = {
        "time zone typo": (lambda: snapshot(schedule={**sched, "timezone": "Europe/Pariss"}),
                           "snapshot", "bad_calendar"),
        "closure 2026-02-30": (lambda: snapshot(schedule={**sched,
                                                          "closures": ["2026-02-30"]}),
                               "snapshot", "bad_calendar"),
        "validity 2026-02-30": (lambda: snapshot(members=[
            {**m, "valid_until": "2026-02-30"} if m["id"] == "ana" else m
            for m in base["members"]]), "snapshot", "bad_calendar"),
        "version 6.0": (lambda: snapshot(version=float(rig.store.latest_version(SITE) + 1)),
                        "snapshot", "invalid"),
        "version true": (lambda: snapshot(version=True), "snapshot", "invalid"),
        "mark 3.0": (lambda: snapshot(stored_seq={d: 3.0 for d in DOORS}), "snapshot",
                     "invalid"),
        "orphan card": (lambda: snapshot(credentials=[*base["credentials"], {
            "hash": rig.h(rig.uid("orphan card")), "member_id": "nobody-here",
            "status": "active"}]), "snapshot", "invalid"),
        "orphan card in a delta": (lambda: {
            **{k: v for k, v in snapshot().items() if k not in ("members", "credentials",
                                                                 "schedule")},
            "kind": "delta", "base_version": rig.store.latest_version(SITE),
            "members": [], "removed_members": [], "removed_credentials": [],
            "credentials": [{"hash": rig.h(rig.uid("orphan card")),
                             "member_id": "nobody-here", "status": "active"}]},
            "delta", "inconsistent"),
        "over the size limit": (lambda: snapshot(members=base["members"] + filler(
            RULES_MAX_BYTES // 100)), "snapshot", "too_large"),
        "un-revocation": (lambda: snapshot(**unrevoked()), "snapshot", "applied"),
        "un-revocation, large": (lambda: snapshot(**{**unrevoked(), "members": unrevoked()[
            "members"] + filler(rig.rng.randint(2500, 6000))}), "snapshot", "applied"),
    }
    central = Client(rig.broker, "central", rig.name("publisher"))
    try:
        for name in some(rig, sorted(cases), 4):
            make, kind, outcome = cases[name]
            payload = make()
            raw = encode(key.sign(payload))
            marks = {d: rig.doors[d].last_seq() for d in DOORS}
            planted = plant_modules(rig) if name == "un-revocation, large" else None
            began = now()
            publish_all(rig, central, [(f"{RULES}/{kind}", raw)], what=name)
            if outcome == "applied":  # the office's next version follows the doors'
                rig.store.record_version(SITE, payload["version"], payload["issued_at"],
                                         raw.decode(), None)
            for d in DOORS:
                etype = "rules.applied" if outcome == "applied" else "rules.rejected"
                row = journalled(rig, d, marks[d], etype)
                if not rig.check(row is not None, f"{name}: door {d} journalled no {etype}"):
                    continue
                assert row is not None
                detail = json.loads(row["detail"])
                if outcome == "applied":  # what this door knows revoked, said active
                    gone = rig.rights.office_revoked | rig.rights.revoked_at.get(d, set())
                    wanted = sorted(m["id"] for m in payload["members"]
                                    if m["status"] != REVOKED and m["id"] in gone)
                    got = detail.get("refused_unrevoke", {}).get("members")
                    rig.check("rex" in wanted and got == wanted,
                              f"{name}: door {d} kept {got} revoked, expected {wanted}")
                else:
                    rig.check(row["reason"] == outcome,
                              f"{name}: door {d} refused it as {row['reason']}, "
                              f"expected {outcome}")
            if planted is not None and planted.exists():  # the isolated child applied it
                rig.check(False, f"code planted in the storage folder ran in the child: "
                                 f"{planted.read_text()[:200]!r}")
            if outcome == "applied":
                rig.timeline.commit(DOORS, began, now())  # the model says rex stays revoked
            for d in DOORS:
                rig.tap(d, rig.rex, "member_revoked")
            rig.figures["crafted_documents"] += 1
    finally:
        central.close()
    rig.publish("the office's own rules again")


def plant_modules(rig: Insider) -> Any:
    """Modules planted in each door's storage folder, where the child that applies large
    documents runs (as someone able to write there would): each records that it ran."""
    marker = rig.work / rig.name("planted-code-ran")
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for d in rig.doors.values():
        for name in ("accessd/__init__.py", "accessd/uplink/__init__.py", "json.py",
                     "argparse.py", "sitecustomize.py", "usercustomize.py"):
            path = d.site.storage / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(code)
    # the control: a child started there *without* -I runs the planted package
    run([PYTHON, "-m", "accessd.uplink.apply", "--help"], cwd=d.site.storage)
    rig.need(marker.exists(), "the planted modules would not run even without isolation")
    marker.unlink()
    return marker


@attack
def office_revocation(rig: Insider) -> None:
    """`accessd central revoke` is for good: the members file naming the member (or card)
    active again changes nothing (the CLI says it kept it revoked)."""
    [(mid, uid)] = rig.victims(1)
    card = rig.rng.random() < 0.4
    if card:
        rig.office.central("revoke", "--site", SITE, "--credential", rig.h(uid), store=True)
        rig.rights.office_revoke(rig.h(uid))
        reason = "credential_revoked"
    else:
        rig.office.central("revoke", "--site", SITE, "--member", mid, store=True)
        rig.rights.office_revoke(mid)
        reason = "member_revoked"
    rig.publish("the revocation")
    for d in DOORS:
        rig.tap(d, uid, reason)
    _, said = rig.publish("the members file naming it active")
    rig.check("revoked for good, kept revoked" in said, f"publish said: {said.strip()}")
    for d in DOORS:
        rig.tap(d, uid, reason)
