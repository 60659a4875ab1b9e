"""The daemon's local control socket: how the host's CLI talks to the running door.

A Unix stream socket (mode 0660, so only root and the service's group reach it) carrying one
JSON request line and one JSON response line. It serves `status`, `open` (a logged manual
release) and `capture` (take the next card presented, for enrolment at the reader).

Each handler is told who is calling from the kernel's peer credentials (SO_PEERCRED), not from
anything the caller writes, so that a manual release names the account that ordered it. A
socket another daemon still answers on is never replaced, and a stopping server removes only
its own socket file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accessd.errors import ControlError

log = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024


@dataclass(frozen=True, slots=True)
class Peer:
    """The process on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, conn: socket.socket) -> Peer:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return cls(*struct.unpack("3i", raw))

    @property
    def user(self) -> str:
        """The account's name (or "uid N" when it has none)."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


Handler = Callable[[dict[str, Any], Peer], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path, self.handlers = path, handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._identity: tuple[int, int] | None = None  # (device, inode) of our socket file

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            raise ControlError(f"{self.path}: another daemon answers on this control socket; "
                               "stop it first")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a daemon that is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(2)
        if self._sock:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            st = self.path.stat()
            if (st.st_dev, st.st_ino) == self._identity:  # never another daemon's socket
                self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="control-client",
                             daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = json.loads(_read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                handler = self.handlers.get(str(request.get("op")))
                if handler is None:
                    response = {"ok": False, "error": f"unknown operation {request.get('op')!r}"}
                else:
                    conn.settimeout(None)
                    response = {"ok": True, **handler(request, Peer.of(conn))}
            except (ValueError, OSError) as exc:
                response = {"ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("control request failed")
                response = {"ok": False, "error": f"internal error: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(response, default=str).encode() + b"\n")


def _answers(path: Path) -> bool:
    """Whether a live server is listening on the socket at `path`."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
    except OSError:
        return False
    return True


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return data


def call(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the running daemon; ControlError if it is not there or refuses."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(sock)
    except FileNotFoundError:
        raise ControlError(f"the daemon is not running (no control socket at {path})") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (the host's commands go through "
                           "sudo and the accessd-host wrapper: see docs/operations.md)") from None
    except (ConnectionRefusedError, TimeoutError, OSError) as exc:
        raise ControlError(f"the daemon did not answer on {path}: {exc}") from None
    try:
        response = json.loads(reply)
    except ValueError:
        raise ControlError("the daemon sent an unreadable answer") from None
    if not response.get("ok"):
        raise ControlError(str(response.get("error", "request refused")))
    return response
