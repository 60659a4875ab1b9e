"""Card models behind nfcpy's real `ContactlessFrontend`: only the radio is simulated.

nfcpy finds its driver through `nfc.clf.device.connect(path)`; `Field.install()` replaces that
one function, so the genuine frontend runs its sense loop, the Type 4 tag activation (RATS),
ISO 14443-4 block framing with chaining, presence checks and error handling over a
`FieldDevice` that answers as a card in the field would. The card side of ISO-DEP lives here:
ATS, I-blocks with the block number echoed, chaining both ways, R(ACK) and R(NAK), DESELECT.
nfcpy switches the field off before each poll (`mute`): the card then loses its session and,
if it has a random ID, gets a new UID, as the chips do.

`Field.card_seconds` is the thread CPU time spent inside the card and the radio (what real
air time replaces); benchmarks subtract it from the reader thread's CPU time.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import nfc.clf
import nfc.clf.device
from nfc.clf import RemoteTarget

from accessd.cards.testing import CardModel
from accessd.cards.testing.desfire import Desfire

FSD = 256  # what the host announces in RATS (nfcpy: FSDI 8 when the device takes 256)


def _ats(card: CardModel) -> bytes:
    """NTAG 424 DNA: FSCI 7 (128 bytes); DESFire EV2: FSCI 5 (64); both FWI 7 (~39 ms)."""
    t0 = 0x75 if isinstance(card, Desfire) else 0x77
    return bytes([0x06, t0, 0x77, 0x71, 0x02, 0x80])


class Field:
    """What lies on the fake reader, and whether the reader is plugged in."""

    def __init__(self) -> None:
        self.plugged = True
        self.card: CardModel | None = None
        self.devices: list[FieldDevice] = []
        self.paths: list[str] = []
        self.card_seconds = 0.0
        self.frames = 0
        self.senses = 0
        self.once = False  # the card is taken away at the end of its first activation
        self.presentation = 0  # increases at each put: a new presentation powers up anew
        self.activated = False  # the card of this presentation has been powered up
        self._leave_after: int | None = None
        self.gone = threading.Event()  # set when a card left (after its tap, or mid-exchange)
        self.on_sense: Callable[[], None] | None = None  # benchmarks: a card was just sensed

    def install(self, setattr_: Any = setattr) -> None:
        """Make nfcpy open this field (`monkeypatch.setattr` in tests restores it)."""
        setattr_(nfc.clf.device, "connect", self.connect)

    def connect(self, path: str) -> FieldDevice | None:
        self.paths.append(path)
        if not self.plugged:
            return None
        device = FieldDevice(self)
        self.devices.append(device)
        return device

    def put(self, card: CardModel | None) -> None:
        """Lay `card` on the reader (None: take it away); it stays until taken away."""
        self._leave_after = None
        self.once = False
        self.activated = False
        self.presentation += 1
        self.gone.clear()
        self.card = card

    def tap(self, card: CardModel, timeout: float = 5.0) -> None:
        """Present `card` for one activation, as a member's tap, and wait until it is gone
        (the reader has finished with it: decision, re-keying, job)."""
        self.put(card)
        self.once = True
        if not self.gone.wait(timeout):
            self.card = None
            raise TimeoutError("the reader did not take the card within the timeout")

    def leave_after(self, frames: int) -> None:
        """The card is pulled away after answering `frames` more ISO-DEP I-blocks."""
        self._leave_after = frames

    def _count_frame(self) -> bool:
        """False when the card has just left."""
        if self._leave_after is None:
            return True
        if self._leave_after <= 0:
            self.card = None
            self._leave_after = None
            self.gone.set()
            return False
        self._leave_after -= 1
        return True


class UidOnlyCard:
    """A card that only answers anticollision with a chosen UID: a Flipper or Proxmark
    emulating a card number, a T5577-style clone of an ISO 14443-A UID."""

    sel_res = 0x00  # not ISO 14443-4: readers take the UID and stop there
    commands = 0

    def __init__(self, uid: bytes) -> None:
        self.uid = uid

    @property
    def anticollision_uid(self) -> bytes:
        return self.uid

    def power_up(self) -> None:
        pass

    def apdu(self, apdu: bytes) -> bytes:
        return b"\x6d\x00"


class FieldDevice(nfc.clf.device.Device):
    """A reader driver whose antenna is `Field`."""

    def __init__(self, field: Field) -> None:  # Device.__init__ refuses to run, by design
        self.field = field
        self._path = "usb:001:042"
        self._vendor_name, self._device_name, self._chipset_name = "Fake", "Field", "PN533"
        self.closed = False
        self._powered: tuple[CardModel, int] | None = None  # the card powered, presentation
        self._command = b""  # a chained command being received
        self._response = b""  # the rest of a chained response

    def _check(self) -> None:
        if not self.field.plugged or self.closed:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def close(self) -> None:
        self.closed = True

    def mute(self) -> None:
        self._check()
        field = self.field
        if field.once and field.activated and field.card is not None:
            field.card = None  # one tap: the member takes the card away
            field.gone.set()
        self._powered = None  # field off: the card loses power and its state

    def sense_tta(self, target: RemoteTarget) -> RemoteTarget | None:
        self._check()
        started = time.thread_time()
        self.field.senses += 1
        try:
            found = self._anticollision(target)
        finally:
            self.field.card_seconds += time.thread_time() - started
        if found is not None and self.field.on_sense is not None:
            self.field.on_sense()
        return found

    def _anticollision(self, target: RemoteTarget) -> RemoteTarget | None:
        card = self.field.card
        if card is None:
            return None
        if self._powered != (card, self.field.presentation):
            card.power_up()
            self._powered = (card, self.field.presentation)
            self._command = self._response = b""
        self.field.activated = True
        uid = card.anticollision_uid
        if target.sel_req and bytes(target.sel_req) != uid:
            return None
        sel_res = getattr(card, "sel_res", 0x20)  # 0x20: ISO 14443-4
        return RemoteTarget("106A", sens_res=bytearray(b"\x44\x03"),
                            sel_res=bytearray([sel_res]), sdd_res=bytearray(uid))

    def sense_ttb(self, target: RemoteTarget) -> RemoteTarget | None:
        raise nfc.clf.UnsupportedTargetError("no type B here")

    def sense_ttf(self, target: RemoteTarget) -> RemoteTarget | None:
        self._check()
        return None

    def sense_dep(self, target: RemoteTarget) -> RemoteTarget | None:
        raise nfc.clf.UnsupportedTargetError("no peer-to-peer here")

    def send_cmd_recv_rsp(self, target: RemoteTarget, data: bytes, timeout: float) -> bytes:
        self._check()
        started = time.thread_time()
        try:
            card = self.field.card
            if card is None or self._powered != (card, self.field.presentation):
                raise nfc.clf.TimeoutError("no answer")
            return bytearray(self._frame(card, bytes(data)))
        finally:
            self.field.card_seconds += time.thread_time() - started

    def _frame(self, card: CardModel, frame: bytes) -> bytes:
        """The card side of ISO 14443-4 for one frame from the reader."""
        pcb = frame[0]
        if pcb == 0xE0:  # RATS
            return _ats(card)
        if pcb == 0xC2:  # S(DESELECT)
            return b"\xc2"
        if pcb & 0xE6 == 0xA2:  # R(ACK): send the next part of a chained response
            if not self._response:
                raise nfc.clf.TimeoutError("unexpected R(ACK)")
            return self._send(pcb & 1)
        if pcb & 0xE6 == 0xB2:  # R(NAK): presence check
            return bytes([0xA2 | (pcb & 1)])
        if pcb & 0xE2 == 0x02:  # I-block
            self.field.frames += 1
            if not self.field._count_frame():
                raise nfc.clf.TimeoutError("the card left the field")
            self._command += frame[1:]
            if pcb & 0x10:  # chaining: acknowledge and wait for the rest
                return bytes([0xA2 | (pcb & 1)])
            command, self._command = self._command, b""
            self._response = card.apdu(command)
            return self._send(pcb & 1)
        raise nfc.clf.ProtocolError("unknown block")

    def _send(self, block_number: int) -> bytes:
        room = FSD - 3
        part, self._response = self._response[:room], self._response[room:]
        chaining = 0x10 if self._response else 0x00
        return bytes([0x02 | chaining | block_number]) + part

    def get_max_send_data_size(self, target: RemoteTarget) -> int:
        return 254

    def get_max_recv_data_size(self, target: RemoteTarget) -> int:
        return FSD

    def turn_on_led_and_buzzer(self) -> None:
        pass

    def turn_off_led_and_buzzer(self) -> None:
        pass
