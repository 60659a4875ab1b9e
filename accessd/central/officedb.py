"""The office's own tables beside the doors' data: door health, web users, audit, aggregates.

Created with the rest of the store (`CentralStore` runs `OFFICE_SCHEMA` at open), the same SQL
for SQLite and PostgreSQL. No serial ids: rows are keyed by what they are (a token's hash, a
random id), so `accessd central migrate` copies them as they are.

- `door_status`: each door's latest retained status (online, lock, clock, journal numbers,
  rule version), written by the collector when it changes; `door_alarm_events` remembers
  which door events already raised an alarm, so a copy raises nothing twice.
- `web_users`, `web_sessions`, `web_login_failures`: who may log in to `accessd central web`,
  their sessions (only a hash of the cookie is stored) and failed logins (rate limit).
- `audit_log`: every operator action, who, what, when and from where.
- `office_settings`: retention and the usage report's targets.
- `billing_lines`, `billing_months`: each month's billing figures, frozen once the month is
  over (before the movement log is purged); `usage_months`: the usage report's monthly
  aggregates (counts only, no names).
"""

from __future__ import annotations

OFFICE_SCHEMA = """
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS door_status (
    site TEXT NOT NULL, door TEXT NOT NULL, online INTEGER NOT NULL, status TEXT NOT NULL,
    received_at TEXT NOT NULL, changed_at TEXT NOT NULL, PRIMARY KEY (site, door)
);
CREATE TABLE IF NOT EXISTS door_alarm_events (
    site TEXT NOT NULL, door TEXT NOT NULL, event_id TEXT NOT NULL, ts TEXT NOT NULL,
    PRIMARY KEY (site, door, event_id)
);
CREATE TABLE IF NOT EXISTS web_users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
    sites TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at TEXT NOT NULL, last_seen TEXT NOT NULL, ip TEXT, user_agent TEXT, flash TEXT
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (username);
CREATE TABLE IF NOT EXISTS web_login_failures (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, ip TEXT NOT NULL, ts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS web_login_failures_ts ON web_login_failures (ts);
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, role TEXT, ip TEXT,
    action TEXT NOT NULL, site TEXT, target TEXT, detail TEXT NOT NULL, outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
CREATE TABLE IF NOT EXISTS office_settings (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_months (
    site TEXT NOT NULL, month TEXT NOT NULL, frozen_at TEXT NOT NULL,
    PRIMARY KEY (site, month)
);
CREATE TABLE IF NOT EXISTS billing_lines (
    site TEXT NOT NULL, month TEXT NOT NULL, member_id TEXT NOT NULL,
    member_name TEXT NOT NULL, visits BIGINT NOT NULL, hours DOUBLE PRECISION NOT NULL,
    visits_closed_at_closing_time BIGINT NOT NULL, visits_without_end BIGINT NOT NULL,
    PRIMARY KEY (site, month, member_id)
);
CREATE TABLE IF NOT EXISTS usage_months (
    site TEXT NOT NULL, month TEXT NOT NULL, figures TEXT NOT NULL, computed_at TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (site, month)
);
"""
