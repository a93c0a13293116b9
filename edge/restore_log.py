"""What a restore keeps of the gallery it replaces: its newer events and its erasures.

Why: a backup is older than the gallery it replaces. Restoring it as it was
rewound the audit log (every event since the backup vanished: who came in,
who changed what) and brought back people erased since with ``edge forget``,
which the site owed them. So :func:`edge.backup.restore` reads the old
gallery's events newer than the backup (:func:`newer_events`), and
:func:`carry_over` appends them to the restored copy and erases again each
person a carried ``forget`` names (following renames recorded after it).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .errors import GalleryError
from .gallery import Gallery

_COLUMNS = "ts, mono, kind, name, similarity, liveness, decision, reason, actor, detail"


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def newer_events(old: Path, backup: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The events of gallery ``old`` newer than the newest in ``backup``, oldest first.

    Also why they could not be read (None if they could, or there is no
    ``old``). "Newer" is by row id when ``backup`` is a copy of ``old`` (its
    newest event is in ``old`` with the same id, time and kind), else by time.
    """
    if not old.exists():
        return [], None
    try:
        conn = _ro(backup)
        try:
            last = conn.execute(
                "SELECT id, ts, kind FROM events ORDER BY id DESC LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
        conn = _ro(old)
        conn.row_factory = sqlite3.Row
        try:
            if last is None:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY id").fetchall()
            else:
                same = conn.execute(
                    "SELECT 1 FROM events WHERE id = ? AND ts = ? AND kind = ?", list(last)
                ).fetchone()
                where, arg = ("id > ?", last[0]) if same else ("ts > ?", last[1])
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY id", [arg]
                ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return [], str(e)
    return [dict(r) for r in rows], None


def _forgotten(events: list[dict[str, Any]]) -> list[str]:
    """The names, as the backup knows them, of people the events say were erased."""
    alias: dict[str, str] = {}  # name now -> name in the backup
    out = []
    for e in events:
        if e["kind"] == "rename" and e["detail"]:
            d = json.loads(e["detail"])
            if isinstance(d, dict) and {"old", "new"} <= d.keys():
                alias[d["new"]] = alias.pop(d["old"], d["old"])
        elif e["kind"] == "forget" and e["name"]:
            out.append(alias.pop(e["name"], e["name"]))
    return out


def carry_over(
    g: Gallery, events: list[dict[str, Any]], *, keep_events: bool = True
) -> tuple[int, list[str]]:
    """Append ``events`` to ``g`` (unless not ``keep_events``) and re-apply their forgets.

    One transaction. Returns how many events were carried and whom it erased
    (only people ``g`` still holds). Erasures are re-applied even when the
    events are discarded: erasure was owed to the person, not to the log.
    """
    db = g.db.conn
    erased = []
    try:
        db.execute("BEGIN IMMEDIATE")
        if keep_events and events:
            db.executemany(
                f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                [[e[c.strip()] for c in _COLUMNS.split(",")] for e in events],
            )
        for name in dict.fromkeys(_forgotten(events)):
            row = db.execute("SELECT id FROM people WHERE name = ?", [name]).fetchone()
            if row is not None:
                db.execute("DELETE FROM templates WHERE person_id = ?", [row[0]])
                db.execute("DELETE FROM people WHERE id = ?", [row[0]])
                erased.append(name)
        if erased:
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        db.execute("COMMIT")
    except sqlite3.Error as e:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise GalleryError(f"{g.path}: cannot carry the newer events over ({e})") from None
    return (len(events) if keep_events else 0), erased
