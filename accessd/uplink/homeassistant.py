"""Home Assistant MQTT discovery: each door as a device with a lock, a door contact and last access.

All entities read the door's retained status topic, so Home Assistant needs no extra traffic.
The lock is controllable only when the site sets `homeassistant_allow_release`: then a `lock`
entity sends "UNLOCK" to `<door>/ha/release`, a topic the broker's ACL lets only the Home
Assistant login write (docs/broker.md). Otherwise the lock state appears read-only, as a
binary sensor of class `lock`. A door without a contact (`pins.door_contact = 0`) offers no
door entity rather than one that is unknown forever.

Every template is total: whatever status the door publishes (before the first tap, after any
decision, the offline last will, a door or lock state that is unknown), it renders a value the
entity accepts, or "None", which Home Assistant shows as unknown. Member names reach Home
Assistant only with `homeassistant_show_names` (docs/homeassistant.md: its recorder keeps
history outside the door's retention).

Entities that are no longer offered (an option changed, discovery turned off, the ids of an
older version) are removed by publishing an empty retained config. Which config topics may
hold a retained config is kept in a small file (`DiscoveryRecord`), so a restart after an edit
of the configuration still knows what to remove.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from accessd import __version__
from accessd.config import Config, DoorSpec
from accessd.protocol.codec import encode
from accessd.protocol.topics import Topics

log = logging.getLogger(__name__)

UNLOCK = "UNLOCK"
ORIGIN_NAME = "accessd"
RESULTS = ("granted", "denied")
# every (component, object id) any version of accessd has published for a door
ENTITY_SLOTS = (("lock", "lock"), ("binary_sensor", "lock"), ("binary_sensor", "door"),
                ("sensor", "last_access"))
# Home Assistant's pattern for the node id and object id levels of a discovery topic
DISCOVERY_ID_RE = re.compile(r"[a-zA-Z0-9_-]+")


# -- ids -------------------------------------------------------------------------------------
def node_id(site: str, door: str) -> str:
    """The door's node id: `accessd_<site>_<door>` with each `_` of the ids doubled.

    Site and door ids are `[a-z0-9][a-z0-9_-]*` (accessd/config.py), so every run of `_` inside
    an encoded id has even length and the separator is the first odd run: the id is injective,
    `a-b`/`c` and `a`/`b-c` differ, and it stays within `[a-zA-Z0-9_-]`. Ids with neither `_`
    nor `-` keep the node id that 0.1.0 gave them.
    """
    return f"accessd_{site.replace('_', '__')}_{door.replace('_', '__')}"


def parse_node_id(node: str) -> tuple[str, str] | None:
    """(site, door) of a node id made by `node_id`, or None when it is not one."""
    m = re.fullmatch(r"accessd_((?:[a-z0-9-]|__)+?)_([a-z0-9](?:[a-z0-9-]|__)*)", node)
    if not m or not m.group(1)[0].isalnum():
        return None
    site, door = (g.replace("__", "_") for g in m.groups())
    return (site, door) if node_id(site, door) == node else None


def legacy_node_id(site: str, door: str) -> str:
    """The node id of 0.1.0 and earlier (`-` became `_`, hence collisions); cleanup only."""
    return f"accessd_{site}_{door}".replace("-", "_")


def config_topic(ha_prefix: str, component: str, node: str, object_id: str) -> str:
    return f"{ha_prefix}/{component}/{node}/{object_id}/config"


def slot_topics(ha_prefix: str, node: str) -> set[str]:
    """Every config topic any version may have used for this node."""
    return {config_topic(ha_prefix, c, node, o) for c, o in ENTITY_SLOTS}


# -- the messages ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    """What the site chose ([mqtt] homeassistant_* and whether a door contact is fitted)."""

    ha_prefix: str = "homeassistant"
    site_name: str = ""
    allow_release: bool = False
    show_names: bool = False
    door_contact: bool = True
    support_url: str = ""

    @classmethod
    def from_config(cls, config: Config, door: DoorSpec | None = None) -> Options:
        m = config.mqtt
        pins = (door or config.door_spec()).pins
        return cls(ha_prefix=m.homeassistant_prefix, site_name=config.site.name,
                   allow_release=m.homeassistant_allow_release,
                   show_names=m.homeassistant_show_names,
                   door_contact=pins.door_contact != 0,
                   support_url=m.homeassistant_support_url)


def _two_state(key: str, on: str, off: str) -> str:
    """ON/OFF for two known values of `key`, "None" (unknown) for anything else."""
    return (f"{{% set s = value_json.get('{key}') %}}"
            f"{{{{ 'ON' if s == '{on}' else 'OFF' if s == '{off}' else 'None' }}}}")


LAST = "{% set a = value_json.get('last_access') or {} %}"
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.get('online') else 'offline' }}"
LOCK_TEMPLATE = ("{% set s = value_json.get('lock') %}"
                 "{{ s if s in ('locked', 'released') else 'None' }}")
LOCK_SENSOR_TEMPLATE = _two_state("lock", "released", "locked")  # class lock: ON = unlocked
DOOR_TEMPLATE = _two_state("door_state", "open", "closed")
LAST_ACCESS_TEMPLATE = (LAST + "{{ a.get('result') if a.get('result') in "
                        f"{RESULTS!r} else 'None' }}}}")


def _attributes_template(show_names: bool) -> str:
    member = ", 'member': a.get('member_name')" if show_names else ""
    return (LAST + "{{ {'reason': a.get('reason'), 'plan': a.get('plan'), "
            f"'reader': a.get('reader'), 'time': a.get('ts'){member}}} | tojson }}}}")


def discovery_messages(topics: Topics, options: Options) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, payload) pairs to publish retained, in Home Assistant's full key names
    (docs/homeassistant.md shows them as Home Assistant does)."""
    node = node_id(topics.site, topics.door)
    origin = {"name": ORIGIN_NAME, "sw_version": __version__}
    if options.support_url:
        origin["support_url"] = options.support_url
    device = {"identifiers": [node], "name": f"{options.site_name or topics.site} {topics.door}",
              "manufacturer": "accessd", "model": "door controller",
              "sw_version": __version__}
    common = {
        "device": device,
        "origin": origin,
        "state_topic": topics.status,
        "availability_topic": topics.status,
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
    }

    def entity(component: str, object_id: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return (config_topic(options.ha_prefix, component, node, object_id),
                {**common, "unique_id": f"{node}_{object_id}", **fields})

    out = []
    if options.allow_release:
        out.append(entity("lock", "lock", name="Lock", value_template=LOCK_TEMPLATE,
                          state_locked="locked", state_unlocked="released",
                          command_topic=topics.ha_release, payload_unlock=UNLOCK,
                          payload_lock="LOCK", optimistic=False))
    else:
        out.append(entity("binary_sensor", "lock", name="Lock", device_class="lock",
                          value_template=LOCK_SENSOR_TEMPLATE))
    if options.door_contact:
        out.append(entity("binary_sensor", "door", name="Door", device_class="door",
                          value_template=DOOR_TEMPLATE))
    out.append(entity("sensor", "last_access", name="Last access", icon="mdi:badge-account",
                      device_class="enum", options=list(RESULTS),
                      value_template=LAST_ACCESS_TEMPLATE,
                      json_attributes_topic=topics.status,
                      json_attributes_template=_attributes_template(options.show_names)))
    return out


# -- the lifecycle ---------------------------------------------------------------------------
class DiscoveryRecord:
    """The config topics that may hold a retained config of this door, kept across restarts.

    A small JSON file beside the journal, replaced atomically (write, fsync, rename), so that
    a power cut leaves the old list or the new one. Topics enter it before their config is
    published and leave it only once their removal was acknowledged by the broker.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> set[str] | None:
        """The recorded topics; None when there is no record yet (or it cannot be read)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable Home Assistant record %s: %s", self.path, exc)
            return None
        topics = data.get("topics") if isinstance(data, dict) else None
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            log.warning("ignoring the malformed Home Assistant record %s", self.path)
            return None
        return set(topics)

    def save(self, topics: Iterable[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"v": 1, "topics": sorted(set(topics))}, indent=1) + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class Delivery(Protocol):
    """What a publish returns (paho's MQTTMessageInfo)."""

    def is_published(self) -> bool: ...


Publish = Callable[[str, bytes], Delivery]


class Discovery:
    """Offers the wanted entities and removes the others, once per connection.

    `on_connected` publishes an empty retained config for every recorded topic that is no
    longer wanted, then the wanted configs, in that order (an entity whose id changed is
    removed before its successor appears). `poll` rewrites the record once the broker has
    acknowledged every removal; until then the next connection tries again. Without a record
    (the first start of this version, or a lost file), every topic an older version may have
    used for this door is assumed to be there.
    """

    def __init__(self, topics: Topics, options: Options, record: DiscoveryRecord, *,
                 enabled: bool) -> None:
        self.record = record
        self.messages = discovery_messages(topics, options) if enabled else []
        self.wanted = {t for t, _ in self.messages}
        node = node_id(topics.site, topics.door)
        self.assumed = slot_topics(options.ha_prefix, node)
        legacy = legacy_node_id(topics.site, topics.door)
        if legacy != node:
            if parse_node_id(legacy) is None:
                self.assumed |= slot_topics(options.ha_prefix, legacy)
            else:  # that id is another door's current one: leave it alone
                log.info("not removing old Home Assistant id %s: it names another door now",
                         legacy)
        self._pending: list[Delivery] | None = None  # removals sent, not yet acknowledged
        self._known: set[str] = set()

    def on_connected(self, publish: Publish) -> int:
        """Remove what is no longer offered, offer the rest; returns how many were removed."""
        recorded = self.record.load()
        known = set(self.assumed) if recorded is None else recorded
        stale = known - self.wanted
        self._known = known | self.wanted
        if recorded != self._known:
            self._save(self._known)  # before publishing: a crash still knows them
        self._pending = [publish(topic, b"") for topic in sorted(stale)]
        for topic, payload in self.messages:
            publish(topic, encode(payload))
        if stale:
            log.info("removing %d Home Assistant entit%s no longer offered", len(stale),
                     "y" if len(stale) == 1 else "ies")
        self.poll()
        return len(stale)

    def poll(self) -> bool:
        """Record the removals the broker acknowledged; True when nothing is pending."""
        if self._pending is None:
            return True
        try:
            done = all(p.is_published() for p in self._pending)
        except (RuntimeError, ValueError):  # not sent (disconnected): the next connection
            return False
        if done:
            self._pending = None
            if self._known != self.wanted and self._save(self.wanted):
                self._known = set(self.wanted)
        return done

    def _save(self, topics: set[str]) -> bool:
        """Keep the record; a full or read-only disk costs only a later cleanup, never HA."""
        try:
            self.record.save(topics)
            return True
        except OSError as exc:
            log.warning("cannot write the Home Assistant record %s: %s", self.record.path, exc)
            return False
