"""NfcReader against nfcpy's real `ContactlessFrontend`, with a fake device driver underneath.

nfcpy finds its driver through `nfc.clf.device.connect(path)`; replacing that one function with a
`FakeBus` lets the genuine frontend run its open/ENODEV handling, its connect/sense loop, target
checks and IOError handling over a `nfc.clf.device.Device` subclass that answers anticollision
like a card in the field would. Only the radio is fake.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import nfc  # nfcpy is a dependency of the package: missing, it is an error
import nfc.clf
import nfc.clf.device
import pytest
from nfc.clf import RemoteTarget
from readers_helpers import Recorder

from accessd.config import ReaderConfig
from accessd.readers.nfc_reader import NfcReader


class FakeCard:
    """What one card answers during anticollision and activation."""

    def __init__(self, brty: str, **responses: bytes) -> None:
        self.brty = brty
        self.responses = {k: bytearray(v) for k, v in responses.items()}

    def target(self) -> RemoteTarget:
        return RemoteTarget(self.brty, **{k: bytearray(v) for k, v in self.responses.items()})


def iso14443a(uid_hex: str, sel_res: int = 0x00, sens_res: str = "4400") -> FakeCard:
    return FakeCard("106A", sens_res=bytes.fromhex(sens_res), sel_res=bytes([sel_res]),
                    sdd_res=bytes.fromhex(uid_hex))


def ntag_7byte(uid_hex: str) -> FakeCard:
    return iso14443a(uid_hex)  # NXP (04...) Type 2: nfcpy probes it with AUTH/GET_VERSION


def mifare_classic_4byte(uid_hex: str) -> FakeCard:
    return iso14443a(uid_hex, sel_res=0x08, sens_res="0400")


def desfire_type4(uid_hex: str) -> FakeCard:
    return iso14443a(uid_hex, sel_res=0x20, sens_res="4403")


def phone_p2p(random_uid_hex: str) -> FakeCard:
    return iso14443a(random_uid_hex, sel_res=0x60, sens_res="0400")


def felica(idm_hex: str, pmm_hex: str = "0120220427674EFF", sys_hex: str = "0003") -> FakeCard:
    return FakeCard("212F", sensf_res=bytes.fromhex("01" + idm_hex + pmm_hex + sys_hex))


class FakeDevice(nfc.clf.device.Device):
    """A driver for a reader that is just a field with zero or one card in it."""

    def __init__(self, bus: FakeBus) -> None:  # Device.__init__ refuses to run, by design
        self.bus = bus
        self._path = "usb:001:042"
        self._vendor_name, self._device_name, self._chipset_name = "Fake", "Reader", "PN533"
        self.closed = False
        self.senses = 0
        self.exchanges = 0

    def _check(self) -> None:
        if not self.bus.plugged or self.closed:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def close(self) -> None:
        self.closed = True

    def mute(self) -> None:
        self._check()

    def _card(self, brty: str) -> FakeCard | None:
        card = self.bus.card
        return card if card is not None and card.brty == brty else None

    def sense_tta(self, target: RemoteTarget) -> RemoteTarget | None:
        self._check()
        self.senses += 1
        card = self._card("106A")
        if card is None:
            return None
        if target.sel_req and bytes(target.sel_req) != bytes(card.responses["sdd_res"]):
            return None
        return card.target()

    def sense_ttb(self, target: RemoteTarget) -> RemoteTarget | None:
        raise nfc.clf.UnsupportedTargetError("no type B here")

    def sense_ttf(self, target: RemoteTarget) -> RemoteTarget | None:
        self._check()
        card = self._card("212F")
        return card.target() if card else None

    def sense_dep(self, target: RemoteTarget) -> RemoteTarget | None:
        raise nfc.clf.UnsupportedTargetError("no peer-to-peer here")

    def send_cmd_recv_rsp(self, target: RemoteTarget, data: bytes, timeout: float) -> bytes:
        self._check()
        self.exchanges += 1  # activation or presence checks: the reader should need none
        raise nfc.clf.TimeoutError("no answer")

    def get_max_send_data_size(self, target: RemoteTarget) -> int:
        return 254

    def get_max_recv_data_size(self, target: RemoteTarget) -> int:
        return 256

    def turn_on_led_and_buzzer(self) -> None:
        pass

    def turn_off_led_and_buzzer(self) -> None:
        pass


class FakeBus:
    """The USB bus: whether the reader is plugged in, and what card lies on it."""

    def __init__(self) -> None:
        self.plugged = True
        self.card: FakeCard | None = None
        self.devices: list[FakeDevice] = []
        self.paths: list[str] = []

    def connect(self, path: str) -> FakeDevice | None:
        self.paths.append(path)
        if not self.plugged:
            return None
        device = FakeDevice(self)
        self.devices.append(device)
        return device

    def tap(self, card: FakeCard, rec: Recorder) -> str:
        """Put `card` on the reader until it is read, then take it away; return the uid."""
        self.card = card
        try:
            return rec.next_card().uid
        finally:
            self.card = None


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> FakeBus:
    fake = FakeBus()
    monkeypatch.setattr(nfc.clf.device, "connect", fake.connect)
    return fake


def make_reader(hold_off_s: float = 0.5, port: str = "usb:072f:2200") -> NfcReader:
    cfg = ReaderConfig(name="lobby", type="nfc", port=port, hold_off_s=hold_off_s)
    return NfcReader(cfg, reconnect_min_s=0.02, reconnect_max_s=0.1, poll_interval_s=0.02)


@pytest.fixture
def running(bus: FakeBus) -> Iterator[tuple[NfcReader, Recorder]]:
    reader, rec = make_reader(), Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    yield reader, rec
    reader.stop()


def test_reader_opens_the_configured_path_through_nfcpy(
    running: tuple[NfcReader, Recorder], bus: FakeBus
) -> None:
    reader, _ = running
    assert bus.paths == ["usb:072f:2200"]
    assert reader.online


def test_seven_byte_uid_type2(running: tuple[NfcReader, Recorder], bus: FakeBus) -> None:
    _, rec = running
    assert bus.tap(ntag_7byte("04A22B1C5D6E80"), rec) == "04A22B1C5D6E80"
    read = rec.cards[-1]
    assert (read.technology, read.reader, read.direction) == ("iso14443a", "lobby", "entry")


def test_four_byte_uid_mifare_classic(running: tuple[NfcReader, Recorder],
                                      bus: FakeBus) -> None:
    _, rec = running
    assert bus.tap(mifare_classic_4byte("5A3C9E21"), rec) == "5A3C9E21"
    assert rec.cards[-1].technology == "iso14443a"


def test_seven_byte_uid_type4_desfire(running: tuple[NfcReader, Recorder],
                                      bus: FakeBus) -> None:
    _, rec = running
    assert bus.tap(desfire_type4("04517A3A8C6B80"), rec) == "04517A3A8C6B80"
    assert rec.cards[-1].technology == "iso14443a"


def test_felica_idm(running: tuple[NfcReader, Recorder], bus: FakeBus) -> None:
    _, rec = running
    assert bus.tap(felica("012E4CD5F2A31B7C"), rec) == "012E4CD5F2A31B7C"
    assert rec.cards[-1].technology == "felica"


def test_card_left_on_the_reader_is_one_presentation(
    running: tuple[NfcReader, Recorder], bus: FakeBus
) -> None:
    _, rec = running
    bus.card = mifare_classic_4byte("5A3C9E21")
    assert rec.next_card().uid == "5A3C9E21"
    device = bus.devices[-1]
    polled = device.senses
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # rests ~1 s, polled every 20 ms, hold-off 0.5 s
        time.sleep(0.05)
    assert device.senses - polled >= 10, "the card should have been seen again and again"
    assert device.exchanges == 0, "reading a UID needs anticollision only, no activation"
    bus.card = None
    assert bus.tap(felica("012E4CD5F2A31B7C"), rec) == "012E4CD5F2A31B7C"
    assert rec.uids() == ["5A3C9E21", "012E4CD5F2A31B7C"]


def test_phone_offering_peer_to_peer_is_not_a_card(running: tuple[NfcReader, Recorder],
                                                  bus: FakeBus) -> None:
    _, rec = running
    bus.card = phone_p2p("08A1B2C3")
    device = bus.devices[-1]
    polled = device.senses
    while device.senses < polled + 5:
        time.sleep(0.01)
    bus.card = None
    assert bus.tap(mifare_classic_4byte("5A3C9E21"), rec) == "5A3C9E21"
    assert rec.uids() == ["5A3C9E21"]


def test_uids_stay_out_of_the_log_even_at_debug(running: tuple[NfcReader, Recorder],
                                                bus: FakeBus,
                                                caplog: pytest.LogCaptureFixture) -> None:
    _, rec = running
    caplog.set_level(logging.DEBUG)
    assert bus.tap(ntag_7byte("04A22B1C5D6E80"), rec) == "04A22B1C5D6E80"
    assert "04A22B1C5D6E80" not in caplog.text.upper()


def test_frontend_missing_at_start_then_plugged_in(bus: FakeBus,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    bus.plugged = False
    reader, rec = make_reader(), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        status = rec.wait_online(False)
        assert "usb:072f:2200" in status.detail
        while len(bus.paths) < 3:  # several open attempts, all failing
            time.sleep(0.01)
        bus.plugged = True
        rec.wait_online(True)
        assert bus.tap(mifare_classic_4byte("5A3C9E21"), rec) == "5A3C9E21"
        assert [s.online for s in rec.statuses] == [False, True]
        noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(noisy) == 1, [r.getMessage() for r in noisy]  # one WARNING, from us
    finally:
        reader.stop()


def test_frontend_unplugged_while_running_then_replugged(
    running: tuple[NfcReader, Recorder], bus: FakeBus
) -> None:
    reader, rec = running
    first = bus.devices[-1]
    bus.plugged = False
    rec.wait_online(False)
    assert not reader.online
    assert first.closed, "the lost frontend must be closed"
    attempts = len(bus.paths)
    while len(bus.paths) < attempts + 3:
        time.sleep(0.01)
    bus.plugged = True
    rec.wait_online(True)
    assert bus.tap(ntag_7byte("04A22B1C5D6E80"), rec) == "04A22B1C5D6E80"
    assert [s.online for s in rec.statuses] == [True, False, True]


def test_stop_is_prompt_and_closes_the_frontend(bus: FakeBus) -> None:
    reader, rec = make_reader(), Recorder()
    reader.poll_interval_s = 0.1  # the production default
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 0.2
    assert bus.devices[-1].closed
    assert not any(t.name == "reader-lobby" for t in threading.enumerate())


# -- the injectable factory, with a duck-typed frontend ---------------------------------------


class Tag:
    def __init__(self, type_: str, identifier: bytes) -> None:
        self.type, self.identifier = type_, identifier


class ScriptedFrontend:
    """Behaves like nfcpy's frontend from the caller's side: connect() hands each scripted tag
    to on-connect, and otherwise returns once terminate() says so."""

    def __init__(self, tags: list[Tag]) -> None:
        self.tags = tags
        self.closed = False

    def connect(self, *, rdwr: dict[str, Any], terminate: Any) -> Any:
        while not terminate():
            if self.tags:
                tag = self.tags.pop(0)
                if not rdwr["on-connect"](tag):
                    return tag
        return None

    def close(self) -> None:
        self.closed = True


def test_frontend_factory_is_injectable_and_odd_tags_are_ignored() -> None:
    tags = [Tag("Type1Tag", b"\x01\x02"), Tag("Type4Tag", bytes.fromhex("0102030405060708090A")),
            Tag("Type3Tag", bytes.fromhex("012E4CD5F2A31B7C"))]
    frontends: list[ScriptedFrontend] = []

    def factory(path: str) -> ScriptedFrontend:
        frontends.append(ScriptedFrontend(tags))
        return frontends[-1]

    cfg = ReaderConfig(name="lobby", type="nfc", port="tty:AMA0:pn532", direction="exit")
    reader, rec = NfcReader(cfg, frontend_factory=factory, poll_interval_s=0.01), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        first, second = rec.next_card(), rec.next_card()
        assert (first.uid, first.technology) == ("0102030405060708090A", "iso14443a")
        assert (second.uid, second.technology, second.direction) == (
            "012E4CD5F2A31B7C", "felica", "exit")
    finally:
        reader.stop()
    assert frontends[0].closed


def test_package_imports_without_nfcpy_until_the_reader_runs() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['nfc'] = None\n"
            "from accessd.readers.factory import build_reader\n"
            "from accessd.config import ReaderConfig\n"
            "build_reader(ReaderConfig(name='x', type='nfc', port='usb'))\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "ok"
