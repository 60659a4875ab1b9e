"""Card numbers as people type them, turned into the one form the rest of accessd compares.

Readers already produce upper-case hex; this is for what a host types at the CLI or into the
simulated reader. Error messages never repeat the number, so they are safe to log.
"""

from __future__ import annotations

import re

from accessd.errors import CardNumberError

#: UID sizes in bytes: ISO 14443-A single/double/triple (4, 7, 10), EM4100 (5), FeliCa IDm (8).
VALID_UID_BYTES = (4, 5, 7, 8, 10)

_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = frozenset("0123456789abcdefABCDEF")


def normalise_uid(text: str) -> str:
    """Return `text` as upper-case hex without separators, or raise `CardNumberError`.

    Accepts spaces, ':' and '-' between digits ("04:a2:2b:1c", "04 A2 2B 1C").
    """
    compact = _SEPARATORS.sub("", text)
    if not compact:
        raise CardNumberError("card number is empty")
    bad = next((ch for ch in compact if ch not in _HEX), None)
    if bad is not None:
        shown = bad if bad.isprintable() else f"U+{ord(bad):04X}"
        raise CardNumberError(
            f"card number must be hexadecimal (0-9, A-F); found {shown!r}"
        )
    if len(compact) % 2:
        raise CardNumberError(
            f"card number has an odd number of hex digits ({len(compact)})"
        )
    size = len(compact) // 2
    if size not in VALID_UID_BYTES:
        sizes = ", ".join(str(n) for n in VALID_UID_BYTES)
        raise CardNumberError(
            f"card number is {size} bytes long; expected {sizes} bytes "
            "(ISO 14443-A 4/7/10, EM4100 5, FeliCa 8)"
        )
    return compact.upper()
