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


class JournalFullError(StoreError, OSError):
    """The journal's filesystem refuses writes (full or read-only)."""


class MemberNotFound(AccessdError, LookupError):
    """No member or credential matches what was asked for."""


class DuplicateCredential(AccessdError, ValueError):
    """The card is already enrolled to a member."""


class HardwareError(AccessdError, OSError):
    """A GPIO device (lock relay, door contact, exit button) could not be set up."""


class ControlError(AccessdError, ConnectionError):
    """The running daemon could not be reached over its control socket."""


class ProtocolError(AccessdError, ValueError):
    """A network message is malformed, too large, unsigned, badly signed, stale or replayed."""


class RevokedError(AccessdError, ValueError):
    """A revoked member or card cannot be made active or suspended again, nor re-enrolled."""


class OfficeOwnedError(AccessdError, PermissionError):
    """The change would make an office member more privileged: only the office can do that."""


class ProposalError(AccessdError, LookupError):
    """A door's proposed change cannot be found, or cannot be approved as it stands."""
