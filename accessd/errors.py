"""The one exception hierarchy of accessd.

Each error says what went wrong in one line; where a builtin fits, it is inherited too so that
callers outside accessd can catch it naturally.
"""


class AccessdError(Exception):
    """Base class of every error accessd raises on purpose."""


class ConfigError(AccessdError, ValueError):
    """The configuration file is missing, unreadable or invalid (names the file and the key)."""


class SecretPermissionError(ConfigError, PermissionError):
    """A secret file is readable by users other than the service user."""


class ReaderError(AccessdError, OSError):
    """A card reader could not be opened or stopped answering."""


class FrameError(AccessdError, ValueError):
    """Bytes from a reader do not form a valid card frame."""


class CardNumberError(AccessdError, ValueError):
    """A card number typed by a person is not a valid UID."""


class StoreError(AccessdError):
    """The rule cache or journal could not be read or written."""


class CorruptRecord(StoreError, ValueError):
    """A stored row holds a value this version cannot use (unknown plan or status, bad date)."""

    def __init__(self, message: str, *, member_id: str | None = None,
                 member_name: str | None = None, credential_status: str | None = None,
                 member_status: str | None = None) -> None:
        super().__init__(message)
        self.member_id, self.member_name = member_id, member_name
        self.credential_status, self.member_status = credential_status, member_status


class ScheduleError(AccessdError, ValueError):
    """A schedule or date means nothing: unknown time zone, impossible date, hours reversed."""


class AlreadyRunning(AccessdError, BlockingIOError):
    """Another daemon holds the storage folder's lock."""


class HostCommandRefused(AccessdError, PermissionError):
    """A command or option outside the host's fixed list (the sudo wrapper refuses it)."""


class JournalFullError(StoreError, OSError):
    """The journal's filesystem refuses writes (full or read-only)."""


class MemberNotFound(AccessdError, LookupError):
    """No member or credential matches what was asked for."""


class UnknownSite(AccessdError, LookupError):
    """The office knows no site by that id (no site row, no door key, no stored event)."""


class AmbiguousMember(MemberNotFound):
    """A name matches several members: the message lists them with their ids."""

    def __init__(self, message: str, matches: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.matches = matches  # (id, name) of each member it matches


class DuplicateCredential(AccessdError, ValueError):
    """The card is already enrolled to a member."""


class HardwareError(AccessdError, OSError):
    """A GPIO device (lock relay, door contact, exit button) could not be set up."""


class ControlError(AccessdError, ConnectionError):
    """The running daemon could not be reached over its control socket."""


class ProtocolError(AccessdError, ValueError):
    """A network message is malformed, too large, unsigned, badly signed, stale or replayed."""


class CardError(AccessdError):
    """A contactless card refused a command or answered something unexpected."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the card's status word (e.g. 0x91AE), when it sent one


class CardAuthenticationError(CardError):
    """A card failed AES authentication or sent a MAC that does not verify."""


class CardRemovedError(CardError, OSError):
    """The card stopped answering (left the field) in the middle of an exchange."""


class SunMessageError(AccessdError, ValueError):
    """A SUN URL or NDEF message cannot be decoded (missing or malformed e/c parameters)."""


class CardStatusAnswer(AccessdError):
    """A software card model's 0x91xx status, raised inside it and never beyond its apdu()."""

    def __init__(self, sw2: int) -> None:
        super().__init__(f"0x91{sw2:02X}")
        self.sw2 = sw2
class RevokedError(AccessdError, ValueError):
    """A revoked member or card cannot be made active or suspended again, nor re-enrolled."""


class OfficeOwnedError(AccessdError, PermissionError):
    """The change would make an office member more privileged: only the office can do that."""


class ProposalError(AccessdError, LookupError):
    """A door's proposed change cannot be found, or cannot be approved as it stands."""


class BookingError(AccessdError, ValueError):
    """A booking cannot be taken as given: an unknown room, an end before the start, a revoked
    member, a calendar or CSV row that means nothing (names the row)."""


class UserError(AccessdError, ValueError):
    """A web user cannot be added or changed as asked (name, role, sites, password)."""


class OfficeActionError(AccessdError, ValueError):
    """An office action on a member cannot be done as asked; `field` names the form field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
