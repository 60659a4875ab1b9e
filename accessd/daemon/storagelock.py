"""One daemon per storage folder: an exclusive fcntl lock on `<storage.dir>/daemon.lock`.

Two daemons on one configuration would share the MQTT client id (each kicking the other off
the broker), drive one relay from two processes, and the second would replace the first's
control socket. The lock is taken before any of these is touched; the kernel drops it when the
process ends, however it ends (`kill -9` included), so a stale lock cannot outlive its daemon.
The file holds the holder's PID, for the error the next one prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from accessd.errors import AlreadyRunning, StoreError

LOCK_NAME = "daemon.lock"
LOCK_MODE = 0o640


class StorageLock:
    def __init__(self, folder: Path) -> None:
        self.folder, self.path = folder, folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise AlreadyRunning naming the folder and the holder's PID."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if not (holder.isdigit() and Path(f"/proc/{holder}").exists()):
                holder = "unknown"  # not written yet, or stale (a read-only disk)
            raise AlreadyRunning(
                f"{self.folder}: another accessd daemon (PID {holder}) is running on this "
                f"storage folder (lock {self.path}); stop it first, e.g. systemctl stop "
                "accessd") from None
        with contextlib.suppress(OSError):  # a full or read-only disk: locked all the same
            os.fchmod(fd, LOCK_MODE)  # a fixed mode, not the umask's
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def _open(self) -> int:
        """The lock file, created if need be; read-only on a read-only disk (flock works on
        it), so that the daemon gets as far as the stores' own one-line error."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
        except OSError as exc:
            try:
                return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise StoreError(f"{self.path}: cannot open the daemon lock: "
                                 f"{exc.strerror}") from None

    def release(self) -> None:
        """Let go (the file stays: removing it would let a third daemon lock a new inode)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StorageLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
