"""The gallery: who may enter, their face templates and the event log, in one SQLite file.

The admin CLI (over SSH) and the door daemon open the same file at once, so:

* The file is in WAL mode: the daemon keeps reading while an admin writes.
  ``synchronous=NORMAL`` is the WAL setting SQLite recommends: a commit is
  not fsynced, only checkpoints are, so a power cut can lose the last few
  commits but never corrupts the file. On an SD card that makes logging an
  event cheap; an admin who pulls the plug right after ``edge enroll`` may
  have to enroll again.
* Every change is ONE transaction begun with ``BEGIN IMMEDIATE`` (sqlite-utils'
  ``atomic()`` begins a deferred one, which can fail with SQLITE_BUSY_SNAPSHOT
  when it upgrades from reading to writing, whatever the busy timeout). Any
  error rolls it back, so a failed command leaves the file as it was. Each
  admin change writes its own audit event in the same transaction.
* ``busy_timeout`` lets a writer wait up to 5 s for another; ``foreign_keys``
  is on, so removing a person removes their templates.
* Every transaction that changes people or templates bumps ``meta.generation``;
  the daemon polls :meth:`Gallery.changed` (one indexed row read) and rebuilds
  its :class:`~edge.match.Matcher` when it moves, whichever process wrote.

The schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in
order, each in the transaction that bumps the version. sqlite-utils is used for
its table helpers (insert, rows_where, query); the DDL is written out in SQL
so the schema can be read in one place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import numbers
import os
import re
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from .config import MatchConfig
from .errors import GalleryError
from .match import DIM, Matcher, PersonInfo, parse_time

#: ``(embedding, quality, source_sha256)``: one template offered to :meth:`Gallery.enroll`.
TemplateIn = tuple[npt.ArrayLike, float | None, str | None]

BUNDLE_FORMAT = "edge-gallery"
BUNDLE_VERSION = 1
MAX_NAME = 64
MAX_NOTES = 2000
BUSY_TIMEOUT_MS = 5000
_EMBEDDING_BYTES = DIM * 4
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z][a-z_]{0,31}")
#: Unicode categories refused in names: controls, format characters (bidi
#: overrides, zero-width), surrogates, private use, unassigned, line breaks.
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Person:
    """One enrolled person; times are ISO-8601 UTC strings or None (no limit)."""

    id: int
    name: str
    display_name: str | None
    active: bool
    valid_from: str | None
    valid_until: str | None
    notes: str | None
    created: str
    templates: int


@dataclass(frozen=True)
class EnrollResult:
    """What an enrollment did: templates added, and ones skipped as already enrolled."""

    added: int
    skipped_duplicates: int


@dataclass(frozen=True)
class ImportResult:
    """What an import did: new people, templates added, templates already present."""

    people_added: int
    templates_added: int
    skipped_duplicates: int


@dataclass(frozen=True)
class Event:
    """One row of the event log; ``detail`` is the decoded JSON object, if any."""

    id: int
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


class Templates(NamedTuple):
    """All templates: ``embeddings`` (T, 128) float32 unit rows; ``person_ids``, ``ids`` (T,)."""

    embeddings: npt.NDArray[np.float32]
    person_ids: npt.NDArray[np.int64]
    ids: npt.NDArray[np.int64]


# --------------------------------------------------------------------------- schema

_V1 = """
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    quality REAL,
    source_sha256 TEXT,
    created TEXT NOT NULL,
    UNIQUE (person_id, source_sha256)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    similarity REAL,
    liveness REAL,
    decision TEXT,
    reason TEXT
);
CREATE INDEX events_ts ON events(ts);
"""
# No separate index on templates(person_id): the UNIQUE (person_id, source_sha256)
# index starts with person_id, so it already serves lookups and cascades.

_V2 = """
ALTER TABLE people ADD COLUMN valid_from TEXT;
ALTER TABLE people ADD COLUMN valid_until TEXT;
ALTER TABLE people ADD COLUMN notes TEXT;
ALTER TABLE events ADD COLUMN mono REAL;
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN detail TEXT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('generation', 0);
"""


def _v1_initial(db: Database) -> None:
    """People, templates and an access log."""
    db.executescript(_V1)


def _v2_validity_and_audit(db: Database) -> None:
    """Validity windows and notes on people; monotonic time, actor and detail on
    events; a generation counter for the daemon to notice changes."""
    db.executescript(_V2)


#: Schema migrations in order; after ``MIGRATIONS[i]`` the schema is version ``i + 1``.
MIGRATIONS: list[Callable[[Database], None]] = [_v1_initial, _v2_validity_and_audit]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- checks


def now_iso() -> str:
    """The current UTC time as fixed-width ISO-8601, so text order is time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _iso(value: str | datetime | None, what: str) -> str | None:
    """A time as fixed-width ISO-8601 UTC (naive times are local), or None."""
    try:
        t = parse_time(value)
    except (TypeError, ValueError):
        raise GalleryError(f"{what}: not an ISO-8601 time: {value!r}") from None
    return None if t is None else t.isoformat(timespec="microseconds")


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a usable name, else GalleryError saying why.

    Non-empty, at most 64 characters, no surrounding spaces, and nothing that
    hides in a terminal or a log (control, format or unassigned characters).
    """
    if not isinstance(name, str) or not name:
        raise GalleryError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME:
        raise GalleryError(f"{what} {name[:MAX_NAME]!r}...: longer than {MAX_NAME} characters")
    if name != name.strip():
        raise GalleryError(f"{what} {name!r}: leading or trailing whitespace")
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in name):
        raise GalleryError(f"{what} {name!r}: contains control or invisible characters")
    return name


def _check_notes(notes: object) -> str | None:
    if notes is None:
        return None
    if not isinstance(notes, str) or len(notes) > MAX_NOTES:
        raise GalleryError(f"notes must be text of at most {MAX_NOTES} characters")
    return notes


def _window(
    valid_from: str | datetime | None, valid_until: str | datetime | None
) -> tuple[str | None, str | None]:
    start, end = _iso(valid_from, "valid_from"), _iso(valid_until, "valid_until")
    if start is not None and end is not None and end <= start:
        raise GalleryError(f"valid_until {end} is not after valid_from {start}")
    return start, end


def pack_embedding(embedding: npt.ArrayLike) -> bytes:
    """128 finite numbers, normalised to unit length, as little-endian float32 bytes."""
    try:
        e = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError):
        raise GalleryError("embedding is not an array of numbers") from None
    if e.shape != (DIM,):
        raise GalleryError(f"embedding must have shape ({DIM},), got {e.shape}")
    norm = float(np.linalg.norm(e)) if np.all(np.isfinite(e)) else math.nan
    if not math.isfinite(norm) or norm == 0.0:
        raise GalleryError("embedding has non-finite values or is all zeros")
    return (e / norm).astype("<f4").tobytes()


def person_row(
    name: object,
    display_name: object = None,
    notes: object = None,
    valid_from: str | datetime | None = None,
    valid_until: str | datetime | None = None,
    active: object = True,
    created: object = None,
) -> dict[str, Any]:
    """A checked ``people`` row; GalleryError naming the first bad field."""
    if display_name is not None:
        check_name(display_name, "display name")
    if not isinstance(active, bool):
        raise GalleryError("active must be true or false")
    if created is not None and not isinstance(created, str):
        raise GalleryError("created must be text")
    start, end = _window(valid_from, valid_until)
    return {
        "name": check_name(name),
        "display_name": display_name,
        "active": int(active),
        "valid_from": start,
        "valid_until": end,
        "notes": _check_notes(notes),
        "created": created or now_iso(),
    }


def _check_template(t: object) -> tuple[bytes, float | None, str | None]:
    """One ``(embedding, quality, source_sha256)`` checked and packed for storage."""
    if not isinstance(t, (tuple, list)) or len(t) != 3:
        raise GalleryError("a template must be (embedding, quality, source_sha256)")
    embedding, quality, sha = t
    return (pack_embedding(embedding), *_check_quality_and_sha(quality, sha))


def _check_quality_and_sha(quality: object, sha: object) -> tuple[float | None, str | None]:
    """A template's quality (a finite number or None) and source sha (hex or None)."""
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, numbers.Real):
            raise GalleryError(f"quality must be a number or None, got {quality!r}")
        if not math.isfinite(quality):
            raise GalleryError("quality must be finite")
        quality = float(quality)
    if sha is not None and (not isinstance(sha, str) or not _SHA256.fullmatch(sha)):
        raise GalleryError(f"source_sha256 must be 64 lowercase hex digits, got {sha!r}")
    return quality, sha


# --------------------------------------------------------------------------- gallery


class _Unchanged(Exception):
    """Raised inside a write transaction to roll it back because it changed nothing."""


class Gallery:
    """One open gallery file. A context manager; :meth:`close` is safe to call twice.

    ``actor`` is recorded on the audit event of every change made through this
    object (the CLI passes the admin's user name). Like the sqlite3 connection
    beneath it, a Gallery belongs to the thread that opened it; open one per
    thread (they are cheap) rather than sharing.
    """

    def __init__(self, path: str | os.PathLike[str], actor: str | None = None) -> None:
        self.path = Path(path)
        self.actor = actor
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Biometric data: owner-only from the first byte. SQLite gives the
            # -wal and -shm files the database file's permissions.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as e:
            raise GalleryError(f"{self.path}: cannot create gallery ({e.strerror})") from None
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        # isolation_level=None: the driver never opens a transaction behind our
        # back; every transaction here is an explicit BEGIN ... COMMIT.
        try:
            self.db = Database(conn, execute_plugins=False)
            self._open()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise GalleryError(f"{self.path}: not a usable SQLite database ({e})") from None
        except BaseException:
            conn.close()
            raise

    def _open(self) -> None:
        version, tables = self.db.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master WHERE type = 'table')"
        ).fetchone()
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema v{version} is newer than this edge-access"
                f" (v{SCHEMA_VERSION}); upgrade edge-access"
            )
        if version == 0 and tables:
            raise GalleryError(f"{self.path}: an SQLite database, but not an edge gallery")
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        for target, migrate in enumerate(MIGRATIONS, start=1):
            if version >= target:
                continue
            with self._write("migrate", content=False):
                # Re-read inside the lock: another process may have migrated.
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version < target:
                    migrate(self.db)
                    self.db.execute(f"PRAGMA user_version = {target}")
                    version = target

    def close(self) -> None:
        """Close the file (the last connection to close also checkpoints the WAL)."""
        if not self._closed:
            self._closed = True
            self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------- transactions

    @contextmanager
    def _write(self, what: str, *, content: bool = True) -> Iterator[None]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

        ``content`` bumps the generation (people or templates changed). SQLite
        errors become GalleryError naming the file and the operation.
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise GalleryError(f"{self.path}: {what}: cannot start a write ({e})") from None
        try:
            yield
            if content:
                self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            self.db.execute("COMMIT")
        except BaseException as e:
            if self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise GalleryError(f"{self.path}: {what} failed ({e})") from e
            raise

    @contextmanager
    def _read(self, what: str) -> Iterator[None]:
        """A read: one snapshot for all its queries; a SQLite error becomes GalleryError.

        Nests inside another read or write (then it is just the error mapping).
        """
        own = not self.db.conn.in_transaction
        try:
            if own:
                self.db.execute("BEGIN")
            yield
        except sqlite3.Error as e:
            raise GalleryError(f"{self.path}: {what} failed ({e})") from e
        finally:
            if own and self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")  # nothing to keep: it only read

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert one row (inside the caller's transaction); its id."""
        return int(self.db.table(table).insert(row).last_pk or 0)

    def _audit(self, kind: str, name: str | None, **detail: Any) -> None:
        """Record an admin change in the event log, inside the change's transaction."""
        row = {"ts": now_iso(), "kind": kind, "name": name, "actor": self.actor}
        self._insert("events", row | {"detail": _json(detail or None)})

    def _person_id(self, name: str) -> int:
        row = self.db.execute("SELECT id FROM people WHERE name = ?", [name]).fetchone()
        if row is None:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return int(row[0])

    # ------------------------------------------------------------- people

    def add_person(
        self,
        name: str,
        display_name: str | None = None,
        notes: str | None = None,
        valid_from: str | datetime | None = None,
        valid_until: str | datetime | None = None,
    ) -> Person:
        """Add a person with no templates yet; GalleryError if the name is taken."""
        row = person_row(name, display_name, notes, valid_from, valid_until)
        with self._write("add person"):
            if self.db.execute("SELECT 1 FROM people WHERE name = ?", [name]).fetchone():
                raise GalleryError(f"{name!r}: a person of that name already exists")
            self._insert("people", row)
            self._audit("enroll", name, templates=0)
        return self.person(name)

    def enroll(
        self, name: str, templates: Sequence[TemplateIn], display_name: str | None = None
    ) -> EnrollResult:
        """Add templates to ``name``, creating the person if new; all or nothing.

        A template whose ``source_sha256`` this person already has (or that
        repeats one earlier in ``templates``) is skipped, so enrolling the same
        photos twice changes nothing. ``display_name``, if given, is set.
        Templates are checked as they are written; a bad one anywhere rolls the
        whole enrollment back, the new person included.
        """
        check_name(name)
        if display_name is not None:
            check_name(display_name, "display name")
        if not templates:
            raise GalleryError(f"{name!r}: nothing to enroll (no templates)")
        added = skipped = 0
        with contextlib.suppress(_Unchanged), self._write("enroll"):
            row = self.db.execute("SELECT id FROM people WHERE name = ?", [name]).fetchone()
            if row is None:
                person_id = self._insert("people", person_row(name, display_name))
            else:
                person_id = row[0]
                if display_name is not None:
                    self.db.table("people").update(person_id, {"display_name": display_name})
            for i, t in enumerate(templates):
                try:
                    blob, quality, sha = _check_template(t)
                except GalleryError as e:
                    raise GalleryError(f"{name!r}: template {i + 1}: {e}") from None
                if (
                    sha is not None
                    and self.db.execute(
                        "SELECT 1 FROM templates WHERE person_id = ? AND source_sha256 = ?",
                        [person_id, sha],
                    ).fetchone()
                ):
                    skipped += 1
                    continue
                self._insert(
                    "templates",
                    {
                        "person_id": person_id,
                        "embedding": blob,
                        "quality": quality,
                        "source_sha256": sha,
                        "created": now_iso(),
                    },
                )
                added += 1
            if added == 0 and row is not None and display_name is None:
                # Nothing new: undo the transaction so the file is untouched.
                raise _Unchanged
            self._audit("enroll", name, added=added, skipped=skipped)
        return EnrollResult(added, skipped)

    def remove(self, name: str) -> int:
        """Remove a person and (by cascade) their templates; returns how many templates went.

        Past events keep the name: the log is history.
        """
        with self._write("remove"):
            person_id = self._person_id(name)
            count = self.db.table("templates").count_where("person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._audit("remove", name, templates=count)
        return count

    def rename(self, old: str, new: str) -> Person:
        """Give a person a new name (past events keep the old one)."""
        check_name(new)
        with self._write("rename"):
            person_id = self._person_id(old)
            if (
                old != new
                and self.db.execute("SELECT 1 FROM people WHERE name = ?", [new]).fetchone()
            ):
                raise GalleryError(f"{new!r}: a person of that name already exists")
            self.db.table("people").update(person_id, {"name": new})
            self._audit("rename", new, old=old, new=new)
        return self.person(new)

    def set_active(self, name: str, active: bool) -> Person:
        """Enable or disable a person; a disabled person is recognised but refused."""
        with self._write("enable" if active else "disable"):
            self.db.table("people").update(self._person_id(name), {"active": int(bool(active))})
            self._audit("enable" if active else "disable", name)
        return self.person(name)

    def set_validity(
        self,
        name: str,
        valid_from: str | datetime | None,
        valid_until: str | datetime | None,
    ) -> Person:
        """Set when a person may enter (None = no limit); outside it they are refused."""
        start, end = _window(valid_from, valid_until)
        with self._write("set validity"):
            person_id = self._person_id(name)
            self.db.table("people").update(person_id, {"valid_from": start, "valid_until": end})
            self._audit("validity", name, valid_from=start, valid_until=end)
        return self.person(name)

    _PEOPLE_SQL = """
        SELECT p.*, count(t.id) AS templates
        FROM people p LEFT JOIN templates t ON t.person_id = p.id
        {where} GROUP BY p.id ORDER BY p.name
    """

    @staticmethod
    def _to_person(r: dict[str, Any]) -> Person:
        return Person(**r | {"active": bool(r["active"])})

    def person(self, name: str) -> Person:
        """One person by name; GalleryError if there is none."""
        with self._read("read person"):
            sql = self._PEOPLE_SQL.format(where="WHERE p.name = ?")
            rows = list(self.db.query(sql, [name]))
        if not rows:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return self._to_person(rows[0])

    def people(self) -> list[Person]:
        """Everyone, by name, with their template counts."""
        with self._read("list people"):
            rows = list(self.db.query(self._PEOPLE_SQL.format(where="")))
        return [self._to_person(r) for r in rows]

    # ------------------------------------------------------------- matching

    def templates(self) -> Templates:
        """Every template as one (T, 128) float32 array, ordered by person then id."""
        with self._read("read templates"):
            rows = self.db.execute(
                "SELECT id, person_id, embedding FROM templates ORDER BY person_id, id"
            ).fetchall()
        blob = b"".join(r[2] for r in rows)
        if len(blob) != len(rows) * _EMBEDDING_BYTES:
            raise GalleryError(f"{self.path}: a stored embedding is not {DIM} float32 values")
        return Templates(
            embeddings=np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(-1, DIM),
            person_ids=np.array([r[1] for r in rows], dtype=np.int64),
            ids=np.array([r[0] for r in rows], dtype=np.int64),
        )

    def generation(self) -> int:
        """The change counter: moves with every commit that touches people or templates."""
        with self._read("read generation"):
            row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def changed(self, since: int) -> bool:
        """Whether people or templates changed (by any process) since generation ``since``.

        Cheap enough to poll every frame; pass ``matcher.generation``.
        """
        return self.generation() != since

    def matcher(self, config: MatchConfig | None = None) -> Matcher:
        """A :class:`Matcher` over every template, from one consistent snapshot.

        Disabled and out-of-window people are included; each accepted
        :class:`~edge.match.Match` carries their status and ``Match.refusal(now)``
        says whether to let them in, so windows open on time without a reload.
        """
        config = config or MatchConfig()
        with self._read("build matcher"):
            generation = self.generation()
            people = [
                PersonInfo(p.id, p.name, p.display_name, p.active, p.valid_from, p.valid_until)
                for p in self.people()
            ]
            t = self.templates()
        return Matcher(
            t.embeddings, t.person_ids, people, config.threshold, config.margin, generation
        )

    # ------------------------------------------------------------- events

    def log_event(
        self,
        kind: str,
        *,
        name: str | None = None,
        similarity: float | None = None,
        liveness: float | None = None,
        decision: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
        mono: float | None = None,
        ts: str | datetime | None = None,
    ) -> int:
        """Append one event (its own small transaction); returns its id.

        ``kind`` is a short lowercase word (access, door, alarm, storage, ...);
        ``decision`` is "granted", "denied" or None; ``detail`` is stored as JSON.
        """
        row = _event_row(kind, name=name, similarity=similarity, liveness=liveness,
                         decision=decision, reason=reason, actor=actor, detail=detail,
                         mono=mono, ts=ts)
        with self._write(f"log {kind} event", content=False):
            return self._insert("events", row)

    def log_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Append many events (keyword dicts as for :meth:`log_event`) in one transaction."""
        rows = [_event_row(**e) for e in events]
        with self._write("log events", content=False):
            for row in rows:
                self._insert("events", row)
        return len(rows)

    def events(
        self,
        since: str | datetime | None = None,
        limit: int | None = None,
        kind: str | None = None,
    ) -> list[Event]:
        """Events at or after ``since``, of ``kind`` if given, oldest first.

        With ``limit``, the newest ``limit`` of those (still oldest first), as
        ``tail`` would show them.
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise GalleryError(f"event limit must be a whole number >= 0, got {limit!r}")
        clauses, args = [], []
        if since is not None:
            clauses.append("ts >= ?")
            args.append(_iso(since, "since"))
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        with self._read("read events"):
            rows = list(
                self.db.table("events").rows_where(
                    " AND ".join(clauses) or None,
                    args,
                    order_by="ts DESC, id DESC",
                    limit=limit,
                )
            )
        return [
            Event(**r | {"detail": None if r["detail"] is None else json.loads(r["detail"])})
            for r in reversed(rows)
        ]

    # ------------------------------------------------------------- export / import

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every person and template to a JSON bundle (mode 0600); returns people count.

        The bundle holds biometric templates: treat it like the database.
        Written to a temporary file and renamed, so a failed export leaves
        no half-written bundle.
        """
        with self._read("export"):
            people = self.people()
            rows = self.db.execute(
                "SELECT person_id, embedding, quality, source_sha256, created"
                " FROM templates ORDER BY person_id, id"
            ).fetchall()
        by_person: dict[int, list[dict[str, Any]]] = {}
        for person_id, blob, quality, sha, created in rows:
            by_person.setdefault(person_id, []).append(
                {
                    "embedding": base64.b64encode(blob).decode("ascii"),
                    "quality": quality,
                    "source_sha256": sha,
                    "created": created,
                }
            )
        bundle = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "exported": now_iso(),
            "people": [
                {
                    "name": p.name,
                    "display_name": p.display_name,
                    "active": p.active,
                    "valid_from": p.valid_from,
                    "valid_until": p.valid_until,
                    "notes": p.notes,
                    "created": p.created,
                    "templates": by_person.get(p.id, []),
                }
                for p in people
            ],
        }
        _write_private(Path(path), json.dumps(bundle, indent=1).encode("utf-8"))
        return len(people)

    def import_(self, path: str | os.PathLike[str]) -> ImportResult:
        """Merge a bundle from :meth:`export` into this gallery, in one transaction.

        The whole bundle is checked before the database is touched. Merge rules:
        a person not here is added with the bundle's fields; a person already
        here keeps their local fields (active, validity, names, notes: local
        decisions win, so an import never re-enables someone disabled here) and
        gains the bundle's templates they lack. A template is already present
        when the person has one with the same source_sha256 or, lacking a
        sha, the same embedding. Nothing is ever deleted by an import.
        """
        path = Path(path)
        people = _read_bundle(path)
        people_added = added = skipped = 0
        with self._write("import"):
            for person, templates in people:
                row = self.db.execute(
                    "SELECT id FROM people WHERE name = ?", [person["name"]]
                ).fetchone()
                if row is None:
                    person_id = self._insert("people", person)
                    people_added += 1
                else:
                    person_id = row[0]
                for blob, quality, sha, created in templates:
                    dup = (
                        "SELECT 1 FROM templates WHERE person_id = ? AND source_sha256 = ?"
                        if sha is not None
                        else "SELECT 1 FROM templates WHERE person_id = ? AND embedding = ?"
                    )
                    if self.db.execute(dup, [person_id, sha or blob]).fetchone():
                        skipped += 1
                        continue
                    self._insert(
                        "templates",
                        {
                            "person_id": person_id,
                            "embedding": blob,
                            "quality": quality,
                            "source_sha256": sha,
                            "created": created,
                        },
                    )
                    added += 1
            self._audit(
                "import",
                None,
                bundle=str(path),
                people_added=people_added,
                templates_added=added,
                skipped=skipped,
            )
        return ImportResult(people_added, added, skipped)

    # ------------------------------------------------------------- maintenance

    def integrity_check(self) -> str:
        """SQLite's integrity check plus a foreign-key check: "ok", or the problems one a line."""
        try:
            lines = [r[0] for r in self.db.execute("PRAGMA integrity_check").fetchall()]
            fk = self.db.execute("PRAGMA foreign_key_check").fetchall()
        except sqlite3.DatabaseError as e:
            return f"{self.path}: {e}"
        lines += [f"{table} row {rowid}: missing {parent} row" for table, rowid, parent, _ in fk]
        return "\n".join(x for x in lines if x != "ok") or "ok"

    def backup(self, path: str | os.PathLike[str]) -> None:
        """Copy the gallery to ``path`` with SQLite's online backup API (mode 0600).

        Safe while the daemon runs: the copy is one consistent snapshot. It is
        written beside ``path`` and renamed into place, so an existing backup
        is replaced whole or not at all.
        """
        path = Path(path)
        if path.resolve() == self.path.resolve():
            raise GalleryError(f"{path}: cannot back up a gallery onto itself")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(fd)
        except OSError as e:
            raise GalleryError(f"{path}: cannot write backup ({e.strerror})") from None
        try:
            dest = sqlite3.connect(tmp)
            try:
                self.db.conn.backup(dest)
                # A single file, readable without its -wal: take it out of WAL mode.
                dest.execute("PRAGMA journal_mode = DELETE")
            finally:
                dest.close()
            os.replace(tmp, path)
        except (sqlite3.Error, OSError) as e:
            with suppress(OSError):
                os.unlink(tmp)
            raise GalleryError(f"{path}: backup failed ({e})") from None


# --------------------------------------------------------------------------- files


def _json(value: dict[str, Any] | None) -> str | None:
    """``value`` as compact JSON text for the ``detail`` column, or None."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise GalleryError(f"event detail is not JSON-serialisable ({e})") from None


def _event_row(
    kind: str,
    *,
    name: str | None = None,
    similarity: float | None = None,
    liveness: float | None = None,
    decision: str | None = None,
    reason: str | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    mono: float | None = None,
    ts: str | datetime | None = None,
) -> dict[str, Any]:
    """A checked ``events`` row; GalleryError for a bad kind or decision."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise GalleryError(f"event kind {kind!r}: expected a short lowercase word")
    if decision not in (None, "granted", "denied"):
        raise GalleryError(f"event decision {decision!r}: expected granted, denied or None")
    return {
        "ts": _iso(ts, "ts") if ts is not None else now_iso(),
        "mono": mono,
        "kind": kind,
        "name": name,
        "similarity": similarity,
        "liveness": liveness,
        "decision": decision,
        "reason": reason,
        "actor": actor,
        "detail": _json(detail),
    }


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a temporary file and a rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise GalleryError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            os.unlink(tmp)
        raise GalleryError(f"{path}: cannot write ({e.strerror})") from None


_BundleTemplate = tuple[bytes, float | None, str | None, str]


def _read_bundle(path: Path) -> list[tuple[dict[str, Any], list[_BundleTemplate]]]:
    """Read and check a whole bundle: (person row, templates) pairs ready to insert.

    Embeddings are kept byte for byte (they were stored normalised), so an
    export/import round trip is exact; anything wrong is a GalleryError that
    names the bundle, the entry and the fault.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GalleryError(f"{path}: bundle not found") from None
    except OSError as e:
        raise GalleryError(f"{path}: cannot read bundle ({e.strerror})") from None
    except (ValueError, RecursionError):
        raise GalleryError(f"{path}: bad bundle: not JSON") from None

    def bad(where: str, why: str) -> GalleryError:
        return GalleryError(f"{path}: bad bundle: {where}: {why}")

    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise bad("format", f"not an {BUNDLE_FORMAT} bundle")
    if data.get("version") != BUNDLE_VERSION:
        raise bad("version", f"expected {BUNDLE_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("people"), list):
        raise bad("people", "expected a list")
    out: list[tuple[dict[str, Any], list[_BundleTemplate]]] = []
    seen: set[str] = set()
    for i, p in enumerate(data["people"]):
        where = f"people[{i}]"
        if not isinstance(p, dict):
            raise bad(where, "expected an object")
        try:
            fields = ("name", "display_name", "notes", "valid_from", "valid_until", "created")
            row = person_row(**{k: p.get(k) for k in fields}, active=p.get("active", True))
            if row["name"] in seen:
                raise GalleryError(f"{row['name']!r} appears twice")
            seen.add(row["name"])
            if not isinstance(p.get("templates"), list):
                raise GalleryError("templates: expected a list")
        except GalleryError as e:
            raise bad(where, str(e)) from None
        templates: list[_BundleTemplate] = []
        for j, t in enumerate(p["templates"]):
            try:
                if not isinstance(t, dict) or not isinstance(t.get("embedding"), str):
                    raise GalleryError("expected an object with a base64 embedding")
                try:
                    raw = base64.b64decode(t["embedding"], validate=True)
                except (binascii.Error, ValueError):
                    raise GalleryError("embedding is not base64") from None
                if len(raw) != _EMBEDDING_BYTES:
                    raise GalleryError(f"embedding is {len(raw)} bytes, not {_EMBEDDING_BYTES}")
                norm = float(np.linalg.norm(np.frombuffer(raw, dtype="<f4").astype(np.float64)))
                if not abs(norm - 1.0) < 1e-3:
                    raise GalleryError("embedding is not a finite unit vector")
                quality, sha = _check_quality_and_sha(t.get("quality"), t.get("source_sha256"))
                t_created = t.get("created")
                if t_created is not None and not isinstance(t_created, str):
                    raise GalleryError("created must be text")
            except GalleryError as e:
                raise bad(f"{where}.templates[{j}]", str(e)) from None
            templates.append((raw, quality, sha, t_created or now_iso()))
        out.append((row, templates))
    return out
