"""`accessd doctor`: the way to the office. A real TCP and TLS connection to the configured
broker (the certificate trusted, days until it expires), the door's login, and how far behind
the office's acknowledgements are."""

from __future__ import annotations

import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any

from accessd.cli.doctor import ACTION, INFO, OK, Check, ago
from accessd.cli.timeparse import local_time
from accessd.config import Config
from accessd.events import parse_ts

CERT_WARN_DAYS = 30
OFFICE_LATE_S = 3600.0  # unacknowledged events older than this need a look
BROKER_TIMEOUT_S = 8.0


# -- the broker ------------------------------------------------------------------------------
def check_broker(cfg: Config) -> list[Check]:
    m = cfg.mqtt
    if not m.enabled:
        return [Check("broker", INFO, "not used ([mqtt] enabled = false): events stay in the "
                                      "journal")]
    where = f"{m.host}:{m.port}"
    try:
        sock = socket.create_connection((m.host, m.port), timeout=BROKER_TIMEOUT_S)
    except OSError as exc:
        return [Check("broker", ACTION, f"cannot reach {where}: {exc.strerror or exc}",
                      "check that the broker runs and the network is up, and [mqtt] host "
                      "and port")]
    out = []
    with sock:
        if m.tls:
            cert = _tls(sock, cfg, out)
            if cert is None:
                return out
            out.append(_expiry(cert, where))
        else:
            out.append(Check("broker", INFO, f"{where} reachable, without TLS ([mqtt] tls = "
                                             "false): only on a private network"))
    out.append(_login(cfg))
    return out


def _tls(sock: socket.socket, cfg: Config, out: list[Check]) -> dict[str, Any] | None:
    m = cfg.mqtt
    ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
    if m.cert_file:
        from accessd.credentials import check_secret_permissions

        if m.key_file:
            check_secret_permissions(m.key_file)
        ctx.load_cert_chain(str(m.cert_file), str(m.key_file) if m.key_file else None)
    try:
        with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
            return tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        out.append(Check("broker TLS", ACTION, f"the broker's certificate is not trusted: "
                                               f"{exc.verify_message}",
                         "[mqtt] ca_file must be the CA that signed the broker's certificate, "
                         "and [mqtt] host a name the certificate holds"))
    except (ssl.SSLError, OSError) as exc:
        out.append(Check("broker TLS", ACTION, f"TLS handshake failed: {exc}",
                         "is [mqtt] port the broker's TLS listener (8883)?"))
    return None


def _expiry(cert: dict[str, Any], where: str) -> Check:
    not_after = ssl.cert_time_to_seconds(cert["notAfter"])
    days = int((not_after - time.time()) // 86400)
    if days < 0:
        return Check("broker TLS", ACTION, f"{where}: its certificate expired {-days} days ago",
                     "renew the broker's certificate (scripts/make-site-credentials)")
    if days < CERT_WARN_DAYS:
        return Check("broker TLS", ACTION, f"{where}: certificate trusted; it expires in "
                                           f"{days} days",
                     "renew the broker's certificate before then "
                     "(scripts/make-site-credentials)")
    return Check("broker TLS", OK, f"{where}: certificate trusted, expires in {days} days")


def _login(cfg: Config) -> Check:
    from accessd.protocol.transport import connected_client
    from accessd.uplink.service import broker_settings

    settings = broker_settings(cfg)
    client_id = f"accessd-doctor-{cfg.site.id}-{cfg.site.door}-{time.monotonic_ns() % 10**6}"
    try:
        client = connected_client(settings, client_id, timeout_s=BROKER_TIMEOUT_S)
    except ConnectionError as exc:
        why = str(exc).rsplit(": ", 1)[-1]
        return Check("broker login", ACTION, f"{settings.username or 'anonymous'} refused: "
                                             f"{why}",
                     "[mqtt] username and password_file must match the broker's password "
                     "file (scripts/make-site-credentials)")
    client.disconnect()
    client.loop_stop()
    return Check("broker login", OK, f"{settings.username or 'anonymous'} accepted")


def check_office(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    from accessd.store.journal import Journal

    if not cfg.mqtt.enabled:
        return []
    uplink = (status or {}).get("uplink") or {}
    out = []
    if cfg.mqtt.rules_public_key_file is None:
        out.append(Check("office", ACTION, "no [mqtt] rules_public_key_file: the office's "
                                           "acknowledgements cannot be checked, so events are "
                                           "never marked delivered",
                         "install the office's public key and name it there"))
    if not cfg.storage.journal_db.exists():
        return out
    j = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door, readonly=True)
    try:
        depth, acked = j.depth(), j.acked_seq
        first = j.entries(acked + 1, acked + 1, limit=1)
        last_acked = j.entries(acked, acked, limit=1) if acked else []
    finally:
        j.close()
    tz = cfg.site.tz
    last_ack = uplink.get("last_ack_at")
    heard = (f"last acknowledgement {local_time(parse_ts(last_ack), tz)}" if last_ack else
             f"event {acked} ({local_time(last_acked[0].event.ts, tz)}) acknowledged"
             if last_acked else "nothing acknowledged yet")
    if uplink.get("acks_refused"):
        out.append(Check("office", ACTION, f"{uplink['acks_refused']} acknowledgements "
                                           "refused (not signed by the office's key)",
                         "check [mqtt] rules_public_key_file against the office's key"))
    if not depth:
        out.append(Check("office", OK, f"every event stored by the office; {heard}"))
        return out
    oldest = first[0].event.ts if first else None
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
    text = (f"{depth} event{'s' if depth != 1 else ''} waiting, the oldest from "
            f"{local_time(oldest, tz) if oldest else '?'} ({ago(age)}); {heard}")
    if age > OFFICE_LATE_S:
        return [*out, Check("office", ACTION, text,
                            "check the broker (above) and that the office's collector runs "
                            "(accessd central collect); the events wait safely meanwhile")]
    return [*out, Check("office", OK, text)]
