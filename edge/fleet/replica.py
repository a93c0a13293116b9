"""The door's replica of the centre: applying what a pull read to the local gallery.

:func:`read_changes` reads a batch of the change log and the state it points
at from one snapshot; :func:`apply` writes it into the gallery in ONE SQLite
transaction, together with the revision it brings the door to (``meta``), so
a crash leaves the gallery either as before or fully at the new revision. A
person's row, access rule, card and templates become the centre's (templates
unsealed with the fleet key and re-sealed under the door's own gallery key,
keeping the centre's ids, to which the seals are bound); removals and erasures
are done as ``edge remove`` / ``edge forget`` do them. The contract being
applied is in :mod:`edge.fleet`. Used by :mod:`edge.fleet.sync`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg

from .. import identity
from ..crypto import seal
from ..errors import GalleryError
from ..records import EMBEDDING_BYTES
from ..rules import RuleError, parse_schedule
from ..sealing import _aad
from . import store
from .connect import describe

if TYPE_CHECKING:
    from ..gallery import Gallery

log = logging.getLogger("edge.fleet")

#: The gallery's ``meta`` keys of the revision held and the last event pushed.
REVISION_KEY = "fleet_revision"
PUSHED_KEY = "fleet_pushed"
#: Local event ids from SHIFT_FROM_KEY on go to the centre as id + SHIFT_KEY
#: (set when a restore reused ids the centre already holds: see DoorSync.push).
SHIFT_FROM_KEY = "fleet_shift_from"
SHIFT_KEY = "fleet_shift"


def meta_value(g: Gallery, key: str) -> int:
    """A counter in the gallery's ``meta`` table (0 when never set)."""
    row = g.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return int(row[0]) if row else 0


def _set_meta(g: Gallery, key: str, value: int) -> None:
    g.db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def read_changes(
    conn: psycopg.Connection[Any], since: int, key: bytes, limit: int, applied: dict[int, int]
) -> tuple[store.Pull, int]:
    """Up to ``limit`` changes after ``since`` and the current state of the people they name,
    from one REPEATABLE READ snapshot (as :func:`edge.fleet.store.pull`), and that
    snapshot's head revision.

    People in ``applied`` whose state was read from a snapshot at or past a change
    are not read again for it: a long catch-up (an import logs each person twice,
    once for the row and once for the templates) reads each person once.
    """
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            top = store.head(conn)
            rows = conn.execute(
                "SELECT revision, kind, person_id, name, actor, ts FROM changes"
                " WHERE revision > %s ORDER BY revision LIMIT %s", [since, limit]).fetchall()
            changes = tuple(store.Change(int(r[0]), r[1], int(r[2]), r[3], r[4],
                                         store.iso(r[5]) or "") for r in rows)
            final: dict[int, store.Change] = {}
            for c in changes:
                final[c.person_id] = c
            wanted = sorted(pid for pid, c in final.items()
                            if c.kind == "person" and applied.get(pid, -1) < c.revision)
            found = {p.id: p for p in store.people(conn, wanted)} if wanted else {}
            temps = store.templates(conn, key, list(found)) if found else {}
    except psycopg.Error as e:
        raise describe(e, "pull changes") from None
    # A person left out of ``people`` is skipped by apply(): already up to date.
    pull = store.Pull(
        revision=changes[-1].revision if changes else since,
        changes=changes,
        people={p: found.get(p) for p in wanted},
        templates=temps,
    )
    return pull, top


def apply(g: Gallery, p: store.Pull, held: int) -> int | None:
    """Apply the pull ``p`` (read after revision ``held``) in one transaction; people touched.

    None, writing nothing, if the gallery's revision moved meanwhile (an
    ``edge sync`` beside the daemon's worker): the caller reads again from there.
    """
    from ..people import _Unchanged

    key = g._sealing_key()
    forgot = False
    last = p.last
    try:
        with g._write("fleet sync"):
            if meta_value(g, REVISION_KEY) != held:
                raise _Unchanged
            touched = _apply(g, p, key, last)
            forgot = any(c.kind == "forget" for c in last)
    except _Unchanged:
        return None
    if forgot:
        g._checkpoint()  # an erased person's pages out of the WAL, as edge forget does
    return touched


def _apply(g: Gallery, p: store.Pull, key: bytes, last: tuple[store.Change, ...]) -> int:
    """The writes of :func:`apply`, inside its transaction."""
    from ..cards import _SCHEMA

    g.db.execute(_SCHEMA)  # the cards table, made on first use as edge set --card does
    names = _Names(g.db.execute("SELECT id, name FROM people").fetchall())
    touched = 0
    for c in last:
        if c.kind == "person":
            person = p.people.get(c.person_id)
            if person is not None:  # None: gone (a removal follows) or already up to date
                _put_person(g, key, person, p.templates.get(c.person_id, ()), names)
                touched += 1
        else:
            _drop_person(g, c.person_id, names)
            touched += 1
    _set_meta(g, REVISION_KEY, p.revision)
    g._audit("sync", None, revision=p.revision, changes=len(p.changes), people=touched)
    return touched


class _Names:
    """The local people's name keys, both ways: a central person's name may be held by a
    stale local row (the centre wins), and a rename frees the old one."""

    def __init__(self, rows: list[tuple[int, str]]) -> None:
        self.by_key = {identity.name_key(n): int(i) for i, n in rows}
        self.by_id = {i: k for k, i in self.by_key.items()}

    def forget(self, pid: int) -> None:
        key = self.by_id.pop(pid, None)
        if key is not None and self.by_key.get(key) == pid:
            del self.by_key[key]

    def take(self, pid: int, key: str) -> None:
        self.forget(pid)
        self.by_key[key] = pid
        self.by_id[pid] = key


def _drop_person(g: Gallery, person_id: int, names: _Names) -> None:
    g.db.execute("DELETE FROM templates WHERE person_id = ?", [person_id])
    g.db.execute("DELETE FROM people WHERE id = ?", [person_id])
    names.forget(person_id)


def _put_person(
    g: Gallery,
    key: bytes,
    person: store.FleetPerson,
    templates: tuple[store.FleetTemplate, ...],
    names: _Names,
) -> None:
    """Make the local copy of ``person`` the centre's: row, rule, card and templates."""
    pid = person.id
    name_key = identity.name_key(person.name)
    other = names.by_key.get(name_key)
    if other is not None and other != pid:  # a stale local row under that name: the centre wins
        _drop_person(g, other, names)
    names.take(pid, name_key)
    schedule, active = person.schedule, person.active
    if schedule is not None:
        try:
            schedule = parse_schedule(schedule).column()
        except RuleError as e:  # the centre checks schedules; fail secure if one slips by
            log.warning("fleet: %s: %s; disabled at this door", person.name, e)
            schedule, active = None, False
    row = {
        "id": pid,
        "name": identity.nfc(person.name),
        "display_name": person.display_name,
        "active": int(active),
        "created": person.created,
        "valid_from": person.valid_from,
        "valid_until": person.valid_until,
        "notes": person.notes,
        "doors": None if person.doors is None else ",".join(sorted(person.doors)),
        "schedule": schedule,
    }
    g.db.execute(
        f"INSERT INTO people ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        " ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in row if c != "id"),
        list(row.values()),
    )
    _put_card(g, pid, person.card_facility, person.card_number)
    g.db.execute("DELETE FROM templates WHERE person_id = ?", [pid])
    if templates:
        ids = [t.id for t in templates]
        g.db.execute(  # a local-only template holding a central id (should not happen)
            f"DELETE FROM templates WHERE id IN ({', '.join('?' * len(ids))})", ids)
    rows = []
    for t in templates:
        if len(t.embedding) != EMBEDDING_BYTES:
            raise GalleryError(f"fleet template {t.id} ({person.name}): not an embedding")
        rows.append((t.id, pid, seal(key, t.embedding, _aad(pid, t.id)), t.quality,
                     t.source_sha256, t.created, t.model_id))
    g.db.conn.executemany(
        "INSERT INTO templates (id, person_id, embedding, quality, source_sha256, created,"
        " model_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _put_card(g: Gallery, pid: int, facility: int | None, number: int | None) -> None:
    if facility is None or number is None:
        g.db.execute("DELETE FROM cards WHERE person_id = ?", [pid])
    else:
        g.db.execute(
            "INSERT OR REPLACE INTO cards (person_id, facility, number) VALUES (?, ?, ?)",
            [pid, facility, number],
        )
