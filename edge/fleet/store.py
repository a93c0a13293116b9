"""Reading the central store: people, their templates, and the changes since a revision.

These are the values the door's sync applies (:func:`pull`) and the admin's
``edge list --fleet`` shows (:func:`people`). Times cross as fixed-width
ISO-8601 UTC text, exactly as the local gallery stores them, and embeddings
as packed little-endian float32 rows (:func:`edge.records.pack_embedding`),
already unsealed with the fleet key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import vault
from .connect import describe


def iso(t: datetime | None) -> str | None:
    """A database time as the gallery's ISO-8601 UTC text (None stays None)."""
    return None if t is None else t.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class FleetPerson:
    """One person at the centre; ``doors`` None = every door, ``schedule`` None = always."""

    id: int
    name: str
    display_name: str | None
    active: bool
    valid_from: str | None
    valid_until: str | None
    notes: str | None
    card_facility: int | None
    card_number: int | None
    doors: tuple[str, ...] | None
    schedule: str | None
    created: str
    templates: int = 0

    @property
    def card(self) -> str | None:
        """The card as ``edge set --card`` takes it (``FACILITY:NUMBER``), or None."""
        if self.card_facility is None or self.card_number is None:
            return None
        return f"{self.card_facility}:{self.card_number}"


@dataclass(frozen=True)
class FleetTemplate:
    """One template, unsealed: ``embedding`` is the packed float32 row."""

    id: int
    person_id: int
    embedding: bytes
    quality: float | None
    source_sha256: str | None
    model_id: str
    created: str


@dataclass(frozen=True)
class Change:
    """One row of the change log (the contract: :mod:`edge.fleet`)."""

    revision: int
    kind: str
    person_id: int
    name: str
    actor: str | None
    ts: str


@dataclass(frozen=True)
class Pull:
    """What a door needs to catch up from a revision, all from one snapshot.

    ``revision`` is the highest revision in ``changes`` (hold it once applied).
    ``people`` maps the person of each ``'person'`` change to their current row
    (None if they are gone by then: a removal follows); ``templates`` maps it to
    their current templates. ``last`` is the last change of each person, in
    revision order: applying just those is applying them all.
    """

    revision: int
    changes: tuple[Change, ...]
    people: dict[int, FleetPerson | None]
    templates: dict[int, tuple[FleetTemplate, ...]]

    @property
    def last(self) -> tuple[Change, ...]:
        final: dict[int, Change] = {}
        for c in self.changes:
            final.pop(c.person_id, None)
            final[c.person_id] = c
        return tuple(sorted(final.values(), key=lambda c: c.revision))


_PERSON = """
    SELECT p.id, p.name, p.display_name, p.active, p.valid_from, p.valid_until, p.notes,
           p.card_facility, p.card_number, p.doors, p.schedule, p.created,
           (SELECT count(*) FROM templates t WHERE t.person_id = p.id)
    FROM people p
"""


def _person(r: Sequence[Any]) -> FleetPerson:
    return FleetPerson(
        id=int(r[0]), name=r[1], display_name=r[2], active=bool(r[3]),
        valid_from=iso(r[4]), valid_until=iso(r[5]), notes=r[6],
        card_facility=r[7], card_number=r[8],
        doors=None if r[9] is None else tuple(r[9]), schedule=r[10],
        created=iso(r[11]) or "", templates=int(r[12]),
    )


def people(conn: psycopg.Connection[Any], ids: Sequence[int] | None = None) -> list[FleetPerson]:
    """Everyone at the centre by name (or just ``ids``)."""
    try:
        if ids is None:
            rows = conn.execute(_PERSON + " ORDER BY p.name_key").fetchall()
        else:
            rows = conn.execute(_PERSON + " WHERE p.id = ANY(%s) ORDER BY p.name_key",
                                [list(ids)]).fetchall()
    except psycopg.Error as e:
        raise describe(e, "read people") from None
    return [_person(r) for r in rows]


def templates(
    conn: psycopg.Connection[Any], key: bytes, person_ids: Sequence[int]
) -> dict[int, tuple[FleetTemplate, ...]]:
    """The templates of ``person_ids``, unsealed; FleetError for one that does not open."""
    try:
        rows = conn.execute(
            "SELECT id, person_id, embedding, quality, source_sha256, model_id, created"
            " FROM templates WHERE person_id = ANY(%s) ORDER BY person_id, id",
            [list(person_ids)]).fetchall()
    except psycopg.Error as e:
        raise describe(e, "read templates") from None
    out: dict[int, list[FleetTemplate]] = {int(p): [] for p in person_ids}
    for tid, pid, blob, quality, sha, model_id, created in rows:
        plain = vault.open_(key, int(pid), int(tid), bytes(blob))
        out[int(pid)].append(
            FleetTemplate(int(tid), int(pid), plain, quality, sha, model_id, iso(created) or ""))
    return {p: tuple(ts) for p, ts in out.items()}


def head(conn: psycopg.Connection[Any]) -> int:
    """The highest revision in the change log (0: none yet)."""
    row = conn.execute("SELECT coalesce(max(revision), 0) FROM changes").fetchone()
    return int(row[0]) if row else 0


def pull(
    conn: psycopg.Connection[Any], since: int, key: bytes, *, limit: int | None = None
) -> Pull:
    """Every change after revision ``since`` (at most ``limit``) and the state they point
    at, in one REPEATABLE READ snapshot. ``conn`` must be in autocommit mode."""
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = conn.execute(
                "SELECT revision, kind, person_id, name, actor, ts FROM changes"
                " WHERE revision > %s ORDER BY revision" + (" LIMIT %s" if limit else ""),
                [since, limit] if limit else [since]).fetchall()
            changes = tuple(Change(int(r[0]), r[1], int(r[2]), r[3], r[4], iso(r[5]) or "")
                            for r in rows)
            wanted = sorted({c.person_id for c in changes if c.kind == "person"})
            found = {p.id: p for p in people(conn, wanted)} if wanted else {}
            temps = templates(conn, key, list(found)) if found else {}
    except psycopg.Error as e:
        raise describe(e, "pull changes") from None
    return Pull(
        revision=changes[-1].revision if changes else since,
        changes=changes,
        people={p: found.get(p) for p in wanted},
        templates=temps,
    )


# --------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class FleetEvent:
    """One event at the centre: a local event's fields, and the door it came from.

    ``door`` and ``local_id`` are None for an admin command's audit event.
    """

    id: int
    door: str | None
    local_id: int | None
    ts: str
    mono: float | None
    kind: str
    name: str | None
    similarity: float | None
    liveness: float | None
    decision: str | None
    reason: str | None
    actor: str | None
    detail: dict[str, Any] | None
    received: str


def events(
    conn: psycopg.Connection[Any],
    *,
    since: str | None = None,
    kind: str | None = None,
    door: str | None = None,
    limit: int | None = None,
) -> list[FleetEvent]:
    """Events at or after ``since`` (ISO-8601), of ``kind``, from ``door``, oldest first;
    with ``limit`` the newest ``limit`` of them (still oldest first)."""
    clauses, args = [], []
    if since is not None:
        clauses.append("ts >= %s")
        args.append(since)
    if kind is not None:
        clauses.append("kind = %s")
        args.append(kind)
    if door is not None:
        clauses.append("door = %s")
        args.append(door)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    tail = "" if limit is None else " LIMIT %s"
    try:
        rows = conn.execute(
            "SELECT id, door, local_id, ts, mono, kind, name, similarity, liveness, decision,"
            f" reason, actor, detail, received FROM events {where}"
            f" ORDER BY ts DESC, id DESC{tail}", [*args, *([limit] if limit else [])]
        ).fetchall()
    except psycopg.Error as e:
        raise describe(e, "read events") from None
    return [
        FleetEvent(int(r[0]), r[1], r[2], iso(r[3]) or "", r[4], r[5], r[6], r[7], r[8], r[9],
                   r[10], r[11], r[12], iso(r[13]) or "")
        for r in reversed(rows)
    ]


@dataclass(frozen=True)
class DoorState:
    """What a door last reported: when, the revision it held, events not yet pushed,
    its software version; ``behind`` is how many revisions the centre is ahead of it."""

    name: str
    role: str
    first_seen: str
    last_contact: str | None
    revision: int | None
    events_waiting: int | None
    version: str | None
    behind: int | None


def doors(conn: psycopg.Connection[Any]) -> list[DoorState]:
    """Every door that has reported to the centre, by name."""
    try:
        top = head(conn)
        rows = conn.execute(
            "SELECT name, role, first_seen, last_contact, revision, events_waiting, version"
            " FROM doors ORDER BY name").fetchall()
    except psycopg.Error as e:
        raise describe(e, "read doors") from None
    return [
        DoorState(r[0], str(r[1]), iso(r[2]) or "", iso(r[3]), r[4], r[5], r[6],
                  None if r[4] is None else max(0, top - int(r[4])))
        for r in rows
    ]
