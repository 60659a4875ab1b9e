"""Events signed by their door, acknowledgements signed by the office: the wire checks."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from accessd.errors import ProtocolError
from accessd.events import Event, EventType, JournalEntry
from accessd.protocol.codec import encode
from accessd.protocol.delivery import DoorKeys, make_ack, read_ack, read_event
from accessd.protocol.signing import (
    DoorKey,
    OfficeKey,
    PublicKeys,
    parse_public_line,
    public_line,
    reason_of,
)
from accessd.uplink.outbox import event_message

J = "ab" * 16
OFFICE, D1, D2 = OfficeKey.generate(), DoorKey.generate(), DoorKey.generate()
KEYS = DoorKeys([("s1", "d1", D1.public), ("s1", "d2", D2.public)])


def wire(key: DoorKey | None = D1, door: str = "d1", seq: int = 5, **extra) -> bytes:
    entry = JournalEntry(seq, f"id-{seq}", "s1", door, Event(EventType.ACCESS_GRANTED))
    payload = {**event_message(entry, J), **extra}
    return encode(key.sign(payload) if key else payload)


def reason(raw: bytes, door: str = "d1") -> str:
    with pytest.raises(ProtocolError) as exc:
        read_event(raw, KEYS, site="s1", door=door)
    return reason_of(exc.value)


def test_an_event_signed_by_its_door_is_read_whole():
    payload = read_event(wire(), KEYS, site="s1", door="d1")
    assert (payload["seq"], payload["journal"], payload["v"]) == (5, J, 2)


def test_events_not_signed_by_a_key_of_their_door_are_refused_with_a_reason():
    assert reason(wire(None)) == "unsigned"
    assert reason(wire(DoorKey.generate())) == "unknown_key"
    assert reason(wire(D2)) == "wrong_door"  # door 2's key, on door 1's topic
    assert reason(wire(D2, door="d2")) == "wrong_door"  # a whole d2 event on d1's topic
    assert reason(wire(D1, door="d2"), door="d2") == "wrong_door"
    forged = json.loads(wire())
    forged["payload"]["member_id"] = "mallory"
    assert reason(encode(forged)) == "bad_signature"
    assert reason(wire(seq=3, floor=4)) == "invalid"  # a floor above its own number
    assert reason(wire(seq=3.0)) == "invalid"
    assert reason(b"x" * 70_000) == "too_large"
    assert reason(b"{") == "malformed"
    v1 = json.loads(wire())
    v1["payload"] = {k: v for k, v in v1["payload"].items() if k != "journal"} | {"v": 1}
    assert reason(encode(D1.sign(v1["payload"]))) == "invalid"  # version 1 is gone


def test_an_acknowledgement_is_used_only_if_the_office_signed_it_for_this_door():
    keys = PublicKeys([OFFICE.public])
    good = encode(make_ack(OFFICE, site="s1", door="d1", journal=J, acked=29,
                           resend=(30, 40)))
    assert read_ack(good, keys, site="s1", door="d1")["acked"] == 29

    def refused(raw: bytes) -> str:
        with pytest.raises(ProtocolError) as exc:
            read_ack(raw, keys, site="s1", door="d1")
        return reason_of(exc.value)

    tampered = json.loads(good)
    tampered["payload"]["acked"] = 99  # only the payload: the key id and signature stay
    assert refused(encode(tampered)) == "bad_signature"
    assert refused(encode({"v": 2, "site": "s1", "door": "d1", "journal": J,
                           "acked": 99})) == "unsigned"
    assert refused(encode(make_ack(OfficeKey.generate(), site="s1", door="d1", journal=J,
                                   acked=1))) == "unknown_key"
    assert refused(encode(make_ack(OFFICE, site="s1", door="d2", journal=J,
                                   acked=1))) == "wrong_door"
    for odd in (29.0, True, -1):
        payload = {"v": 2, "site": "s1", "door": "d1", "journal": J, "acked": odd}
        assert refused(encode(OFFICE.sign(payload))) == "invalid"
    empty = {"v": 2, "site": "s1", "door": "d1", "journal": J, "resend": [9, 3]}
    assert refused(encode(OFFICE.sign(empty))) == "invalid"
    assert refused(b"{" * 3000) == "too_large"


def test_a_public_line_carries_its_key_id_and_a_label():
    line = public_line(D1.public, "s1/d1")
    public, label = parse_public_line(line + "  # from the door")
    assert (public_line(public), label) == (public_line(D1.public), "s1/d1")
    fields = line.split()
    assert parse_public_line(f"{fields[0]} {fields[1]}")[1] == ""
    with pytest.raises(ValueError, match="key id on the line"):
        parse_public_line(f"{fields[0]} {fields[1]} {'f' * 16}")
    with pytest.raises(ValueError, match="not an Ed25519"):
        parse_public_line("ed25519 AAAA")


def _make(path: str, out: multiprocessing.Queue) -> None:
    out.put(DoorKey.load_or_create(Path(path)).key_id)


def test_the_door_key_is_made_once_private_and_the_same_for_racing_processes(tmp_path):
    path = tmp_path / "state" / "door.key"
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(str(path), out)) for _ in range(3)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(30)
    assert len(ids) == 1 and DoorKey.load_or_create(path).key_id in ids
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["door.key"]  # no temporary left
    new = DoorKey.create(path, replace=True)
    assert DoorKey.load(path).key_id == new.key_id not in ids


def test_a_batch_of_signatures_is_checked_the_same_in_workers_as_in_the_thread():
    from accessd.central.verify import SPREAD_FROM, SignatureChecker
    from accessd.protocol.delivery import signed_bytes
    from accessd.protocol.signing import raw_public_bytes

    raw = raw_public_bytes(D1.public)
    envelopes = [json.loads(wire(seq=s)) for s in range(1, 2 * SPREAD_FROM + 1)]
    for n in (5, 77, 120):  # a few forged among them, in every share
        envelopes[n]["payload"]["member_id"] = "mallory"
    checks = [(raw, *signed_bytes(e)) for e in envelopes]
    expected = [n not in (5, 77, 120) for n in range(len(checks))]
    pooled = SignatureChecker(workers=2)
    try:
        assert pooled.check(checks) == expected
        assert pooled.check(checks[:3]) == expected[:3]  # a small batch: in the thread
    finally:
        pooled.close()
    assert SignatureChecker(workers=0).check(checks) == expected


LOAD_KEY = """
import sys
from pathlib import Path
from accessd.protocol.signing import DoorKey
key = DoorKey.load(Path(sys.argv[1]))
print(key.key_id, "cryptography.hazmat.primitives.serialization" in sys.modules)
"""


def test_a_door_loads_its_key_without_the_serialization_module(tmp_path):
    """The PKCS#8 PEM the door writes is read by hand (RFC 8410's fixed prefix): the same
    key, and ~0.8 MiB of the door's memory not spent on cryptography's loaders."""
    import subprocess
    import sys

    path = tmp_path / "door.key"
    key = DoorKey.create(path)
    out = subprocess.run([sys.executable, "-c", LOAD_KEY, str(path)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == [key.key_id, "False"]
    signed = DoorKey.load(path).sign({"a": 1})
    key.public.verify(__import__("base64").b64decode(signed["sig"]), b'{"a":1}')


def test_a_private_key_in_another_form_goes_to_cryptography_and_is_refused_if_not_ed25519(
        tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from accessd.errors import ConfigError

    path = tmp_path / "other.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        DoorKey.load(path)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        DoorKey.load(path)


# -- version 3: entries signed at once, as the text is carried ----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from accessd.central.verify import check_all  # noqa: E402
from accessd.protocol.delivery import (  # noqa: E402
    BATCH_MAX_EVENTS,
    LINE_MAX_BYTES,
    encode_event,
    encode_events,
    event_messages,
    events_in,
    open_message,
    read_events,
)
from accessd.protocol.signing import canonical  # noqa: E402


def payload(seq: int, door: str = "d1", **extra) -> dict:
    entry = JournalEntry(seq, f"id-{seq}", "s1", door, Event(EventType.ACCESS_GRANTED))
    return {**event_message(entry, J), **extra}


def signed_text(key: DoorKey | None, text: str, **extra) -> bytes:
    env = {"v": 3, "events": text, **extra}
    if key is not None:
        env |= {"sig": key.sign_bytes(text.encode()), "key_id": key.key_id}
    return encode(env)


def collector_path(raw: bytes, door: str = "d1") -> tuple[list[dict], list[str]]:
    """What the collector does with one message: open it, check its signature (as the
    batch's checker does), read its events."""
    opened = open_message(raw, KEYS, site="s1", door=door)
    if not check_all([(opened.public, opened.sig, opened.signed)])[0]:
        raise ProtocolError("bad_signature: the signature does not match")
    good, bad = events_in(opened, site="s1", door=door)
    return good, [reason_of(e) for e in bad]


def outcome(read, raw: bytes) -> tuple[str, object]:
    try:
        good, bad = read(raw)
    except ProtocolError as exc:
        return "refused", reason_of(exc)
    return "read", (good, [b if isinstance(b, str) else reason_of(b) for b in bad])


def test_a_batch_signed_by_its_door_is_read_line_by_line_as_the_same_events_alone():
    events = [payload(s) for s in (5, 6, 7)]
    raw = encode_events(D1, events)
    assert collector_path(raw) == (events, [])
    assert read_events(raw, KEYS, site="s1", door="d1") == (events, [])
    alone = [read_event(encode_event(D1, e), KEYS, site="s1", door="d1") for e in events]
    assert alone == events
    # a live tap: one event, alone in a version 3 message, or in version 2
    assert collector_path(encode_events(D1, events[:1])) == (events[:1], [])
    assert collector_path(encode_event(D1, events[0])) == (events[:1], [])


def test_batches_not_signed_by_a_key_of_their_door_are_refused_whole_with_a_reason():
    text = "\n".join(canonical(payload(s)).decode() for s in (1, 2))

    def refused(raw: bytes, door: str = "d1") -> str:
        with pytest.raises(ProtocolError) as exc:
            collector_path(raw, door)
        return reason_of(exc.value)

    assert refused(signed_text(None, text)) == "unsigned"
    assert refused(signed_text(DoorKey.generate(), text)) == "unknown_key"
    assert refused(signed_text(D2, text)) == "wrong_door"
    forged = json.loads(signed_text(D1, text))
    forged["events"] = forged["events"].replace('"member_id":null', '"member_id":"mallory"')
    assert refused(encode(forged)) == "bad_signature"
    assert refused(signed_text(D1, text, v=4)) == "invalid"
    assert refused(signed_text(D1, "\n".join([text] * (BATCH_MAX_EVENTS // 2 + 1)))) == \
        "invalid"  # 1,002 lines
    assert refused(b" " * (1024 * 1024 + 1)) == "too_large"
    big = encode_event(D1, payload(1, note="x" * 70_000))
    assert refused(big) == "too_large"  # version 2: 64 KiB as before


def test_each_line_of_a_signed_batch_gets_the_checks_of_an_event_alone():
    lines = [canonical(payload(1)).decode(),
             canonical(payload(2, door="d2")).decode(),  # another door's event
             canonical(payload(3.0)).decode(),  # a float number
             canonical(payload(4, floor=5)).decode(),  # a floor above its number
             "{not json",
             canonical(payload(6, note="x" * LINE_MAX_BYTES)).decode(),  # too large alone
             canonical(payload(7, deep=json.loads("[" * 15 + "]" * 15))).decode(),
             canonical(payload(8)).decode()]
    good, bad = collector_path(signed_text(D1, "\n".join(lines)))
    assert [e["seq"] for e in good] == [1, 8]
    assert bad == ["wrong_door", "invalid", "invalid", "malformed", "too_large", "too_deep"]
    # the same limits as version 2: what one refuses alone, the other refuses in a batch
    for line in lines[1:-1]:
        alone = encode(D1.sign(json.loads(line))) if line.startswith("{\"") else None
        if alone is not None and len(alone) <= 64 * 1024:
            with pytest.raises(ProtocolError):
                read_event(alone, KEYS, site="s1", door="d1")


def test_a_door_splits_its_backlog_by_count_and_by_size():
    events = [payload(s) for s in range(1, 251)]
    counts = [n for n, _ in event_messages(D1, events, max_events=100)]
    assert counts == [100, 100, 50]
    big = [payload(s, note="y" * 60_000) for s in range(1, 11)]
    sizes = [(n, len(raw)) for n, raw in event_messages(D1, big)]
    assert sum(n for n, _ in sizes) == 10 and all(n <= 4 for n, _ in sizes)
    assert all(size <= 1024 * 1024 for _, size in sizes)
    assert [n for n, _ in event_messages(D1, events[:3], version=2)] == [1, 1, 1]
    out = [e for _, raw in event_messages(D1, events, max_events=100)
           for e in collector_path(raw)[0]]
    assert out == events


# what a door, a broken door or a thief may put on d1's event topic
_LINE_CHANGES = st.sampled_from([
    {}, {"seq": 3.0}, {"seq": True}, {"seq": 0}, {"floor": 9}, {"floor": 1}, {"door": "d2"},
    {"v": 1}, {"journal": "x"}, {"detail": []}, {"extra": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]},
    {"extra": [[[[[[[[[[[[[1]]]]]]]]]]]]]}, {"detail": {"a": [[[[[[[[[[[[[1]]]]]]]]]]]]]}},
    {"plan": "vip"}, {"ts": "yesterday"}, {"member_name": 5}, {"note": "é" * 30},
])
_LINE_FORMS = st.sampled_from(["canonical", "spaced", "bom", "crlf", "not_json", "list",
                               "huge"])


def _line(seq: int, change: dict, form: str) -> str:
    p = {**payload(seq), **change}
    if form == "spaced":
        return json.dumps(p, indent=None, separators=(", ", ": "))
    if form == "bom":
        return "\ufeff" + canonical(p).decode()
    if form == "crlf":
        return canonical(p).decode() + "\r"
    if form == "not_json":
        return canonical(p).decode()[:-1]
    if form == "list":
        return json.dumps([p])
    if form == "huge":
        return canonical({**p, "pad": "z" * (LINE_MAX_BYTES - 300)}).decode()
    return canonical(p).decode()


@st.composite
def messages(draw) -> bytes:
    lines = [_line(seq, draw(_LINE_CHANGES), draw(_LINE_FORMS))
             for seq in range(1, draw(st.integers(1, 4)) + 1)]
    signer = draw(st.sampled_from(["d1", "d1", "d1", "d2", "stranger", "none"]))
    key = {"d1": D1, "d2": D2, "stranger": STRANGER, "none": None}[signer]
    if draw(st.booleans()):  # version 2: the first line alone, if it is an object
        try:
            body = json.loads(lines[0])
        except ValueError:
            body = lines[0]
        raw = encode(key.sign(body) if key and isinstance(body, dict) else {"payload": body})
    else:
        raw = signed_text(key, "\n".join(lines))
    mutation = draw(st.sampled_from(["none", "none", "flip", "cut", "resign_text", "v"]))
    if mutation == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
    elif mutation == "cut":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif mutation == "resign_text" and key is not None:  # sign bytes that are not the text
        env = json.loads(raw)
        if "events" in env:
            env["sig"] = key.sign_bytes(env["events"].encode() + b" ")
            raw = encode(env)
    elif mutation == "v":
        raw = raw.replace(b'"v":3', b'"v":3.0', 1)
    return raw


STRANGER = DoorKey.generate()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_the_collector_path_is_never_more_lenient_than_the_reference_reader(raw):
    fast = outcome(collector_path, raw)
    reference = outcome(lambda r: read_events(r, KEYS, site="s1", door="d1"), raw)
    assert fast == reference
