"""The topic tree: one branch per site, one per door, under a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

COLLECTOR_GROUP = "accessd-collectors"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topics of one door (`door` empty for the site-wide rule topics only)."""

    prefix: str
    site: str
    door: str = ""

    def _door(self, leaf: str) -> str:
        if not self.door:
            raise ValueError("door topics need a door")
        return f"{self.prefix}/{self.site}/{self.door}/{leaf}"

    @property
    def event(self) -> str:
        return self._door("event")

    @property
    def status(self) -> str:
        return self._door("status")

    @property
    def ack(self) -> str:
        return self._door("ack")

    @property
    def command(self) -> str:
        return self._door("command")

    @property
    def ha_release(self) -> str:
        """Unsigned release from Home Assistant; only its own login may publish here."""
        return self._door("ha/release")

    @property
    def rules_snapshot(self) -> str:
        return f"{self.prefix}/{self.site}/rules/snapshot"

    @property
    def rules_delta(self) -> str:
        return f"{self.prefix}/{self.site}/rules/delta"

    @property
    def rules_request(self) -> str:
        return f"{self.prefix}/{self.site}/rules/request"


def all_events(prefix: str, group: str | None = COLLECTOR_GROUP) -> str:
    """Every door's events, shared between the collectors of `group` (MQTT 5)."""
    topic = f"{prefix}/+/+/event"
    return f"$share/{group}/{topic}" if group else topic


def all_rule_requests(prefix: str, group: str | None = COLLECTOR_GROUP) -> str:
    """Doors asking for a snapshot; shared so that one collector answers each request."""
    topic = f"{prefix}/+/rules/request"
    return f"$share/{group}/{topic}" if group else topic


def all_statuses(prefix: str) -> str:
    """Every door's retained status; not shared: each collector sees every door's."""
    return f"{prefix}/+/+/status"


def parse_door_topic(topic: str, prefix: str) -> tuple[str, str, str] | None:
    """(site, door, leaf) of a door topic, or None when it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix or parts[2] == "rules":
        return None
    return parts[1], parts[2], parts[3]
