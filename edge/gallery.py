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

The schema and its migrations (``PRAGMA user_version``) are :mod:`edge.schema`.
sqlite-utils is used for its table helpers (insert, rows_where, query).

This module is the file, its transactions and what the daemon reads (templates,
matcher, generation); the rest is in mixins of :class:`Gallery`, one concept
each: people and enrollment in :mod:`edge.people`, the event log in
:mod:`edge.eventlog`, sealing, the key and template rows in :mod:`edge.sealing`.
Rows are checked before they reach SQL by :mod:`edge.records`; export and
import of sealed bundles live in :mod:`edge.bundle`.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from .config import Config, MatchConfig
from .crypto import Keyring
from .errors import GalleryError
from .eventlog import Event, EventLog
from .files import fsync_dir
from .match import DIM, Matcher, PersonInfo
from .people import KEEP, EnrollResult, People, Person, TemplateIn
from .records import EMBEDDING_BYTES, detail_json, now_iso
from .schema import _V1, _V2, MIGRATIONS, SCHEMA_VERSION
from .sealing import LEGACY_MODEL_ID, KeyRotation, _aad

if TYPE_CHECKING:  # edge.bundle imports this module; the methods import it when called
    from .bundle import ImportResult


#: The gallery's API: what is defined here, and the values and constants of the
#: modules it is made of (re-exported, so ``from edge.gallery import X`` keeps working).
__all__ = [
    "BUSY_TIMEOUT_MS", "DEFAULT_KEY_NAME", "KEEP", "LEGACY_MODEL_ID", "MIGRATIONS",
    "SCHEMA_VERSION", "_V1", "_V2", "EnrollResult", "Event", "Gallery", "KeyRotation",
    "Person", "TemplateIn", "Templates", "_aad", "open_gallery",
]


BUSY_TIMEOUT_MS = 5000
#: The key file a Gallery opened without ``key``/``key_file`` uses: beside the database
#: (where the default config's ``security.key_file`` puts it too).
DEFAULT_KEY_NAME = "gallery.key"


class Templates(NamedTuple):
    """All templates: ``embeddings`` (T, 128) float32 unit rows; ``person_ids``, ``ids`` (T,)."""

    embeddings: npt.NDArray[np.float32]
    person_ids: npt.NDArray[np.int64]
    ids: npt.NDArray[np.int64]


# --------------------------------------------------------------------------- gallery


class Gallery(People, EventLog):
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

    def may_enter(self, person_id: int, now: str | None = None) -> str | None:
        """Why person ``person_id`` may not enter now (``refusal`` words), or None if they may.

        One primary-key read, made right before the door opens, so a person
        disabled or removed by a command that has returned is never let in
        on the strength of a matcher built before (issue 7).
        """
        with self._read("check person"):
            row = self.db.execute(
                "SELECT active, valid_from, valid_until FROM people WHERE id = ?", [person_id]
            ).fetchone()
        if row is None:
            return "removed"
        active, start, end = row
        if not active:
            return "inactive"
        t = now or now_iso()
        if (start is not None and t < start) or (end is not None and t >= end):
            return "outside validity window"
        return None

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

    def matcher(self, config: MatchConfig | None = None, model_id: str | None = None) -> Matcher:
        """A :class:`Matcher` over every template of ``model_id``, from one consistent snapshot.

        Embeddings of two models are not comparable, so the daemon and the CLI
        pass the running embedder's ``model_id``: a template of another model
        then never matches (``edge reembed`` brings it back). None takes every
        template, whatever its model (for tests of the matching alone).

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
            t = self.templates(model_id)
        return Matcher(
            t.embeddings, t.person_ids, people, config.threshold, config.margin, generation
        )

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
