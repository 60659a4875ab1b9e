"""Home Assistant discovery: ids, payload shapes, total templates, privacy and the lifecycle.

The templates are rendered the way Home Assistant renders them: Jinja2's
ImmutableSandboxedEnvironment (HA's TemplateEnvironment derives from it) with `value_json` the
parsed payload, but with StrictUndefined, so that what HA would log as "Template variable
warning: 'dict object' has no attribute ..." fails here. The lifecycle runs against a real
Mosquitto; the retained discovery configs are read back after every step.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mqtt_broker import PREFIX, Broker, DoorRig, door_config_text, needs_mosquitto, run_broker
from mqtt_broker import wait_for as wait_until

from accessd import __version__
from accessd.config import parse_config
from accessd.decision import GRANT_REASONS, Plan, Reason
from accessd.errors import ConfigError
from accessd.protocol.codec import validate
from accessd.protocol.topics import Topics
from accessd.protocol.transport import connect, connected_client, new_client
from accessd.uplink.homeassistant import (
    DISCOVERY_ID_RE,
    DOOR_TEMPLATE,
    RESULTS,
    Discovery,
    DiscoveryRecord,
    Options,
    discovery_messages,
    legacy_node_id,
    node_id,
    parse_node_id,
    slot_topics,
)
from accessd.uplink.service import wire_status

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
IDS = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True)
# the discovery topic, below the prefix (HA's mqtt/discovery.py TOPIC_MATCHER)
TOPIC_RE = (rf"(?P<component>\w+)/(?:(?P<node_id>{DISCOVERY_ID_RE.pattern})/)?"
            rf"(?P<object_id>{DISCOVERY_ID_RE.pattern})/config")


def render(template: str, payload: dict[str, Any] | bytes) -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ENV.from_string(template).render(value=body.decode(),
                                            value_json=json.loads(body)).strip()


# -- ids ---------------------------------------------------------------------------------
def test_ids_that_collided_before_are_distinct() -> None:
    assert legacy_node_id("a-b", "c") == legacy_node_id("a", "b-c")  # the old bug
    assert node_id("a-b", "c") == "accessd_a-b_c" != node_id("a", "b-c") == "accessd_a_b-c"
    assert node_id("a_b", "c") != node_id("a", "b_c")
    assert node_id("morez", "front") == legacy_node_id("morez", "front")  # common ids keep theirs


@given(IDS, IDS, IDS, IDS)
def test_node_ids_are_injective_valid_and_parse_back(s1: str, d1: str, s2: str, d2: str
                                                     ) -> None:
    a, b = node_id(s1, d1), node_id(s2, d2)
    assert DISCOVERY_ID_RE.fullmatch(a) and DISCOVERY_ID_RE.fullmatch(b)
    assert parse_node_id(a) == (s1, d1)
    assert (a == b) == ((s1, d1) == (s2, d2))
    opts = Options(allow_release=True)
    uids = {(s, d): {p["unique_id"] for _, p in discovery_messages(Topics("x", s, d), opts)}
            for s, d in ((s1, d1), (s2, d2))}
    if (s1, d1) != (s2, d2):
        assert not uids[(s1, d1)] & uids[(s2, d2)]
    assert len(uids[(s1, d1)]) == 3


@given(IDS, IDS)
def test_a_legacy_id_is_another_doors_id_only_when_it_parses(site: str, door: str) -> None:
    legacy = legacy_node_id(site, door)
    other = parse_node_id(legacy)
    assert other is None or node_id(*other) == legacy


# -- payload shapes (Home Assistant 2025.4.4: mqtt/schemas.py, config.py, lock.py,
#    binary_sensor.py, sensor.py; DISCOVERY_SCHEMA drops unknown keys silently) ------------
COMMON = {"availability_topic", "availability_template", "payload_available",
          "payload_not_available", "availability_mode", "availability", "device",
          "entity_picture", "origin", "enabled_by_default", "entity_category", "icon",
          "json_attributes_topic", "json_attributes_template", "object_id", "unique_id",
          "qos", "encoding"}
ALLOWED = {
    "lock": COMMON | {"command_topic", "optimistic", "retain", "state_topic", "code_format",
                      "command_template", "name", "payload_lock", "payload_unlock",
                      "payload_open", "payload_reset", "state_jammed", "state_locked",
                      "state_locking", "state_open", "state_opening", "state_unlocked",
                      "state_unlocking", "value_template"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "device_class",
                               "expire_after", "force_update", "name", "off_delay",
                               "payload_off", "payload_on"},
    "sensor": COMMON | {"state_topic", "value_template", "device_class", "expire_after",
                        "force_update", "last_reset_value_template", "name", "options",
                        "suggested_display_precision", "state_class", "unit_of_measurement"},
}
REQUIRED = {"lock": {"command_topic"}, "binary_sensor": {"state_topic"},
            "sensor": {"state_topic"}}
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "model_id", "name",
               "hw_version", "serial_number", "sw_version", "via_device", "suggested_area",
               "configuration_url"}
ALL_OPTIONS = [Options(allow_release=r, show_names=n, door_contact=c, support_url=u)
               for r, n, c, u in itertools.product((False, True), (False, True),
                                                   (False, True), ("", "https://help.example"))]


@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_payloads_fit_home_assistants_discovery_schemas(options: Options) -> None:
    msgs = discovery_messages(Topics(PREFIX, "s-1", "front_2"), options)
    assert len(msgs) == 2 + options.door_contact
    for topic, payload in msgs:
        m = re.fullmatch(TOPIC_RE, topic.removeprefix("homeassistant/"))
        assert m, topic
        component = m["component"]
        assert set(payload) <= ALLOWED[component], set(payload) - ALLOWED[component]
        assert REQUIRED[component] <= set(payload)
        assert set(payload["device"]) <= DEVICE_KEYS and payload["device"]["identifiers"]
        assert payload["device"]["sw_version"] == __version__
        origin = payload["origin"]
        assert origin["name"] == "accessd" and origin["sw_version"] == __version__
        assert origin.get("support_url", "") == options.support_url
        assert payload["icon"].startswith("mdi:") if "icon" in payload else True
        if component == "sensor":
            assert payload["device_class"] == "enum" and payload["options"] == list(RESULTS)
            assert ("member" in payload["json_attributes_template"]) == options.show_names
        if component == "binary_sensor":
            assert payload["device_class"] in ("lock", "door")
    components = {t.split("/")[1] for t, _ in msgs}
    assert ("lock" in components) == options.allow_release


# -- templates, total over every status the door can publish -----------------------------
def envelope(door: dict[str, Any], *, names: bool = False) -> dict[str, Any]:
    status = {**wire_status(door, names=names), "v": 1, "online": True, "site": "s1",
              "door": "d1", "ts": "2026-11-02T08:30:01.000Z", "rule_version": 3,
              "outbox_depth": 0, "acked_seq": 7}
    validate("status", status)
    return status


def decision(reason: Reason, plan: Plan | None, name: str | None) -> dict[str, Any]:
    return {"ts": "2026-11-02T08:30:00.000Z", "reader": "r1",
            "result": "granted" if reason in GRANT_REASONS else "denied",
            "reason": str(reason), "plan": str(plan) if plan else None, "member_name": name}


def daemon_status(lock: str, door: str, last: dict[str, Any] | None) -> dict[str, Any]:
    return {"lock": {"state": lock}, "door_contact": {"state": door},
            "readers": {"r1": {"online": True}}, "clock": {"trusted": True},
            "last_decision": last}


STATUSES = [
    {"v": 1, "online": False, "site": "s1", "door": "d1"},  # the last will, a clean stop
    envelope({}),  # the uplink alone (python -m accessd.uplink): nothing known
    *(envelope(daemon_status(lock, door, None))  # before the first tap
      for lock in ("locked", "released", "unknown") for door in ("open", "closed", "unknown")),
    *(envelope(daemon_status("locked", "closed", decision(r, p, n)), names=names)
      for r in Reason for p in (*Plan, None) for n in ("Zoé", None) for names in (False, True)),
]
ACCEPTED = {"lock": {"locked", "released", "None"}, "binary_sensor": {"ON", "OFF", "None"},
            "sensor": {*RESULTS, "None"}}


def check_renders(msgs: list[tuple[str, dict[str, Any]]], statuses: list[Any]) -> None:
    """Every template of every entity, against every status: defined, and a value HA takes."""
    for (topic, config), status in itertools.product(msgs, statuses):
        component = topic.split("/")[1]
        try:
            assert render(config["availability_template"], status) in ("online", "offline")
            assert render(config["value_template"], status) in ACCEPTED[component]
            if "json_attributes_template" in config:
                attrs = json.loads(render(config["json_attributes_template"], status))
                assert isinstance(attrs, dict)
                assert set(attrs) <= {"reason", "plan", "reader", "time", "member"}
        except UndefinedError as exc:  # pragma: no cover - the failure being guarded
            raise AssertionError(f"{topic}: {exc} on {status}") from exc


@pytest.mark.parametrize("options", ALL_OPTIONS[:8])
def test_every_template_is_total_over_every_status(options: Options) -> None:
    check_renders(discovery_messages(Topics(PREFIX, "s1", "d1"), options), STATUSES)


def test_the_strict_environment_catches_what_home_assistant_warns_about() -> None:
    """The old templates fail here exactly where HA logged its warnings."""
    offline = STATUSES[0]
    with pytest.raises(UndefinedError, match="has no attribute 'lock'"):
        render("{{ value_json.lock }}", offline)
    with pytest.raises(UndefinedError, match="has no attribute 'last_access'"):
        render("{{ (value_json.last_access or {}).get('reason') }}", offline)


def test_states_read_as_home_assistant_users_expect() -> None:
    opts = Options(allow_release=True, door_contact=True)
    by_object = {t.split("/")[3]: p for t, p in discovery_messages(Topics("x", "s", "d"), opts)}
    unknown_door = envelope(daemon_status("locked", "unknown", None))
    assert render(by_object["door"]["value_template"], unknown_door) == "None"  # not Closed
    assert render(DOOR_TEMPLATE, envelope(daemon_status("locked", "open", None))) == "ON"
    assert render(by_object["lock"]["value_template"], STATUSES[1]) == "None"
    tap = envelope(daemon_status("released", "closed",
                                 decision(Reason.OPENING_HOURS, Plan.OCCASIONAL, "Zoé")))
    assert render(by_object["lock"]["value_template"], tap) == "released"
    assert render(by_object["last_access"]["value_template"], tap) == "granted"
    attrs = json.loads(render(by_object["last_access"]["json_attributes_template"], tap))
    assert attrs == {"reason": "opening_hours", "plan": "occasional", "reader": "r1",
                     "time": "2026-11-02T08:30:00.000Z"}


def test_names_leave_the_door_only_when_the_site_says_so() -> None:
    last = decision(Reason.SUBSCRIBER, Plan.SUBSCRIBER, "Zoé")
    quiet = envelope(daemon_status("locked", "closed", last))
    assert "Zoé" not in json.dumps(quiet, ensure_ascii=False)
    assert quiet["last_access"]["plan"] == "subscriber"
    loud = envelope(daemon_status("locked", "closed", last), names=True)
    assert loud["last_access"]["member_name"] == "Zoé"
    (_, sensor), = [m for m in discovery_messages(Topics("x", "s", "d"),
                                                   Options(show_names=True))
                    if m[0].startswith("homeassistant/sensor/")]
    assert json.loads(render(sensor["json_attributes_template"], loud))["member"] == "Zoé"


# -- configuration -----------------------------------------------------------------------
READER = '[[readers]]\nname = "r"\ntype = "simulated"\n'


def test_configuration_keys() -> None:
    cfg = parse_config(READER)
    assert not cfg.mqtt.homeassistant_show_names and cfg.mqtt.homeassistant_support_url == ""
    cfg = parse_config(READER + '[pins]\ndoor_contact = 0\n[mqtt]\nhomeassistant_show_names = '
                       'true\nhomeassistant_support_url = "https://help.example/doors"\n'
                       'homeassistant_prefix = "ha/discovery"\n')
    opts = Options.from_config(cfg)
    assert opts == Options(ha_prefix="ha/discovery", site_name="site", show_names=True,
                           door_contact=False, support_url="https://help.example/doors")
    for key, value, words in (("homeassistant_support_url", '"ftp://x"', "http"),
                              ("homeassistant_prefix", '"ha/+"', "'+'"),
                              ("homeassistant_prefix", '"ha/"', "empty"),
                              ("homeassistant_show_names", '"yes"', "true or false")):
        with pytest.raises(ConfigError, match=rf"mqtt\.{key}: .*{re.escape(words)}"):
            parse_config(READER + f"[mqtt]\n{key} = {value}\n", "x.toml")


# -- the lifecycle, with a publisher that behaves like paho's ------------------------------
class Delivery:
    def __init__(self) -> None:
        self.acked, self.failed = False, False

    def is_published(self) -> bool:
        if self.failed:
            raise RuntimeError("Message publish failed: the client is not connected")
        return self.acked


class Wire:
    """Records what was published, retained, as a broker would keep it."""

    def __init__(self, record: DiscoveryRecord) -> None:
        self.retained: dict[str, bytes] = {}
        self.deliveries: list[Delivery] = []
        self.record = record
        self.recorded_at_publish: list[set[str] | None] = []

    def __call__(self, topic: str, body: bytes) -> Delivery:
        self.recorded_at_publish.append(self.record.load())
        if body:
            self.retained[topic] = body
        else:
            self.retained.pop(topic, None)
        d = Delivery()
        self.deliveries.append(d)
        return d


def discovery(tmp_path: Path, site: str = "s1", door: str = "d1", *, enabled: bool = True,
              **options: Any) -> tuple[Discovery, DiscoveryRecord]:
    record = DiscoveryRecord(tmp_path / "homeassistant.json")
    return Discovery(Topics(PREFIX, site, door), Options(**options), record,
                     enabled=enabled), record


def test_removals_are_recorded_only_once_acknowledged(tmp_path: Path) -> None:
    d, record = discovery(tmp_path, "a-b", "c")
    wire = Wire(record)
    removed = d.on_connected(wire)
    old, new = legacy_node_id("a-b", "c"), node_id("a-b", "c")
    # no record yet: every slot of both ids is assumed, all but the wanted removed
    assert removed == 8 - 3
    assert set(wire.retained) == d.wanted and all(new in t for t in d.wanted)
    # the record named every topic before anything was published
    assert all(r == slot_topics("homeassistant", old) | slot_topics("homeassistant", new)
               for r in wire.recorded_at_publish)
    assert not d.poll()  # removals not acknowledged yet
    for delivery in wire.deliveries[:2]:
        delivery.acked = True
    assert not d.poll() and len(record.load()) == 8
    wire.deliveries[2].failed = True  # the connection dropped: kept for the next one
    assert not d.poll() and len(record.load()) == 8
    # the next connection sends the removals again; once acknowledged, only the wanted stay
    removed = d.on_connected(wire)
    assert removed == 5
    for delivery in wire.deliveries:
        delivery.acked = True
    assert d.poll() and record.load() == d.wanted
    # a restart with discovery off removes the rest
    off, _ = discovery(tmp_path, "a-b", "c", enabled=False)
    assert off.on_connected(wire) == 3 and wire.retained == {}
    for delivery in wire.deliveries:
        delivery.acked = True
    assert off.poll() and record.load() == set()
    assert discovery(tmp_path, "a-b", "c", enabled=False)[0].on_connected(wire) == 0


def test_an_unreadable_record_is_treated_as_none(tmp_path: Path) -> None:
    d, record = discovery(tmp_path)
    record.path.write_text("{not json")
    assert record.load() is None
    record.path.write_text('{"v": 1, "topics": [1]}')
    assert record.load() is None
    assert d.on_connected(Wire(record)) == 1  # the read-only lock of the older default


def test_a_legacy_id_that_is_now_another_doors_is_left_alone(tmp_path: Path) -> None:
    # door a--b/c used accessd_a__b_c, which is now the id of door a_b/c
    assert legacy_node_id("a--b", "c") == node_id("a_b", "c")
    d, _ = discovery(tmp_path, "a--b", "c")
    assert not any(node_id("a_b", "c") + "/" in t for t in d.assumed)


# -- against a real broker ---------------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker",
                          doors=(("s1", "d1"), ("a-b", "c"), ("a", "b-c")))


def retained(broker: Broker, topic_filter: str = "homeassistant/#") -> dict[str, bytes]:
    """The retained messages under `topic_filter`, as Home Assistant's login reads them.

    Subscribed at QoS 0, then a second subscription: Mosquitto queues the retained messages
    of the first before the acknowledgement of the second, so that acknowledgement marks the
    end of the set.
    """
    got: dict[str, bytes] = {}
    acked: set[int] = set()
    up, done = threading.Event(), threading.Event()
    client = new_client(broker.settings("homeassistant"), f"snap-{uuid.uuid4().hex[:8]}")
    client.on_connect = lambda *_: up.set()
    client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, m.payload) if m.retain \
        else None

    def on_subscribe(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        acked.add(mid)
        done.set()

    client.on_subscribe = on_subscribe
    connect(client, broker.settings("homeassistant"), clean_start=True)
    try:
        assert up.wait(10), "snapshot client did not connect"
        client.subscribe(topic_filter, qos=0)
        _, mid = client.subscribe("homeassistant/accessd-test/end-of-retained", qos=0)
        while mid not in acked:
            assert done.wait(10), "no SUBACK"
            done.clear()
        return dict(got)
    finally:
        client.disconnect()
        client.loop_stop()


def expect_configs(broker: Broker, expected: set[str], message: str) -> dict[str, dict]:
    seen: dict[str, bytes] = {}

    def matches() -> bool:
        seen.clear()
        seen.update(retained(broker))
        return set(seen) == expected

    try:
        wait_until(matches, timeout=20, interval=0.2, message=message)
    except AssertionError:
        raise AssertionError(f"{message}: retained {sorted(seen)}, wanted {sorted(expected)}"
                             ) from None
    return {t: json.loads(p) for t, p in seen.items()}


def door_text(folder: Path, broker: Broker, site: str = "s1", door: str = "d1", *,
              mqtt: str = "", contact: bool = True, extra: str = "") -> str:
    text = door_config_text(folder, broker, site, door, mqtt_extra=mqtt, extra=extra)
    pins = '[pins]\nfactory = "mock"\n'
    assert pins in text
    return text if contact else text.replace(pins, pins + "door_contact = 0\n")


def ha_rig(folder: Path, broker: Broker, site: str = "s1", door: str = "d1", *,
           mqtt: str = "", contact: bool = True) -> DoorRig:
    rig = DoorRig(folder, broker, site, door, mqtt_extra=mqtt)
    rig.config = parse_config(door_text(folder, broker, site, door, mqtt=mqtt, contact=contact),
                              str(folder / "accessd.toml"), folder)
    return rig


def run_once(folder: Path, broker: Broker, expected: set[str], message: str, **kw: Any
             ) -> dict[str, dict]:
    """Start the door with this configuration, check the retained configs, stop it."""
    rig = ha_rig(folder, broker, **kw)
    rig.start()
    try:
        wait_until(lambda: rig.uplink.state()["connected"], message="door online")
        configs = expect_configs(broker, expected, message)
        record = DiscoveryRecord(rig.config.storage.dir / "homeassistant.json")
        wait_until(lambda: record.load() == expected, message=f"{message}: record")
        return configs
    finally:
        rig.close()


@needs_mosquitto
def test_entities_follow_the_configuration_across_restarts(tmp_path: Path, broker: Broker):
    folder, n = tmp_path / "door", node_id("s1", "d1")
    ro = {f"homeassistant/binary_sensor/{n}/lock/config",
          f"homeassistant/binary_sensor/{n}/door/config",
          f"homeassistant/sensor/{n}/last_access/config"}
    rw = ro - {f"homeassistant/binary_sensor/{n}/lock/config"} | {
        f"homeassistant/lock/{n}/lock/config"}
    on = "homeassistant_discovery = true\n"
    configs = run_once(folder, broker, ro, "offered read-only", mqtt=on)
    assert {c["unique_id"] for c in configs.values()} == {f"{n}_lock", f"{n}_door",
                                                         f"{n}_last_access"}
    run_once(folder, broker, rw, "lock offered, its read-only twin gone",
             mqtt=on + "homeassistant_allow_release = true\n")
    run_once(folder, broker, ro, "back to read-only, the lock gone", mqtt=on)
    run_once(folder, broker, ro - {f"homeassistant/binary_sensor/{n}/door/config"},
             "no contact fitted: no door entity", mqtt=on, contact=False)
    run_once(folder, broker, set(), "discovery off: nothing left")
    run_once(folder, broker, set(), "still nothing, nothing to do")


@needs_mosquitto
def test_upgrading_removes_the_old_ids_once(tmp_path: Path, broker: Broker):
    """Two doors whose ids collided before: the old entities go, each door gets its own."""
    old = legacy_node_id("a-b", "c")
    assert old == legacy_node_id("a", "b-c")
    old_topics = {f"homeassistant/{c}/{old}/{o}/config" for c, o in (
        ("binary_sensor", "lock"), ("binary_sensor", "door"), ("sensor", "last_access"))}
    legacy = connected_client(broker.settings("door-a-b-c"), "old-version")
    for topic in old_topics:  # what the version before 0.2 left retained
        legacy.publish(topic, json.dumps({"name": "x", "state_topic": f"{PREFIX}/a-b/c/status"}),
                       qos=1, retain=True).wait_for_publish(10)
    legacy.disconnect()
    legacy.loop_stop()
    expect_configs(broker, old_topics, "the old version's configs")
    on = "homeassistant_discovery = true\n"

    def offered(site: str, door: str) -> set[str]:
        return {t.replace(old, node_id(site, door)) for t in old_topics}

    run_once(tmp_path / "door1", broker, offered("a-b", "c"), "old ids replaced by new ones",
             site="a-b", door="c", mqtt=on)
    second = ha_rig(tmp_path / "door2", broker, "a", "b-c", mqtt=on)
    second.start()
    try:
        configs = expect_configs(broker, offered("a-b", "c") | offered("a", "b-c"),
                                 "two doors side by side")
        assert len({c["unique_id"] for c in configs.values()}) == 6
        assert len({c["device"]["identifiers"][0] for c in configs.values()}) == 2
    finally:
        second.close()


@needs_mosquitto
def test_real_daemon_statuses_render_cleanly_and_carry_no_names(tmp_path: Path,
                                                                 broker: Broker):
    """A real daemon without a door contact: every status it publishes (before a tap, after
    a grant and a denial, its goodbye) renders under every template it offered, and under
    the door template; no status carries the member's name."""
    folder = tmp_path / "door"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "site.key").write_text("42" * 32 + "\n")
    (folder / "data" / "site.key").chmod(0o600)
    config = folder / "accessd.toml"
    config.write_text(door_text(folder, broker, contact=False, extra="[lock]\nrelease_s = 3\n",
                                mqtt="homeassistant_discovery = true\n"
                                     "homeassistant_allow_release = true\n"))
    accessd = [sys.executable, "-m", "accessd", "--config", str(config)]
    r = subprocess.run([*accessd, "enroll", "--name", "Zoé", "--plan", "subscriber",
                        "--card", "0A1B2C3D4E"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    statuses: list[bytes] = []
    ha = connected_client(broker.settings("homeassistant"), "ha-statuses")
    ha.on_message = lambda _c, _u, m: statuses.append(m.payload)
    ha.subscribe(f"{PREFIX}/s1/d1/status", qos=1)

    def last() -> dict[str, Any]:
        return json.loads(statuses[-1]) if statuses else {}

    n = node_id("s1", "d1")
    try:
        with (folder / "daemon.log").open("w") as log:
            proc = subprocess.Popen([*accessd, "run"], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            try:
                wait_until(lambda: last().get("online") is True, message="daemon online")
                configs = expect_configs(
                    broker, {f"homeassistant/lock/{n}/lock/config",
                             f"homeassistant/sensor/{n}/last_access/config"},
                    "a lock and last access, no door entity without a contact")
                assert last()["door_state"] == "unknown" and "last_access" not in last()
                for card, result in (("0A1B2C3D4E", "granted"), ("0000000001", "denied")):
                    with (folder / "taps").open("w") as fh:
                        fh.write(card + "\n")
                    wait_until(lambda r=result: last().get("last_access", {}).get("result")
                               == r, message=f"the {result} tap in the status")
            finally:
                proc.terminate()
                proc.wait(20)
        wait_until(lambda: last().get("online") is False, message="goodbye status")
    finally:
        ha.disconnect()
        ha.loop_stop()
    payloads = [json.loads(s) for s in statuses]
    for p in payloads:
        validate("status", p)
    seen = {(p["online"], (p.get("last_access") or {}).get("reason"),
             (p.get("last_access") or {}).get("plan")) for p in payloads}
    assert {(True, None, None), (True, "subscriber", "subscriber"),
            (True, "unknown_credential", None), (False, None, None)} <= seen
    assert not any("Zoé" in s.decode() for s in statuses)
    door = {"availability_template": configs[f"homeassistant/lock/{n}/lock/config"][
        "availability_template"], "value_template": DOOR_TEMPLATE}
    check_renders([*configs.items(), (f"homeassistant/binary_sensor/{n}/door/config", door)],
                  statuses)


def test_the_payloads_in_the_docs_are_the_ones_sent() -> None:
    """docs/homeassistant.md shows the discovery payloads: each shown key has its real value."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "homeassistant.md").read_text()
    blocks = re.findall(r"```yaml\n# (\S+)[^\n]*\n(.*?)```", doc, re.S)
    assert len(blocks) == 4
    for options in (Options(site_name="La Cordée Morez", support_url=
                            "https://help.example.org/doors"),
                    Options(site_name="La Cordée Morez", allow_release=True)):
        for topic, payload in discovery_messages(Topics(PREFIX, "morez", "front"), options):
            shown = {t: body for t, body in blocks}.get(topic)
            assert shown is not None, topic
            for key, value in re.findall(r"^(\w+): (.+)$", shown, re.M):
                if key in ("device", "origin"):
                    continue
                want = payload[key]
                text = json.loads(value) if value.startswith('"') else value
                if isinstance(want, list):
                    assert text == f"[{', '.join(want)}]", key
                else:
                    assert text == (str(want).lower() if isinstance(want, bool) else str(want)
                                    ), (topic, key)
