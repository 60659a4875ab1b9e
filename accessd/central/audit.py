"""The office's audit log: every operator action, who did it, when, from where, and how it went.

Written by the web application for each action (a log-in too, failed or not) and by the
`user` and `member` commands. The log is kept apart from the movement log: retention does not
purge it. Erasing a member replaces their id in it by the pseudonym their events keep.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from accessd.events import format_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

COLUMNS = ("id", "ts", "actor", "role", "ip", "action", "site", "target", "detail", "outcome")


def record(store: CentralStore, *, actor: str, action: str, role: str | None = None,
           ip: str | None = None, site: str | None = None, target: str | None = None,
           detail: dict[str, Any] | None = None, outcome: str = "done") -> str:
    """One line of the log; returns its id. `outcome`: done, refused, failed."""
    entry = uuid.uuid4().hex
    store.execute(
        f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES "
        f"({', '.join('?' * len(COLUMNS))})",
        (entry, format_ts(utcnow()), actor, role, ip, action, site, target,
         json.dumps(detail or {}, sort_keys=True, ensure_ascii=False), outcome))
    return entry


def entries(store: CentralStore, *, actor: str | None = None, action: str | None = None,
            site: str | None = None, since: str | None = None, until: str | None = None,
            target: str | None = None, limit: int = 200,
            before: str | None = None) -> list[dict[str, Any]]:
    """Newest first, filtered; `before` a timestamp to page back from."""
    where, args = [], []
    for column, value in (("actor", actor), ("action", action), ("site", site),
                          ("target", target)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    for op, value in ((">=", since), ("<", until), ("<", before)):
        if value:
            where.append(f"ts {op} ?")
            args.append(value)
    sql = (f"SELECT {', '.join(COLUMNS)} FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY ts DESC, id LIMIT {int(limit)}")
    out = []
    for r in store.rows(sql, args):
        row = dict(zip(COLUMNS, r, strict=True))
        row["detail"] = json.loads(row["detail"])
        out.append(row)
    return out


def actions(store: CentralStore) -> list[str]:
    return [r[0] for r in store.rows("SELECT DISTINCT action FROM audit_log ORDER BY action")]


def rename_target(store: CentralStore, site: str, old: Iterable[str], new: str) -> int:
    """Replace a member's id by a pseudonym in the log (erasure)."""
    n = 0
    for key in old:
        n += store.execute("UPDATE audit_log SET target = ? WHERE site = ? AND target = ?",
                           (new, site, key)).rowcount
    return n
