"""The shipped Mosquitto config and the site credentials script, run for real."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from mqtt_broker import MOSQUITTO, free_port, needs_mosquitto, wait_for

from accessd.protocol.transport import BrokerSettings, connected_client, no_delay

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [needs_mosquitto,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]


def test_shipped_config_with_generated_credentials(tmp_path: Path):
    out = tmp_path / "site"
    subprocess.run([str(ROOT / "scripts" / "make-site-credentials"), "--site", "morez",
                    "--doors", "front,back", "--out", str(out), "--broker-host", "localhost"],
                   check=True, capture_output=True)
    port = free_port()
    conf = (ROOT / "config" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (conf.replace("/etc/mosquitto/accessd/tls", str(out / "broker" / "tls"))
            .replace("/etc/mosquitto/accessd", str(out / "broker"))
            .replace("/var/lib/mosquitto/", f"{tmp_path}/data/")
            .replace("listener 8883", f"listener {port} 127.0.0.1")
            .replace("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log"))
    (tmp_path / "data").mkdir()
    (tmp_path / "mosquitto.conf").write_text("user root\n" + conf)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")],
                            stderr=subprocess.PIPE)
    clients = []
    try:
        wait_for(lambda: proc.poll() is not None or _listening(port),
                 message="the shipped config's listener")
        assert proc.poll() is None, proc.stderr.read().decode()

        def login(user: str, pwfile: Path, ca: Path) -> object:
            s = BrokerSettings(host="localhost", port=port, username=user,
                               password=pwfile.read_text().strip(), tls=True, ca_file=ca)
            c = connected_client(s, f"t-{user}")
            clients.append(c)
            return c

        central = login("central", out / "central" / "central.pw", out / "broker/tls/ca.crt")
        got: list[str] = []
        subscribed = threading.Event()
        central.on_message = lambda _c, _u, m: got.append(m.topic)
        central.on_subscribe = lambda *_: subscribed.set()
        central.subscribe("$share/g/accessd/+/+/event", qos=1)
        assert subscribed.wait(10), "no SUBACK from the broker"
        door = login("door-morez-front", out / "doors/front/mqtt.pw",
                     out / "doors/front/ca.crt")
        door.publish("accessd/morez/back/event", b"{}", qos=1).wait_for_publish(5)
        door.publish("accessd/morez/front/event", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: got, message="the door's own event")
        # one publisher, one subscriber: messages arrive in the order they were sent, so had
        # the ACL let the other door's topic through, it would be here before this one
        assert got == ["accessd/morez/front/event"]
        # small packets leave at once: Nagle is off on the clients' sockets (and the broker's)
        for c in clients:
            sock = c.socket()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert "\nset_tcp_nodelay true\n" in conf
        _largest_snapshot_passes_and_a_larger_packet_is_refused(central, door)
        assert (out / "doors/front/mqtt.pw").stat().st_mode & 0o077 == 0
        assert (out / "doors/front/site.key").read_text() == \
            (out / "doors/back/site.key").read_text()
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        proc.terminate()
        proc.wait(10)
    said = proc.stderr.read().decode() + (tmp_path / "mosquitto.log").read_text()
    settings = [line.split()[0] for line in conf.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "max_packet_size" in settings and "message_size_limit" not in settings
    assert "recommended to replace" not in said, said  # nothing deprecated in the config


def _largest_snapshot_passes_and_a_larger_packet_is_refused(central, door) -> None:
    """`max_packet_size` admits a rule snapshot of the doors' rules_max_bytes (32 MiB) with
    its topic and headers, and refuses a larger packet (its sender is disconnected)."""
    from accessd.config import MqttConfig

    limit = MqttConfig().rules_max_bytes
    got: list[int] = []
    subscribed = threading.Event()
    door.on_message = lambda _c, _u, m: got.append(len(m.payload))
    door.on_subscribe = lambda *_: subscribed.set()
    door.subscribe("accessd/morez/rules/snapshot", qos=1)
    assert subscribed.wait(10), "no SUBACK from the broker"
    central.publish("accessd/morez/rules/snapshot", b"x" * limit, qos=1).wait_for_publish(30)
    wait_for(lambda: got, timeout=30, message="the 32 MiB snapshot at the door")
    assert got == [limit]
    dropped = threading.Event()
    central.on_disconnect = lambda *_: dropped.set()
    central.publish("accessd/morez/rules/snapshot", b"x" * 33619968, qos=1)
    assert dropped.wait(30), "the broker kept a client that sent a packet over the limit"
    assert got == [limit]


def test_no_delay_sets_tcp_nodelay_and_tolerates_sockets_without_tcp():
    with socket.create_server(("127.0.0.1", 0)) as server:
        tcp = socket.create_connection(server.getsockname())
        try:
            assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            no_delay(None, None, tcp)  # type: ignore[arg-type]
            assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            tcp.close()
    a, b = socket.socketpair()  # a Unix socket: TCP_NODELAY does not apply, and no error
    try:
        no_delay(None, None, a)  # type: ignore[arg-type]
        a.sendall(b"still usable")
        assert b.recv(64) == b"still usable"
    finally:
        a.close()
        b.close()
    no_delay(None, None, object())  # type: ignore[arg-type]  # no setsockopt: left alone


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
