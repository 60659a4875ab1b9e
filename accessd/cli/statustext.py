"""`accessd status` as lines a host reads ("Reader door: online", "Lock: locked", "Clock:
trusted (NTP)", "Journal: 12 events waiting for the office"); `--json` keeps the fields."""

from __future__ import annotations

from typing import Any

from accessd.cli.timeparse import local_time
from accessd.clock import trust_words
from accessd.config import Config
from accessd.events import parse_ts
from accessd.words import SHORT_REASONS, alarm_words


def stored_status(cfg: Config, why: str, door: str | None = None) -> dict[str, Any]:
    """What the stores say when the daemon does not answer (`why`: the control error), for
    `door` (a Pi with several doors; default the first)."""
    from accessd.admin import Site

    with Site.open(cfg, door) as site:
        return {"daemon": "not running", "why": why,
                "site": cfg.site.id, "door": cfg.door_spec(door).id,
                "rules": {"version": site.rules.version, **site.rules.counts()},
                "journal": {"last_seq": site.journal.last_seq,
                            "acked_seq": site.journal.acked_seq,
                            "depth": site.journal.depth()}}


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} days {s % 86400 // 3600} h"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def journal_words(journal: dict[str, Any], mqtt: bool) -> str:
    depth = int(journal.get("depth") or 0)
    if not mqtt:
        text = (f"{_plural(int(journal.get('last_seq') or 0), 'event')} kept here (no office "
                "link: [mqtt] enabled = false)")
    elif depth:
        text = f"{_plural(depth, 'event')} waiting for the office"
    else:
        text = "every event delivered to the office"
    if journal.get("writable") is False:
        text += (f"; CANNOT BE WRITTEN (disk full or read-only): "
                 f"{_plural(int(journal.get('held_in_memory') or 0), 'event')} held in memory")
    return text


def _rules(rules: dict[str, Any]) -> str:
    counts = (f"{_plural(int(rules.get('members') or 0), 'member')}, "
              f"{_plural(int(rules.get('credentials') or 0), 'card')}")
    version = rules.get("version")
    if version is None:
        return f"version unusable (see the journal's alarm.rule_cache), {counts}"
    if not version:
        return f"none from the office yet, {counts} enrolled here"
    return f"version {version}, {counts}"


def _uplink(uplink: dict[str, Any], cfg: Config) -> str:
    if not uplink.get("enabled", True) or not cfg.mqtt.enabled:
        return "off ([mqtt] enabled = false)"
    broker = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    if uplink.get("connected"):
        text = f"connected to the broker {broker}"
    else:
        text = f"not connected to the broker {broker}: {uplink.get('last_error') or 'connecting'}"
    if uplink.get("last_ack_at"):
        text += f"; last acknowledgement {local_time(parse_ts(uplink['last_ack_at']), cfg.site.tz)}"
    if uplink.get("acks_refused"):
        text += f"; {_plural(int(uplink['acks_refused']), 'acknowledgement')} refused"
    return text


def _last(last: dict[str, Any], cfg: Config) -> str:
    who = last.get("member_name") or "an unknown card"
    verb = "let in" if last.get("result") == "granted" else "refused"
    why = SHORT_REASONS.get(last.get("reason") or "", last.get("reason") or "")
    when = local_time(parse_ts(last["ts"]), cfg.site.tz) if last.get("ts") else "?"
    return f"{who} {verb} at {last.get('reader')} on {when} ({why})"


def status_lines(status: dict[str, Any], cfg: Config) -> list[str]:
    """The status dict of the daemon (or `stored_status`) as lines."""
    lines: list[str] = []
    if status.get("daemon") != "running":
        why = str(status.get("why") or "").removeprefix("the daemon is not running ")
        lines.append(f"Daemon: not running {why}".rstrip())
        lines.append(f"Journal: {journal_words(status['journal'], cfg.mqtt.enabled)}")
        lines.append(f"Rules: {_rules(status['rules'])}")
        return lines
    lines.append(f"Daemon: running, accessd {status.get('version')}, up "
                 f"{_duration(float(status.get('uptime_s') or 0))} (site {status.get('site')}, "
                 f"door {status.get('door')})")
    for name, r in (status.get("readers") or {}).items():
        state = "online" if r.get("online") else "OFFLINE"
        lines.append(f"Reader {name}: {state} ({r.get('type')}, {r.get('direction')})")
    lock = status.get("lock") or {}
    lines.append(f"Lock: {lock.get('state')} ({lock.get('type')}, relay pin "
                 f"{lock.get('relay_pin')})")
    contact = (status.get("door_contact") or {}).get("state")
    lines.append(f"Door: {'no door contact fitted' if contact in (None, 'unknown') else contact}")
    mode = status.get("mode") or {}
    if mode.get("mode") and (mode["mode"] != "locked" or mode.get("schedule")):
        lines.append(f"Mode: {_mode(mode)}")
    alarms = status.get("alarms") or []
    lines.append(f"Alarms: {'; '.join(alarm_words(a) for a in alarms) if alarms else 'none'}")
    clock = status.get("clock") or {}
    lines.append(f"Clock: {trust_words(cfg.clock.trust, bool(clock.get('trusted')))}")
    lines.append(f"Journal: {journal_words(status.get('journal') or {}, cfg.mqtt.enabled)}")
    rules = status.get("rules") or {}
    lines.append(f"Rules: {_rules(rules)}")
    for key, problem in (rules.get("problems") or {}).items():
        lines.append(f"Rule problem: {key}: {problem}")
    d = status.get("decisions") or {}
    errors = int(d.get("internal_errors") or 0)
    lines.append(f"Decisions since start: {d.get('granted', 0)} let in, {d.get('denied', 0)} "
                 f"refused" + (f", {_plural(errors, 'internal error')}" if errors else ""))
    if status.get("last_decision"):
        lines.append(f"Last decision: {_last(status['last_decision'], cfg)}")
    lines.append(f"Office link: {_uplink(status.get('uplink') or {}, cfg)}")
    for door, other in (status.get("doors") or {}).items():
        if door == status.get("door"):
            continue
        lock = other.get("lock") or {}
        alarms = other.get("alarms") or []
        lines.append(f"Door {door}: lock {lock.get('state')}, {_mode(other.get('mode') or {})}"
                     + (f", alarms: {'; '.join(alarm_words(a) for a in alarms)}"
                        if alarms else "") + " (accessd status --door " + door + ")")
    return lines


def _mode(mode: dict[str, Any]) -> str:
    """The door's mode in words: held unlocked by its schedule, by the host, or locked."""
    words = {"locked": "locked", "unlocked": "held unlocked by its schedule",
             "held_open": "held open by the host until further notice",
             "held_locked": "kept locked by the host until further notice"}
    text = words.get(str(mode.get("mode")), str(mode.get("mode")))
    if mode.get("schedule"):
        text += f" (unlock schedule {mode['schedule']}; now: {mode.get('why')})"
    return text
