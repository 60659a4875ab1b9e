"""Home Assistant MQTT discovery: each door as a device with a lock, a contact and last access.

All entities read the door's retained status topic, so Home Assistant needs no extra traffic.
The lock is controllable only when the site sets `homeassistant_allow_release`: then a `lock`
entity sends "UNLOCK" to `<door>/ha/release`, a topic the broker's ACL lets only the Home
Assistant login write (docs/broker.md). Otherwise the lock state appears read-only, as a
binary sensor of class `lock`.
"""

from __future__ import annotations

from typing import Any

from accessd.protocol.topics import Topics

UNLOCK = "UNLOCK"


def discovery_messages(topics: Topics, *, ha_prefix: str, site_name: str,
                       allow_release: bool) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, payload) pairs to publish retained."""
    node = f"accessd_{topics.site}_{topics.door}".replace("-", "_")
    device = {"identifiers": [node], "name": f"{site_name} {topics.door}",
              "manufacturer": "accessd", "model": "door controller"}
    common = {
        "device": device,
        "state_topic": topics.status,
        "availability_topic": topics.status,
        "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    out: list[tuple[str, dict[str, Any]]] = []
    if allow_release:
        out.append((f"{ha_prefix}/lock/{node}/lock/config", {
            **common, "name": "Lock", "unique_id": f"{node}_lock",
            "value_template": "{{ value_json.lock }}",
            "state_locked": "locked", "state_unlocked": "released",
            "command_topic": topics.ha_release, "payload_unlock": UNLOCK,
            "payload_lock": "LOCK", "optimistic": False,
        }))
    else:
        out.append((f"{ha_prefix}/binary_sensor/{node}/lock/config", {
            **common, "name": "Lock", "unique_id": f"{node}_lock", "device_class": "lock",
            "value_template": "{{ 'ON' if value_json.lock == 'released' else 'OFF' }}",
        }))
    out.append((f"{ha_prefix}/binary_sensor/{node}/door/config", {
        **common, "name": "Door", "unique_id": f"{node}_door", "device_class": "door",
        "value_template": "{{ 'ON' if value_json.door_state == 'open' else 'OFF' }}",
    }))
    out.append((f"{ha_prefix}/sensor/{node}/last_access/config", {
        **common, "name": "Last access", "unique_id": f"{node}_last_access",
        "icon": "mdi:badge-account",
        "value_template": "{{ (value_json.last_access or {}).get('member_name') "
                          "or (value_json.last_access or {}).get('reason') or 'none' }}",
        "json_attributes_topic": topics.status,
        "json_attributes_template": "{{ (value_json.last_access or {}) | tojson }}",
    }))
    return out
