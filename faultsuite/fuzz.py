"""Fuzzing every parser of outside input with Hypothesis: the reader's frame parser and the
network's decoders (acknowledgements, events, commands, rule documents).

Properties: nothing but the parser's documented error (ProtocolError) escapes; the frame parser
yields exactly the valid frames an independent oracle finds (so noise never makes a card); no
mutation of a signed command or rule document is accepted unless its payload is the signed one
(so no input forges a release or a member). Atheris is used too when it is installed.
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from faultsuite.core import Context, Result, scenario
from faultsuite.reader import FRAME, cards_on_the_line, frame


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


def _oracle_frames(stream: bytes) -> list[str]:
    out = []
    for m in FRAME.finditer(stream):
        text = m.group(1).decode()
        if text[:10].upper() in cards_on_the_line(m.group(0)):
            out.append(text[:10].upper())
    return out


hexuid = st.integers(0, (1 << 40) - 1).map(lambda i: f"{i:010X}")
pieces = st.one_of(
    st.binary(max_size=64),
    hexuid.map(frame),
    st.tuples(hexuid, st.integers(0, 7)).map(lambda t: frame(t[0], bad_checksum=True,
                                                             flip=t[1])),
    hexuid.map(frame).flatmap(lambda f: st.integers(1, len(f) - 1).map(lambda i: f[:i])),
    st.sampled_from([b"\x02", b"\x03", b"\x02\x03", b"0", b"F"]),
)


def fuzz_frames(ctx: Context, res: Result, n: int) -> None:
    from accessd.readers.em4100 import FrameParser

    count = [0]

    @seed(ctx.seed)
    @_settings(n)
    @given(st.lists(pieces, max_size=40), st.lists(st.integers(1, 32), min_size=1, max_size=8))
    def prop(parts: list[bytes], cuts: list[int]) -> None:
        count[0] += 1
        stream = b"".join(parts)
        parser, got, i, k = FrameParser(), [], 0, 0
        while i < len(stream):  # fed in arbitrary chunks, as the serial port returns them
            step = cuts[k % len(cuts)]
            got += parser.feed(stream[i:i + step])
            i, k = i + step, k + 1
        assert got == _oracle_frames(stream), (stream, got)

    _run(res, "frame parser", prop, count)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)


def _doc_like(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Random JSON, random bytes, and the valid document with fields replaced or dropped."""
    keys = list(base)

    @st.composite
    def mutate(draw: Any) -> bytes:
        doc = dict(base)
        for _ in range(draw(st.integers(1, 3))):
            k = draw(st.sampled_from([*keys, "extra"]))
            if draw(st.booleans()) and k in doc:
                del doc[k]
            else:
                doc[k] = draw(json_values)
        return json.dumps(doc).encode()

    return st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                     mutate())


def fuzz_network(ctx: Context, res: Result, n: int) -> None:
    from accessd.errors import ProtocolError
    from accessd.protocol.codec import COMMAND_MAX_BYTES, decode
    from accessd.protocol.commands import make_command, verify_command
    from accessd.protocol.delivery import DoorKeys, make_ack, read_ack, read_event
    from accessd.protocol.rules import make_snapshot, read_rule_document
    from accessd.protocol.signing import DoorKey, OfficeKey, PublicKeys

    key, door_key = OfficeKey.generate(), DoorKey.generate()
    keys, door_keys = PublicKeys([key.public]), DoorKeys([("faults", "front", door_key.public)])
    signed_ack = make_ack(key, site="faults", door="front", journal="0" * 32, acked=5)
    signed_event = door_key.sign({
        "v": 2, "seq": 1, "id": "x", "site": "faults", "door": "front", "journal": "0" * 32,
        "type": "access.granted", "ts": "2026-01-01T00:00:00.000Z", "clock_trusted": True,
        "detail": {}})
    cmd = make_command(key, type="release", site="faults", door="front", operator="o",
                       seconds=5)
    good_cmd = json.dumps(cmd).encode()
    snap = make_snapshot(key, site="faults", version=3,
                         members=[{"id": "m-1", "name": "A", "plan": "subscriber",
                                   "status": "active", "valid_from": None,
                                   "valid_until": None}],
                         credentials=[{"hash": "a" * 64, "member_id": "m-1",
                                       "status": "active"}])
    good_snap = json.dumps(snap).encode()
    from accessd.events import parse_ts

    now = parse_ts(cmd["payload"]["issued_at"])

    def parser(name: str, fn: Any, base: dict[str, Any]) -> None:
        count = [0]

        @seed(ctx.seed)
        @_settings(n)
        @given(_doc_like(base))
        def prop(raw: bytes) -> None:
            count[0] += 1
            with contextlib.suppress(ProtocolError):
                fn(raw)

        _run(res, name, prop, count)

    def ack(raw: bytes) -> None:
        payload = read_ack(raw, keys, site="faults", door="front")
        assert payload == signed_ack["payload"], f"a forged ack was accepted: {payload}"

    def event(raw: bytes) -> None:
        payload = read_event(raw, door_keys, site="faults", door="front")
        assert payload == signed_event["payload"], f"a forged event was accepted: {payload}"

    def command(raw: bytes) -> None:
        payload = verify_command(raw, keys, site="faults", door="front", now=now)
        assert payload == cmd["payload"], f"a forged command was accepted: {payload}"

    def rules(raw: bytes) -> None:
        payload = read_rule_document(raw, keys, site="faults")
        assert payload == snap["payload"], f"a forged rule document was accepted: {payload}"

    def decode_only(raw: bytes) -> None:
        decode(raw, max_bytes=COMMAND_MAX_BYTES)

    parser("ack", ack, signed_ack)
    parser("event", event, signed_event)
    parser("command envelope", command, cmd)
    _signed_payloads(ctx, res, n, key, keys, cmd["payload"], now)
    parser("rule document", rules, snap)
    parser("decode", decode_only, {"a": [1, {"b": 2}]})

    # byte-level mutations of the genuine signed documents: flips anywhere in the bytes
    for name, good, fn in (("command bytes", good_cmd, command),
                           ("rule bytes", good_snap, rules),
                           ("ack bytes", json.dumps(signed_ack).encode(), ack),
                           ("event bytes", json.dumps(signed_event).encode(), event)):
        _flips(ctx, res, n, name, good, fn)


COMMAND_FIELDS = {"v", "id", "type", "site", "door", "issued_at", "expires_at", "operator",
                  "seconds"}


def _instant(text: Any) -> datetime | None:
    """An RFC 3339 instant with its offset (the oracle's own reading), else None."""
    if not isinstance(text, str) or not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def command_fit(p: Any, now: datetime) -> bool:
    """The oracle, written from schemas/command.json and docs/protocol.md, not from the code:
    may a door act on this payload, here (site faults, door front) and now? (JSON numbers are
    compared as numbers: 1.0 is the version 1.)"""
    if not isinstance(p, dict) or not {"v", "id", "type", "site", "door", "issued_at",
                                       "expires_at", "operator"} <= set(p) <= COMMAND_FIELDS:
        return False
    number = (int, float)
    issued, expires = _instant(p["issued_at"]), _instant(p["expires_at"])
    return (isinstance(p["v"], number) and not isinstance(p["v"], bool) and p["v"] == 1
            and isinstance(p["id"], str) and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", p["id"])
            is not None
            and p["type"] in ("release", "request_snapshot")
            and p["site"] == "faults" and p["door"] == "front"
            and isinstance(p["operator"], str) and 1 <= len(p["operator"]) <= 100
            and ("seconds" not in p or (isinstance(p["seconds"], number)
                                        and not isinstance(p["seconds"], bool)
                                        and 3 <= p["seconds"] <= 600))
            and issued is not None and expires is not None
            and timedelta(0) < expires - issued <= timedelta(seconds=300)
            and issued - timedelta(seconds=30) <= now < expires)


def _signed_payloads(ctx: Context, res: Result, n: int, key: Any, keys: Any,
                     base: dict[str, Any], now: datetime) -> None:
    """Command payloads with fields replaced, dropped or added, each signed by the office's
    own key: the signature is good, so only the door's checks of type and meaning stand
    between such a payload and the relay. Whatever the door accepts must be fit to act on
    (the oracle above); anything else is refused with ProtocolError and nothing else."""
    from accessd.errors import ProtocolError
    from accessd.events import format_ts
    from accessd.protocol.codec import encode
    from accessd.protocol.commands import verify_command

    near = st.integers(-900, 900).map(lambda s: format_ts(now + timedelta(seconds=s)))
    values = {
        "v": st.sampled_from([1, 0, 2, True, 1.0, "1", None]),
        "id": st.text(max_size=70) | st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True),
        "type": st.sampled_from(["release", "request_snapshot", "request-snapshot", "open",
                                 "", "RELEASE"]),
        "site": st.sampled_from(["faults", "other", "", "faults "]),
        "door": st.sampled_from(["front", "back", "", "Front"]),
        "issued_at": near | st.text(max_size=30),
        "expires_at": near | st.text(max_size=30),
        "operator": st.text(max_size=120),
        "seconds": st.one_of(st.floats(allow_nan=True), st.integers(-10, 10_000),
                             st.booleans(), st.text(max_size=5)),
    }

    @st.composite
    def payloads(draw: Any) -> dict[str, Any]:
        p = dict(base)
        for _ in range(draw(st.integers(1, 4))):
            k = draw(st.sampled_from([*values, "extra"]))
            if k != "extra" and draw(st.integers(0, 4)) == 0:
                p.pop(k, None)
            else:
                p[k] = draw(values.get(k, json_values))
        return p

    count, accepted = [0], [0]

    @seed(ctx.seed)
    @_settings(n)
    @given(payloads())
    def prop(payload: dict[str, Any]) -> None:
        count[0] += 1
        try:
            raw = encode(key.sign(payload))
        except (ValueError, TypeError):
            return  # not JSON at all (NaN): the office could not have sent it
        try:
            got = verify_command(raw, keys, site="faults", door="front", now=now)
        except ProtocolError:
            return
        assert command_fit(got, now), f"the door accepted an unfit command: {got}"
        accepted[0] += 1

    _run(res, "signed command payloads", prop, count)
    res.figures["signed_command_payloads_accepted"] = accepted[0]


def _flips(ctx: Context, res: Result, n: int, name: str, good: bytes, fn: Any) -> None:
    """Byte-level mutations of a genuine signed document: flips anywhere in its bytes."""
    from accessd.errors import ProtocolError

    count = [0]

    @seed(ctx.seed)
    @_settings(n)
    @given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)),
                    min_size=1, max_size=4))
    def prop(flips: list[tuple[int, int]]) -> None:
        count[0] += 1
        raw = bytearray(good)
        for pos, val in flips:
            raw[pos] = val
        with contextlib.suppress(ProtocolError):
            fn(bytes(raw))

    _run(res, name, prop, count)


def _run(res: Result, name: str, prop: Any, count: list[int]) -> None:
    try:
        prop()
    except Exception as exc:
        res.fail(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
    res.trials += count[0]
    res.figures.setdefault("inputs", {})[name] = count[0]


@scenario("fuzz_parsers",
          "Hypothesis on the frame parser and every network parser: only the documented error "
          "escapes, frames = oracle, no forged command or rule document accepted", order=60)
def fuzz_parsers(ctx: Context, res: Result) -> None:
    fuzz_frames(ctx, res, ctx.n(3000, 120_000))
    fuzz_network(ctx, res, ctx.n(500, 20_000))
    _atheris(ctx, res, ctx.n(20_000, 300_000))


ATHERIS = """
import sys, atheris
with atheris.instrument_imports():
    from accessd.errors import ProtocolError
    from accessd.protocol.codec import decode, validate
    from accessd.readers.em4100 import FrameParser

def one(data):
    FrameParser().feed(data)  # any exception is a crash
    try:
        validate(["ack", "event", "command", "rules"][len(data) % 4],
                 decode(data, max_bytes=65536))
    except ProtocolError:
        pass

atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


def _atheris(ctx: Context, res: Result, runs: int) -> None:
    """Coverage-guided fuzzing of the frame parser and the decoders, where atheris installs."""
    import subprocess

    from faultsuite.daemon import PYTHON, ROOT

    probe = subprocess.run([PYTHON, "-c", "import atheris"], capture_output=True)
    if probe.returncode != 0:
        res.notes.append("atheris is not installed (pip install atheris); Hypothesis only")
        return
    r = subprocess.run([PYTHON, "-c", ATHERIS, f"-runs={runs}", f"-seed={ctx.seed % 2**31}",
                        "-max_len=4096"], capture_output=True, text=True, cwd=ROOT,
                       timeout=1800)
    done = re.findall(r"Done (\d+) runs", r.stderr)
    res.trials += int(done[-1]) if done else 0
    res.figures.setdefault("inputs", {})["atheris"] = int(done[-1]) if done else 0
    res.check(r.returncode == 0, f"atheris found a crash: {r.stderr[-1500:]}")
