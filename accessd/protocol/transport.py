"""How both ends reach the broker: one paho-mqtt 2.x client set up the same way everywhere.

MQTT 5, TLS and a login from configuration, automatic reconnection with capped exponential
back-off. Callers own the callbacks; nothing here blocks.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 8883
    username: str = ""
    password: str = ""
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60

    def __repr__(self) -> str:  # the password never reaches a log line
        return (f"BrokerSettings({self.host}:{self.port}, user={self.username or '-'}, "
                f"tls={self.tls})")


def new_client(settings: BrokerSettings, client_id: str, *, manual_ack: bool = False,
               max_inflight: int = 100) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None,
                       certfile=str(settings.cert_file) if settings.cert_file else None,
                       keyfile=str(settings.key_file) if settings.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
    client.on_socket_open = no_delay
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    return client


def no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """paho's on_socket_open: turn Nagle's algorithm off on the new connection.

    An event, an acknowledgement or a PUBACK is one small packet; with Nagle it waits for the
    peer's (delayed) TCP acknowledgement of the previous one, ~40 ms on Linux loopback.
    """
    raw = getattr(sock, "setsockopt", None)
    if raw is None:  # a websocket wrapper or a test double: nothing to tune
        return
    with contextlib.suppress(OSError):  # not a TCP socket (a Unix socket in tests)
        raw(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def session_properties(expiry_s: int) -> Properties:
    """CONNECT properties asking the broker to keep the session `expiry_s` after a drop."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return props


def connect(client: mqtt.Client, settings: BrokerSettings, *, clean_start: bool,
            session_expiry_s: int = 0) -> None:
    """Start connecting in the background; paho's loop thread reconnects on its own."""
    props = session_properties(session_expiry_s) if session_expiry_s else None
    client.connect_async(settings.host, settings.port, settings.keepalive_s,
                         clean_start=clean_start, properties=props)
    client.loop_start()


def connected_client(settings: BrokerSettings, client_id: str,
                     timeout_s: float = 15.0) -> mqtt.Client:
    """A connected client for one-off publishing (rules, commands); ConnectionError if not."""
    client = new_client(settings, client_id)
    refused: list[str] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: refused.append(str(rc)) if rc.is_failure \
        else None
    connect(client, settings, clean_start=True)
    deadline = time.monotonic() + timeout_s
    while not client.is_connected():
        if refused or time.monotonic() > deadline:
            client.loop_stop()
            why = refused[-1] if refused else f"no answer within {timeout_s:g} s"
            raise ConnectionError(f"cannot connect to the broker {settings}: {why}")
        time.sleep(0.05)
    return client
