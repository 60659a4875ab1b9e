"""Opt-in: a real PN532 (or any nfcpy reader) with a real blank NTAG 424 DNA or DESFire EV2/EV3.

    ACCESSD_HARDWARE=1 ACCESSD_NFC_PATH=tty:AMA0:pn532 pytest -m hardware -s \\
        tests/test_cards_hardware.py -k ntag424
    ACCESSD_HARDWARE=1 ACCESSD_NFC_PATH=usb:072f:2200 pytest -m hardware -s \\
        tests/test_cards_hardware.py -k desfire

Each test takes a blank card (factory keys), issues it with a throw-away master key,
authenticates it as the door does (and, for the NTAG, verifies its SUN message), re-keys it to
a second version and wipes it back to the factory state. Keep the card on the reader for the
whole test; if it is pulled away midway, run the test again: it wipes what it finds first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from accessd.cards.channel import Channel
from accessd.cards.keys import Keyring, MasterKey
from accessd.cards.reader import SecureCards
from accessd.config import ReaderConfig
from accessd.decision import Proof
from accessd.errors import CardError
from accessd.readers.nfc_reader import NfcReader

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(os.environ.get("ACCESSD_HARDWARE") != "1",
                       reason="set ACCESSD_HARDWARE=1 to run real-reader tests"),
]
PRESENT_S = 60.0
V1 = Keyring({1: MasterKey(1, bytes.fromhex("A1" * 16))}, "hardware-test")
V2 = Keyring({**V1.keys, 2: MasterKey(2, bytes.fromhex("B2" * 16))}, "hardware-test")


@pytest.fixture
def reader() -> Any:
    path = os.environ.get("ACCESSD_NFC_PATH")
    if not path:
        pytest.skip("set ACCESSD_NFC_PATH (e.g. tty:AMA0:pn532, usb:072f:2200)")
    nfc = NfcReader(ReaderConfig(name="hw-cards", type="nfc", port=path, hold_off_s=1.0),
                    secure=SecureCards(V1))
    nfc.start(lambda read: None, lambda status: None)
    yield nfc
    nfc.stop()


def on_card(reader: NfcReader, what: str, job: Callable[[Any, bytes], Any]) -> Any:
    print(f"\n{what}: present the card (and keep it there), {PRESENT_S:.0f} s")
    return reader.run_on_next_card(job, PRESENT_S)


def lifecycle(reader: NfcReader, kind: str) -> None:
    secure1, secure2 = SecureCards(V1), SecureCards(V2)
    profile = secure1.ntag if kind == "ntag424" else secure1.desfire

    def clean(t: Any, seen: bytes) -> None:
        try:
            profile.wipe(Channel(t), V2, seen)
        except CardError as exc:  # a blank DESFire card has nothing to wipe
            print(f"  (nothing to wipe: {exc})")

    on_card(reader, "start from factory state", clean)
    issued = on_card(reader, "issue", secure1.job("issue", "m-hardware"))
    assert issued.kind == kind and issued.key_version == 1

    def identify(t: Any, seen: bytes) -> Any:
        started = time.perf_counter()
        found = secure1.present(t, seen)
        print(f"  the door's authentication took {(time.perf_counter() - started) * 1000:.1f} "
              "ms on this reader (after activation)")
        return found

    uid, proof = on_card(reader, "authenticate", identify)
    assert (uid, proof.proof, proof.member_ref) == (issued.uid, Proof.AUTHENTICATED,
                                                   "m-hardware")
    if kind == "ntag424":
        sun = SecureCards(V1, ntag424_mode="sun")
        uid, proof = on_card(reader, "read the SUN message", sun.present)
        assert proof.proof is Proof.AUTHENTICATED and proof.sun_counter >= 1
    rekeyed = on_card(reader, "re-key to version 2", secure2.job("rekey"))
    assert rekeyed.key_version == 2
    uid, proof = on_card(reader, "authenticate at version 2", secure2.present)
    assert proof.key_version == 2
    on_card(reader, "wipe", secure2.job("wipe"))
    assert on_card(reader, "check factory state", secure1.present) is None


def test_ntag424_on_a_real_reader(reader: NfcReader) -> None:
    lifecycle(reader, "ntag424")


def test_desfire_on_a_real_reader(reader: NfcReader) -> None:
    lifecycle(reader, "desfire")
