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

* Templates are sealed at rest (AES-256-GCM, :mod:`edge.crypto`) under a key
  kept outside the file, each bound to its person and template ids, so a
  copied file yields no embedding and blobs cannot be swapped between people.
  The key is read only when a template is, so the event writer never needs it.
* Files are private: the database, its -wal and -shm, backups and bundles are
  mode 0600; freed pages are zeroed (``secure_delete``) so an erased person
  does not linger in the file.

The schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in
order, each in the transaction that bumps the version. sqlite-utils is used for
its table helpers (insert, rows_where, query); the DDL is written out in SQL
so the schema can be read in one place.

Rows are checked before they reach SQL by :mod:`edge.records`; export and
import of sealed bundles live in :mod:`edge.bundle`; sealing, the key and template
rows in :mod:`edge.sealing` (a mixin of :class:`Gallery`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from . import identity
from .config import Config, MatchConfig
from .crypto import Keyring, fingerprint, seal
from .errors import GalleryError
from .files import fsync_dir
from .match import DIM, Matcher, PersonInfo
from .records import (
    EMBEDDING_BYTES,
    check_name,
    check_notes,
    check_template,
    check_window,
    detail_json,
    event_row,
    iso_time,
    now_iso,
    person_row,
)
from .rules import Place, Rule, Schedule, doors_column
from .sealing import (
    LEGACY_MODEL_ID,
    SealedTemplates,
    _aad,
)
from .sealing import (
    KeyRotation as KeyRotation,  # re-exported: part of the gallery's API
)

if TYPE_CHECKING:  # edge.bundle imports this module; the methods import it when called
    from .bundle import ImportResult

#: ``(embedding, quality, source_sha256)``: one template offered to :meth:`Gallery.enroll`.
TemplateIn = tuple[npt.ArrayLike, float | None, str | None]


BUSY_TIMEOUT_MS = 5000
#: The key file a Gallery opened without ``key``/``key_file`` uses: beside the database
#: (where the default config's ``security.key_file`` puts it too).
DEFAULT_KEY_NAME = "gallery.key"


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
    #: Access rule (:mod:`edge.rules`): door names joined by commas (None = every
    #: door) and the canonical weekly schedule (None = always).
    doors: str | None = None
    schedule: str | None = None

    @property
    def rule(self) -> Rule:
        return Rule.from_columns(self.doors, self.schedule)


@dataclass(frozen=True)
class EnrollResult:
    """What an enrollment did: templates added, and ones skipped as already enrolled.

    ``replaced`` counts the added templates that took the place of another
    model's template of the same photo (a re-enrollment).
    """

    added: int
    skipped_duplicates: int
    replaced: int = 0


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


def _v1_initial(g: Gallery) -> None:
    """People, templates and an access log."""
    g.db.executescript(_V1)


def _v2_validity_and_audit(g: Gallery) -> None:
    """Validity windows and notes on people; monotonic time, actor and detail on
    events; a generation counter for the daemon to notice changes."""
    g.db.executescript(_V2)


def _v3_seal_templates(g: Gallery) -> None:
    """Seal every plain template (see :mod:`edge.crypto`); a ``migrate`` event says how many.

    The key is loaded (or created) only if there is a template to seal. The
    plain bytes are gone from the file once the WAL is checkpointed (pages are
    zeroed as they are freed), but not from backups or bundles made before.
    """
    rows = g.db.execute("SELECT id, person_id, embedding FROM templates").fetchall()
    if not rows:
        return
    key = g._keys(create=True).current
    for tid, person_id, blob in rows:
        if len(blob) != EMBEDDING_BYTES:
            raise GalleryError(f"{g.path}: template {tid} is {len(blob)} bytes, not an embedding")
        g.db.execute(
            "UPDATE templates SET embedding = ? WHERE id = ?",
            [seal(key, blob, _aad(person_id, tid)), tid],
        )
    g._audit("migrate", None, schema=3, templates_sealed=len(rows), key=fingerprint(key))


_V4 = """
ALTER TABLE templates ADD COLUMN model_id TEXT;
CREATE INDEX templates_model ON templates(model_id);
CREATE TABLE crops (
    template_id INTEGER PRIMARY KEY REFERENCES templates(id) ON DELETE CASCADE,
    crop BLOB NOT NULL
);
"""
# Crops live in their own table, not in a templates column: a 50 KB crop would
# spread every template row over its own pages and slow the matcher's load.


def _v4_templates_know_their_model(g: Gallery) -> None:
    """Each template names the embedder that made it (``model_id``: the model file's
    sha256); every existing one was made by :data:`LEGACY_MODEL_ID`. A ``crops`` table
    keeps the sealed face crop of each enrollment (:mod:`edge.crops`) for ``edge reembed``."""
    g.db.executescript(_V4)
    tagged = g.db.execute("UPDATE templates SET model_id = ?", [LEGACY_MODEL_ID]).rowcount
    if tagged:
        g._audit("migrate", None, schema=4, templates_tagged=tagged, model_id=LEGACY_MODEL_ID)


def _v5_access_rules(g: Gallery) -> None:
    """Per-person access rules (:mod:`edge.rules`): the doors they may use and a weekly
    schedule, both NULL (every door, always) for everyone already enrolled."""
    g.db.executescript(
        "ALTER TABLE people ADD COLUMN doors TEXT;"
        " ALTER TABLE people ADD COLUMN schedule TEXT;"
    )


#: Schema migrations in order; after ``MIGRATIONS[i]`` the schema is version ``i + 1``.
MIGRATIONS: list[Callable[[Gallery], None]] = [
    _v1_initial,
    _v2_validity_and_audit,
    _v3_seal_templates,
    _v4_templates_know_their_model,
    _v5_access_rules,
]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- gallery


class _Unchanged(Exception):
    """Raised inside a write transaction to roll it back because it changed nothing."""


class _Keep:
    """The type of :data:`KEEP`: "leave this field as it is"."""


KEEP = _Keep()


class Gallery(SealedTemplates):
    """One open gallery file. A context manager; :meth:`close` is safe to call twice.

    ``actor`` is recorded on the audit event of every change made through this
    object (the CLI passes the admin's user name). Like the sqlite3 connection
    beneath it, a Gallery belongs to the thread that opened it; open one per
    thread (they are cheap) rather than sharing.

    Templates are sealed under ``key`` (a :class:`~edge.crypto.Keyring`, or 32
    raw bytes) if given, else under the key loaded from ``key_file`` (default:
    ``gallery.key`` beside the database; the systemd credential ``gallery-key``
    wins over either) when a template is first read or written; a missing
    key file is created only to seal. After its first rotation a gallery
    reads its own key file first (:mod:`edge.keys`). A missing gallery file
    is created (mode 0600) unless ``create`` is False. :func:`open_gallery` opens the gallery
    and key the config names: the CLI and the daemon use it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        actor: str | None = None,
        *,
        key: Keyring | bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        create: bool = True,
        keys_of: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        # Whose own key file (edge.keys) to use: this file's, or (a restore's
        # copy being proven) the gallery it will replace.
        self._keys_of = Path(keys_of) if keys_of is not None else self.path
        self.actor = actor
        self._closed = False
        self._ring = Keyring(key, "the given key") if isinstance(key, bytes) else key
        self._key_file = Path(key_file) if key_file else self.path.parent / DEFAULT_KEY_NAME
        if not self.path.exists():
            if not create:
                raise GalleryError(
                    f"{self.path}: no gallery there (edge enroll creates one, or give --create)"
                )
            _create_private(self.path)
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
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        _make_private(self.path)
        migrated = False
        for target, migrate in enumerate(MIGRATIONS, start=1):
            if version >= target:
                continue
            with self._write("migrate", content=False):
                # Re-read inside the lock: another process may have migrated.
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version < target:
                    migrate(self)
                    self.db.execute(f"PRAGMA user_version = {target}")
                    version = target
                    migrated = True
        if migrated:
            self._checkpoint()  # plain templates out of the WAL and the file

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and empty it, if no reader is in the way (best effort)."""
        with suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
        self._insert("events", row | {"detail": detail_json(detail or None)})

    def _person_id(self, name: str) -> int:
        return self._find(name)[0]

    def _find(self, name: str) -> tuple[int, str]:
        """(id, stored name) of the person ``name`` means (:func:`edge.identity.find`)."""
        found = identity.find(self.db.conn, name)
        if found is None:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return found

    def _refuse_taken(self, name: str, except_id: int | None = None) -> None:
        other = identity.taken(self.db.conn, name, except_id)
        if other is not None:
            why = "" if other == name else f" ({other!r}: names ignore case and accent form)"
            raise GalleryError(f"{name!r}: a person of that name already exists{why}")

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
        name = row["name"]
        with self._write("add person"):
            self._refuse_taken(name)
            self._insert("people", row)
            self._audit("enroll", name, templates=0)
        return self.person(name)

    def enroll(
        self,
        name: str,
        templates: Sequence[TemplateIn],
        display_name: str | None = None,
        *,
        refuse_look_alike: float | None = None,
        model_id: str = LEGACY_MODEL_ID,
        crops: Sequence[bytes | None] | None = None,
    ) -> EnrollResult:
        """Add templates to ``name``, creating the person if new; all or nothing.

        ``model_id`` names the embedder that made the templates (its file's
        sha256); ``crops``, if given, holds each template's face crop
        (:meth:`edge.crops.FaceCrop.to_bytes`, or None), sealed and kept for
        ``edge reembed``. A template whose ``source_sha256`` this person
        already has from the same model (or that repeats one earlier in
        ``templates``) is skipped, so enrolling the same photos twice changes
        nothing; one from another model is replaced (a re-enrollment).
        ``display_name``, if given, is set. Templates are checked as they are
        written; a bad one anywhere rolls the whole enrollment back, the new
        person included. ``name`` means the person whose name matches it
        ignoring case and accent form.

        With ``refuse_look_alike`` (the match threshold), a template that
        already matches someone else at that similarity is refused naming
        them: one face under two names locks the real person out through the
        match margin.
        """
        if crops is not None and len(crops) != len(templates):
            raise GalleryError(f"{name!r}: {len(crops)} crops for {len(templates)} templates")
        name = check_name(name)
        if display_name is not None:
            check_name(display_name, "display name")
        if not templates:
            raise GalleryError(f"{name!r}: nothing to enroll (no templates)")
        added = skipped = replaced = 0
        with contextlib.suppress(_Unchanged), self._write("enroll"):
            key = self._sealing_key()
            row = identity.find(self.db.conn, name)
            if row is not None:
                name = row[1]
            checked = []
            for i, t in enumerate(templates):
                try:
                    checked.append(check_template(t))
                except GalleryError as e:
                    raise GalleryError(f"{name!r}: template {i + 1}: {e}") from None
            if refuse_look_alike is not None:
                other = identity.look_alike(
                    self, [c[0] for c in checked], refuse_look_alike, row and row[0]
                )
                if other is not None:
                    raise GalleryError(
                        f"{name!r}: photo {other.template + 1} is already enrolled as"
                        f" {other.name!r} (similarity {other.similarity:.2f}); add it to"
                        f" {other.name!r}, or give --force if they really are two people"
                    )
            if row is None:
                person_id = self._insert("people", person_row(name, display_name))
            else:
                person_id = row[0]
                if display_name is not None:
                    self.db.table("people").update(person_id, {"display_name": display_name})
            for i, (blob, quality, sha) in enumerate(checked):
                crop = None if crops is None else crops[i]
                same = None if sha is None else self.db.execute(
                    "SELECT id, model_id FROM templates WHERE person_id = ? AND source_sha256 = ?",
                    [person_id, sha],
                ).fetchone()
                if same is not None and same[1] == model_id:
                    skipped += 1
                    continue
                if same is not None:  # this photo, embedded by another model: re-enrolled
                    self._replace_template(key, person_id, same[0], blob, model_id, quality)
                    self.db.execute("DELETE FROM crops WHERE template_id = ?", [same[0]])
                    if crop is not None:
                        self._put_crop(key, person_id, same[0], crop)
                    replaced += 1
                else:
                    self._insert_template(
                        key, person_id, blob, quality, sha, now_iso(), model_id=model_id, crop=crop
                    )
                added += 1
            if added == 0 and row is not None and display_name is None:
                # Nothing new: undo the transaction so the file is untouched.
                raise _Unchanged
            names = {} if display_name is None else {"display_name": display_name}
            extra = names | ({"replaced": replaced} if replaced else {})
            self._audit("enroll", name, added=added, skipped=skipped, model_id=model_id, **extra)
        return EnrollResult(added, skipped, replaced)

    def remove(self, name: str) -> int:
        """Remove a person and (by cascade) their templates; returns how many templates went.

        Past events keep the name: the log is history.
        """
        with self._write("remove"):
            person_id, name = self._find(name)
            count = self.db.table("templates").count_where("person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._audit("remove", name, templates=count)
        return count

    def forget(self, name: str) -> int:
        """Erase a person on request: their templates and their row; how many templates went.

        Unlike :meth:`remove` (which revokes), this is erasure: the freed pages
        are zeroed and the WAL is checkpointed, so the rows do not linger in
        the file. A ``forget`` event keeps the name, as the log is the history
        of who came and went. Not erased here: snapshots and any other file
        outside the gallery (the caller erases those), and backups, which
        hold the person until they are pruned (``backup.keep``).
        """
        with self._write("forget"):
            person_id, name = self._find(name)
            count = self.db.table("templates").count_where("person_id = ?", [person_id])
            self.db.execute("DELETE FROM templates WHERE person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._audit("forget", name, templates=count)
        self._checkpoint()
        return count

    def rename(self, old: str, new: str) -> Person:
        """Give a person a new name (past events keep the old one)."""
        new = check_name(new)
        with self._write("rename"):
            person_id, old = self._find(old)
            self._refuse_taken(new, except_id=person_id)  # "rose" -> "Rose" is fine
            self.db.table("people").update(person_id, {"name": new})
            self._audit("rename", new, old=old, new=new)
        return self.person(new)

    def set_active(self, name: str, active: bool) -> Person:
        """Enable or disable a person; a disabled person is recognised but refused."""
        with self._write("enable" if active else "disable"):
            self.db.table("people").update(self._person_id(name), {"active": int(bool(active))})
            self._audit("enable" if active else "disable", name, active=bool(active))
        return self.person(name)

    def set_validity(
        self,
        name: str,
        valid_from: str | datetime | None,
        valid_until: str | datetime | None,
    ) -> Person:
        """Set when a person may enter (None = no limit); outside it they are refused."""
        start, end = check_window(valid_from, valid_until)
        with self._write("set validity"):
            person_id = self._person_id(name)
            self.db.table("people").update(person_id, {"valid_from": start, "valid_until": end})
            self._audit("validity", name, valid_from=start, valid_until=end)
        return self.person(name)

    def update(
        self,
        name: str,
        *,
        display_name: str | _Keep | None = KEEP,
        notes: str | _Keep | None = KEEP,
        valid_from: str | datetime | _Keep | None = KEEP,
        valid_until: str | datetime | _Keep | None = KEEP,
        doors: frozenset[str] | _Keep | None = KEEP,
        schedule: Schedule | _Keep | None = KEEP,
    ) -> Person:
        """Change a person's details in one transaction; what is not given is kept.

        None clears a field (no display name, no notes, no limit on that side
        of the validity window, every door, no schedule). ``doors`` and
        ``schedule`` are the access rule (:func:`edge.rules.parse_doors`,
        :func:`edge.rules.parse_schedule`).
        """
        current = self.person(name)
        changes: dict[str, Any] = {}
        if not isinstance(display_name, _Keep):
            changes["display_name"] = (
                None if display_name is None else check_name(display_name, "display name"))
        if not isinstance(notes, _Keep):
            changes["notes"] = check_notes(notes)
        if not isinstance(valid_from, _Keep) or not isinstance(valid_until, _Keep):
            start, end = check_window(
                current.valid_from if isinstance(valid_from, _Keep) else valid_from,
                current.valid_until if isinstance(valid_until, _Keep) else valid_until,
            )
            changes |= {"valid_from": start, "valid_until": end}
        if not isinstance(doors, _Keep):
            changes["doors"] = doors_column(doors)
        if not isinstance(schedule, _Keep):
            changes["schedule"] = None if schedule is None else schedule.column()
        if not changes:
            return current
        with self._write("update"):
            self.db.table("people").update(self._person_id(name), changes)
            self._audit("update", name, **changes)
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
        """One person by name (ignoring case and accent form); GalleryError if there is none."""
        with self._read("read person"):
            found = identity.find(self.db.conn, name)
            sql = self._PEOPLE_SQL.format(where="WHERE p.id = ?")
            rows = list(self.db.query(sql, [found[0]])) if found else []
        if not rows:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return self._to_person(rows[0])

    def people(self) -> list[Person]:
        """Everyone, by name, with their template counts."""
        with self._read("list people"):
            rows = list(self.db.query(self._PEOPLE_SQL.format(where="")))
        return [self._to_person(r) for r in rows]

    # ------------------------------------------------------------- matching

    def templates(self, model_id: str | None = None) -> Templates:
        """Every template (of ``model_id`` only, if given) as one (T, 128) float32 array,
        ordered by person then id."""
        where, args = ("WHERE model_id = ?", [model_id]) if model_id is not None else ("", [])
        with self._read("read templates"):
            rows = self.db.execute(
                f"SELECT id, person_id, embedding FROM templates {where} ORDER BY person_id, id",
                args,
            ).fetchall()
            blob = b"".join(self._unseal(rows))
        if len(blob) != len(rows) * EMBEDDING_BYTES:
            raise GalleryError(f"{self.path}: a stored embedding is not {DIM} float32 values")
        return Templates(
            embeddings=np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(-1, DIM),
            person_ids=np.array([r[1] for r in rows], dtype=np.int64),
            ids=np.array([r[0] for r in rows], dtype=np.int64),
        )

    def may_enter(
        self, person_id: int, now: str | None = None, place: Place | None = None
    ) -> str | None:
        """Why person ``person_id`` may not enter now (``refusal`` words), or None if they may.

        One primary-key read, made right before the door opens, so a person
        disabled or removed by a command that has returned is never let in
        on the strength of a matcher built before (issue 7). At a ``place``
        (the daemon's door) the person's access rule is checked too.
        """
        with self._read("check person"):
            row = self.db.execute(
                "SELECT active, valid_from, valid_until, doors, schedule FROM people WHERE id = ?",
                [person_id],
            ).fetchone()
        if row is None:
            return "removed"
        active, start, end, doors, schedule = row
        if not active:
            return "inactive"
        t = now or now_iso()
        if (start is not None and t < start) or (end is not None and t >= end):
            return "outside validity window"
        return Rule.from_columns(doors, schedule).refusal(place, datetime.fromisoformat(t))

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

    def matcher(
        self,
        config: MatchConfig | None = None,
        model_id: str | None = None,
        place: Place | None = None,
    ) -> Matcher:
        """A :class:`Matcher` over every template of ``model_id``, from one consistent snapshot.

        Embeddings of two models are not comparable, so the daemon and the CLI
        pass the running embedder's ``model_id``: a template of another model
        then never matches (``edge reembed`` brings it back). None takes every
        template, whatever its model (for tests of the matching alone).

        Disabled and out-of-window people are included; each accepted
        :class:`~edge.match.Match` carries their status and ``Match.refusal(now)``
        says whether to let them in, so windows open on time without a reload.
        ``place`` is the door the matcher serves: access rules are judged there.
        """
        config = config or MatchConfig()
        with self._read("build matcher"):
            generation = self.generation()
            people = [
                PersonInfo(
                    p.id, p.name, p.display_name, p.active, p.valid_from, p.valid_until, p.rule
                )
                for p in self.people()
            ]
            t = self.templates(model_id)
        return Matcher(
            t.embeddings, t.person_ids, people, config.threshold, config.margin, generation,
            place=place,
        )

    # ------------------------------------------------------------- events

    def log_event(self, kind: str, **fields: Any) -> int:
        """Append one event (its own small transaction); returns its id.

        ``kind`` is a short lowercase word (access, door, alarm, storage, ...);
        ``fields`` are the columns of :func:`~edge.records.event_row` (``decision`` is
        "granted", "denied" or None; ``detail`` is stored as JSON).
        """
        row = event_row(kind, **fields)
        with self._write(f"log {kind} event", content=False):
            return self._insert("events", row)

    def log_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Append many events (keyword dicts as for :meth:`log_event`) in one transaction."""
        rows = [event_row(**e) for e in events]
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
            args.append(iso_time(since, "since"))
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        with self._read("read events"):
            rows = list(
                self.db.table("events").rows_where(
                    " AND ".join(clauses) or None,
                    args,
                    order_by="id DESC",  # insertion order: the wall clock may jump
                    limit=limit,
                )
            )
        return [
            Event(**r | {"detail": None if r["detail"] is None else json.loads(r["detail"])})
            for r in reversed(rows)
        ]

    # ------------------------------------------------------------- export / import

    def export(self, path: str | os.PathLike[str], passphrase: str) -> int:
        """Write a sealed bundle of everyone: :func:`edge.bundle.export_bundle`."""
        from .bundle import export_bundle

        return export_bundle(self, path, passphrase)

    def import_(
        self,
        path: str | os.PathLike[str],
        passphrase: str | None = None,
        *,
        allow_unencrypted: bool = False,
        merge: bool = False,
        rename: Sequence[str] = (),
        threshold: float | None = None,
    ) -> ImportResult:
        """Merge a bundle into this gallery: :func:`edge.bundle.import_bundle`."""
        from .bundle import import_bundle

        return import_bundle(
            self, path, passphrase, allow_unencrypted=allow_unencrypted, merge=merge,
            rename=rename, threshold=threshold,
        )

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

        Safe while the daemon runs: the copy is one consistent snapshot, and
        templates stay sealed in it. The copy must pass ``PRAGMA
        integrity_check`` before it is renamed into place, so a damaged
        gallery never pushes a good backup out. Any failure (a full disk
        included) removes the partial copy and raises GalleryError.
        """
        path = Path(path)
        if path.resolve() == self.path.resolve():
            raise GalleryError(f"{path}: cannot back up a gallery onto itself")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
                problems = [r[0] for r in dest.execute("PRAGMA integrity_check").fetchall()]
            finally:
                dest.close()
            if problems != ["ok"]:
                raise GalleryError(f"{path}: backup refused: the copy is damaged ({problems[0]})")
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except (sqlite3.Error, OSError, GalleryError) as e:
            for leftover in (tmp, f"{tmp}-journal"):
                with suppress(OSError):
                    os.unlink(leftover)
            if isinstance(e, GalleryError):
                raise
            raise GalleryError(f"{path}: backup failed ({e})") from None


def open_gallery(
    cfg: Config,
    db_path: str | os.PathLike[str] | None = None,
    actor: str | None = None,
    *,
    create: bool = True,
) -> Gallery:
    """The gallery the config names (or ``db_path``), sealed under its configured key.

    The key is the systemd credential ``gallery-key`` if there is one, else
    ``security.key_file`` (created on first use). The CLI and the daemon open
    the gallery through this, so both use the same key.
    """
    return Gallery(
        db_path if db_path is not None else cfg.path(cfg.gallery.db),
        actor,
        key_file=cfg.path(cfg.security.key_file),
        create=create,
    )


# --------------------------------------------------------------------------- files


def _create_private(db: Path) -> None:
    """Create an empty database file, mode 0600, without ever opening ``db`` itself.

    Why not ``os.open``: closing *any* descriptor of a file drops every POSIX
    lock this process holds on it, including the SHARED lock each open SQLite
    connection keeps on a WAL database. A process that then looked like it
    had no connection let another process's closing connection think it was
    the last one, checkpoint and delete the -wal and -shm under the daemon
    (issue 7). So the file is made under a temporary name (``mkstemp``
    creates 0600) and hard-linked into place: atomic, never replaces a file
    another process just created, and no descriptor of ``db`` is closed.
    SQLite gives the -wal and -shm the database file's permissions.
    """
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{db.name}.new-", dir=db.parent)
        os.close(fd)  # a file of its own: no connection can have it open
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise GalleryError(f"{db}: cannot create gallery ({e.strerror})") from None


def _make_private(db: Path) -> None:
    """Take group and other access off the database, -wal and -shm, if this user owns them.

    New files are created 0600 (SQLite gives the -wal and -shm the database's
    mode); this mends files made by hand or by an older version.
    """
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        with suppress(OSError):
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                p.chmod(0o600)
