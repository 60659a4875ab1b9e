"""`secure_tap_cpu_ms`: the door's own CPU time per authenticated tap.

The real `Daemon` (built from a configuration file, 100,000 credentials, `[cards] enabled`,
gpiozero's MockFactory) reads NTAG 424 DNA and DESFire EV2 cards through nfcpy's real
`ContactlessFrontend`; the radio is a `Field` whose card models answer in microseconds where
real cards take milliseconds of air time (docs/performance.md gives those from the
datasheets). What is timed is the reader thread's CPU time (`time.thread_time`) from the
moment the card is sensed to the moment the controller has decided, released, journalled and
recorded the tap, minus the CPU time spent inside the card models and the simulated radio:
nfcpy's ISO-DEP framing, the AES/CMAC work of the authentication and of secure messaging, the
rule-cache lookups, the decision, the relay and the journal commit. Cards alternate between
the two types; each sample is one tap of a different enrolled card. A tap that brings no
decision within the timeout counts at the timeout and is reported in the note.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks.common import SITE_KEY, Result, SiteFactory, dist
from benchmarks.door import WAIT_S, InProcessDaemon

CARDS_PER_TYPE = 40


def bench_secure_tap(sites: SiteFactory, *, samples: int, warmup: int) -> Result:
    import nfc.clf.device

    from accessd.cards import keys
    from accessd.cards.reader import SecureCards
    from accessd.cards.testing import Desfire, DirectTransport, Ntag424
    from accessd.cards.testing.field import Field
    from accessd.config import load_config
    from accessd.credentials import CredentialHasher
    from accessd.decision import Plan
    from accessd.store.rules import RuleCache

    rng = random.Random(7)
    site = sites.site(readers=[{"name": "door", "type": "nfc", "port": "usb", "hold_off_s": 0}],
                      factory="default", extra="[cards]\nenabled = true\n")
    cfg = load_config(site.config)
    keys.new_version(cfg.cards.master_key_file)
    secure = SecureCards(keys.Keyring.load(cfg.cards.master_key_file, cfg.site.id))
    hasher = CredentialHasher(SITE_KEY)
    cards: list[Any] = []
    rules = RuleCache(cfg.storage.rules_db)
    try:
        for i in range(CARDS_PER_TYPE):
            for model in (Ntag424, Desfire):
                card = model(random=rng.randbytes)
                issued = secure.issue(DirectTransport(card), card.anticollision_uid, f"m-s{i}")
                rules.enroll(name=f"Secure {i}", plan=Plan.SUBSCRIBER, member_id=f"m-s{i}",
                             credential_hash=hasher(issued.uid.hex().upper()),
                             technology=issued.kind)
                cards.append(card)
    finally:
        rules.close()

    field = Field()
    real_connect = nfc.clf.device.connect
    nfc.clf.device.connect = field.connect
    d = InProcessDaemon(site.config, site.dir / "daemon.log")
    reader = d.daemon.readers[0]
    decided: dict[str, float] = {}
    original = reader._on_card  # the controller: wrapped to stamp the end of each tap

    def on_card(read: Any) -> None:
        original(read)
        decided["cpu"] = time.thread_time()
        decided["card"] = field.card_seconds

    reader._on_card = on_card
    out: dict[str, list[float]] = {"ntag424": [], "desfire": []}
    frames: dict[str, list[int]] = {"ntag424": [], "desfire": []}
    lost = denied = 0
    try:
        d.wait_readers_online()
        for i in range(warmup + samples):
            card = cards[i % len(cards)]
            kind = "ntag424" if isinstance(card, Ntag424) else "desfire"
            decided.clear()
            start: dict[str, float] = {}
            field.on_sense = lambda start=start: start.update(
                cpu=time.thread_time(), card=field.card_seconds, frames=field.frames)
            d.journaled.clear()
            try:
                field.tap(card, timeout=WAIT_S)
                ok = d.journaled.wait() is not None and "cpu" in decided and "cpu" in start
            except TimeoutError:
                ok = False
            if d.relay.released:
                d.relay.lock()
            else:
                denied += 1
            if i < warmup:
                continue
            if not ok:
                lost += 1
                out[kind].append(WAIT_S * 1000.0)
                continue
            own = (decided["cpu"] - start["cpu"]) - (decided["card"] - start["card"])
            out[kind].append(own * 1000.0)
            frames[kind].append(field.frames - int(start["frames"]))
    finally:
        field.on_sense = None
        d.close()
        nfc.clf.device.connect = real_connect
    values = out["ntag424"] + out["desfire"]
    per_type = {k: {"p50": dist(v)["p50"], "p99": dist(v)["p99"], "samples": len(v),
                    "apdus_per_tap": max(frames[k], default=0)} for k, v in out.items() if v}
    result = dist(values, lost=lost, **per_type)
    return Result(
        "secure_tap_cpu_ms",
        "reader-thread CPU per authenticated tap (nfcpy ISO-DEP, AES auth + secure read, "
        "decision, relay, journal), card models' time excluded; NTAG 424 DNA and DESFire EV2",
        result, "p99 <= 5 ms", result["p99"] <= 5.0 and lost == 0,
        note=(f"ntag424 p99 {per_type.get('ntag424', {}).get('p99')} ms, "
              f"{per_type.get('ntag424', {}).get('apdus_per_tap')} APDUs a tap; desfire p99 "
              f"{per_type.get('desfire', {}).get('p99')} ms, "
              f"{per_type.get('desfire', {}).get('apdus_per_tap')} APDUs a tap; "
              f"{lost} lost (counted at {WAIT_S * 1000:g} ms), {denied} denied"))
