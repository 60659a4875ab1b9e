"""Software cards for tests, benchmarks and demos: never part of the door's product path.

`Ntag424` and `Desfire` answer APDUs as the chips do (see their modules); `DirectTransport`
hands APDUs to one of them the way the reader's transport would, and can make the card leave
the field after a number of commands; `accessd.cards.testing.field` puts them behind nfcpy's
real `ContactlessFrontend`.
"""

from __future__ import annotations

from typing import Protocol

from accessd.cards.testing.desfire import Desfire
from accessd.cards.testing.ntag424 import Ntag424
from accessd.errors import CardRemovedError


class CardModel(Protocol):
    uid: bytes
    commands: int

    @property
    def anticollision_uid(self) -> bytes: ...

    def power_up(self) -> None: ...

    def apdu(self, apdu: bytes) -> bytes: ...


class DirectTransport:
    """APDUs straight to a card model; `remove_after(n)`: the card leaves after n commands."""

    def __init__(self, card: CardModel) -> None:
        self.card = card
        self.sent: list[bytes] = []
        self._left: int | None = None

    def remove_after(self, commands: int | None) -> None:
        self._left = commands

    def exchange(self, apdu: bytes) -> bytes:
        if self._left is not None:
            if self._left <= 0:
                raise CardRemovedError("the card left the field")
            self._left -= 1
        self.sent.append(bytes(apdu))
        return self.card.apdu(bytes(apdu))


__all__ = ["CardModel", "Desfire", "DirectTransport", "Ntag424"]
