"""The floor of a tap, in its own process: a bare pyserial loop and a minimal frame parser.

    python benchmarks/floor_proc.py PTY

Prints "R" once the port is open, then "F <perf_counter> <card number>" for each valid
RDM6300 frame, stamped the moment the frame is parsed. Nothing of accessd runs here, and
nothing else shares this process's interpreter: it is the least any Python reader can do.
`time.perf_counter()` is CLOCK_MONOTONIC on Linux, the same clock in every process, so the
benchmark subtracts its own stamps from these.
"""

from __future__ import annotations

import signal
import sys
import time


def main() -> int:
    import serial

    port = serial.Serial(sys.argv[1], 9600, timeout=0.05)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = sys.stdout
    out.write("R\n")
    out.flush()
    buf = bytearray()
    while True:
        data = port.read(port.in_waiting or 1)
        if not data:
            continue
        buf += data
        while True:
            end = buf.find(3)
            if end < 0:
                break
            start = buf.rfind(2, 0, end)
            frame = bytes(buf[start:end + 1]) if start >= 0 else b""
            del buf[:end + 1]
            if len(frame) != 14:
                continue
            try:
                raw = bytes.fromhex(frame[1:11].decode("ascii"))
                check = int(frame[11:13], 16)
            except ValueError:
                continue
            x = 0
            for b in raw:
                x ^= b
            if x == check:
                t = time.perf_counter()
                out.write(f"F {t:.9f} {frame[1:11].decode('ascii')}\n")
                out.flush()


if __name__ == "__main__":
    sys.exit(main())
