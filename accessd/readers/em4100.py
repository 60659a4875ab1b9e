"""RDM6300 / EM4100 serial frames: pure parsing, no I/O.

A 125 kHz reader such as the RDM6300 sends, at 9600 baud, for every read of a card:

    0x02 | 10 ASCII hex: version byte + 4-byte id | 2 ASCII hex: XOR of those 5 bytes | 0x03

and repeats the frame every ~100 ms while the card stays in the field. The line is noisy (boot
garbage, a loose wire, a second card entering the field), so the parser accepts a frame only if it
is complete, hex and checksummed, and it resynchronises on every 0x02.
"""

from __future__ import annotations

STX = 0x02
ETX = 0x03
PAYLOAD_CHARS = 12  # 10 hex data characters + 2 hex checksum characters
FRAME_BYTES = PAYLOAD_CHARS + 2

_HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")


def checksum(data: bytes) -> int:
    """XOR of the data bytes, as the EM4100 frame carries it."""
    x = 0
    for b in data:
        x ^= b
    return x


def encode_frame(uid_hex: str) -> bytes:
    """The frame an RDM6300 sends for a card (for tests and simulators)."""
    data = bytes.fromhex(uid_hex)
    if len(data) != 5:
        raise ValueError("an EM4100 card number is 5 bytes (10 hex digits)")
    body = data.hex().upper() + f"{checksum(data):02X}"
    return bytes([STX]) + body.encode("ascii") + bytes([ETX])


class FrameParser:
    """Incremental parser: feed it whatever the port returned, get the UIDs of valid frames.

    Memory is bounded (at most one partial frame of 12 characters is kept). The counters are for
    diagnostics: a rising `checksum_errors` points at a bad antenna or wiring, `framing_errors`
    at a wrong baud rate or a truncated line.
    """

    def __init__(self) -> None:
        self._payload = bytearray()
        self._in_frame = False
        self.frames_ok = 0
        self.checksum_errors = 0
        self.framing_errors = 0  # truncated, over-long or non-hex frames
        self.noise_bytes = 0  # bytes outside any frame

    @property
    def rejected_frames(self) -> int:
        return self.checksum_errors + self.framing_errors

    def stats(self) -> dict[str, int]:
        return {
            "frames_ok": self.frames_ok,
            "checksum_errors": self.checksum_errors,
            "framing_errors": self.framing_errors,
            "noise_bytes": self.noise_bytes,
        }

    def reset(self) -> None:
        """Forget a partial frame (after the port was reopened); counters are kept."""
        self._payload.clear()
        self._in_frame = False

    def feed(self, data: bytes) -> list[str]:
        """Consume `data`; return the UIDs (10 upper-case hex characters) of frames it completed."""
        uids: list[str] = []
        i, n = 0, len(data)
        payload = self._payload
        while i < n:
            if not self._in_frame:
                start = data.find(STX, i)
                if start < 0:
                    self.noise_bytes += n - i
                    break
                self.noise_bytes += start - i
                self._in_frame = True
                payload.clear()
                i = start + 1
                continue
            b = data[i]
            i += 1
            if b == STX:  # a new frame starts inside this one: the partial one is lost
                self.framing_errors += 1
                payload.clear()
            elif b == ETX:
                self._in_frame = False
                uid = self._complete()
                if uid is not None:
                    uids.append(uid)
            elif b in _HEX_BYTES and len(payload) < PAYLOAD_CHARS:
                payload.append(b)
            else:  # non-hex, or a 13th character where 0x03 belongs
                self.framing_errors += 1
                self._in_frame = False
                payload.clear()
        return uids

    def _complete(self) -> str | None:
        payload = self._payload
        if len(payload) != PAYLOAD_CHARS:
            self.framing_errors += 1
            payload.clear()
            return None
        text = payload.decode("ascii")
        payload.clear()
        data = bytes.fromhex(text[:10])
        if checksum(data) != int(text[10:], 16):
            self.checksum_errors += 1
            return None
        self.frames_ok += 1
        return text[:10].upper()
