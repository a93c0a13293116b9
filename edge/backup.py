"""Backups of the gallery, and what to do about a damaged gallery at start.

Why: a door controller runs for years on an SD card that loses power. The
gallery is copied on a schedule with SQLite's online backup API (the daemon
keeps running; templates stay sealed in the copy) into ``backup.dir`` as
``<stem>-<UTC time>Z<suffix>``, names that sort by time, mode 0600, the
newest ``backup.keep`` kept. A failed backup (a full disk included) is logged
and retried later; it never stops the door and never leaves a partial file.

At start, before anything opens the gallery, :func:`startup_check` runs
``PRAGMA integrity_check`` (``quick_check`` skips whether indexes match their
tables). A damaged gallery is either refused with one line, or, with
``backup.on_corrupt: restore``, replaced by the newest backup that passes the
same check and whose templates open under the gallery key; the damaged file
is kept beside it as ``<name>.corrupt-<time>`` and a ``restore`` event is
written into the restored gallery.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .config import Config
from .crypto import Keyring
from .errors import GalleryError
from .files import fsync_dir
from .gallery import Gallery
from .keys import prune_retired

log = logging.getLogger("edge.backup")

#: After a failed or skipped backup, try again this much later (not every loop).
RETRY_SECONDS = 15 * 60.0
#: The earliest a backup is taken after start: start-up has the CPU and the card first.
START_DELAY_SECONDS = 60.0
#: Temporary files of an interrupted backup older than this are removed when pruning.
STALE_TEMP_SECONDS = 3600.0
_STAMP = "%Y%m%dT%H%M%SZ"
#: SQLite result codes that mean the file itself is damaged: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP)


def backup_path(db_path: Path, folder: Path, when: datetime | None = None) -> Path:
    """Where a backup of ``db_path`` taken at ``when`` (default now) goes."""
    return folder / f"{db_path.stem}-{_stamp(when)}{db_path.suffix}"


def list_backups(db_path: Path, folder: Path) -> list[Path]:
    """The backups of ``db_path`` in ``folder``, newest first (by the time in their names)."""
    pattern = re.compile(rf"{re.escape(db_path.stem)}-\d{{8}}T\d{{6}}Z{re.escape(db_path.suffix)}")
    try:
        names = [p.name for p in folder.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []
    return [folder / n for n in sorted(names, reverse=True)]


def check_file(path: Path) -> str:
    """"ok" if ``path`` is a sound SQLite database, else its first problem in one line.

    ``PRAGMA integrity_check`` and ``foreign_key_check``, read-only (a WAL
    left by a crash is read, never deleted or checkpointed, so a damaged
    file is kept as it was found). An empty file is a problem too: a gallery
    is never empty once created. A file that cannot be checked at all (no
    permission, I/O error, locked) is GalleryError, not damage: restoring
    over it would not help.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file"
        # With no WAL to read, "immutable" also leaves no -wal or -shm behind.
        wal = Path(f"{path}-wal").exists()
        uri = path.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            conn.close()
    except OSError as e:
        raise GalleryError(f"{path}: cannot check ({e.strerror})") from None
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorcode", None) in _DAMAGED:
            return str(e)
        raise GalleryError(f"{path}: cannot check ({e})") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    problems += [f"{table} row {rowid}: missing {parent} row" for table, rowid, parent, _ in fk]
    if not problems:
        return "ok"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0].replace("\n", " ") + more


# --------------------------------------------------------------------------- schedule


class Backups:
    """Scheduled backups of the gallery at ``db_path``, as ``cfg.backup`` says.

    The daemon calls :meth:`maybe_backup` from its housekeeping: a float
    comparison until one is due. With ``background`` (the default) the copy
    runs in a worker thread with its own connection, so the frame loop never
    waits on the SD card. The first backup is due ``interval_hours`` after
    the newest one on disk, and not before ``start_delay`` seconds from now.
    """

    def __init__(
        self,
        db_path: Path,
        cfg: Config,
        *,
        background: bool = True,
        start_delay: float = START_DELAY_SECONDS,
    ) -> None:
        self.db_path = Path(db_path)
        self.dir = cfg.path(cfg.backup.dir)
        self.interval = cfg.backup.interval_hours * 3600.0
        self.keep = cfg.backup.keep
        self.min_free_bytes = cfg.storage.min_free_mb * 1e6
        self.background = background
        self._thread: threading.Thread | None = None
        newest = self.newest()
        age = math.inf
        if newest is not None:
            with suppress(OSError):
                age = time.time() - newest.stat().st_mtime
        if age < 0:  # the clock is behind the newest backup (a Pi booted in 1970): due now
            age = math.inf
        self._due = time.monotonic() + max(start_delay, self.interval - age)

    def files(self) -> list[Path]:
        """The backups on disk, newest first."""
        return list_backups(self.db_path, self.dir)

    def newest(self) -> Path | None:
        backups = self.files()
        return backups[0] if backups else None

    def maybe_backup(self, now_monotonic: float) -> bool:
        """Start a backup if one is due; True if one was started (or, in the foreground, made)."""
        if now_monotonic < self._due or (self._thread is not None and self._thread.is_alive()):
            return False
        self._due = now_monotonic + self.interval
        if not self.background:
            return self.backup_now() is not None
        self._thread = threading.Thread(target=self.backup_now, name="edge-backup", daemon=True)
        self._thread.start()
        return True

    def backup_now(self) -> Path | None:
        """Take one backup, then prune; the new file, or None if it failed (logged, never raised).

        Skipped while the disk has less than ``storage.min_free_mb`` to spare
        beyond the copy. Whatever fails, no partial file is left and the next
        try is :data:`RETRY_SECONDS` away.
        """
        target = backup_path(self.db_path, self.dir)
        try:
            size = self.db_path.stat().st_size
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            free = shutil.disk_usage(self.dir).free
            if free < size + self.min_free_bytes:
                log.warning(
                    "backup skipped: %.0f MB free in %s, need %.0f MB",
                    free / 1e6, self.dir, (size + self.min_free_bytes) / 1e6,
                )
                self._retry()
                return None
            with Gallery(self.db_path, create=False) as g:
                g.backup(target)
        except (GalleryError, OSError) as e:
            log.warning("backup failed: %s", e)
            self._retry()
            return None
        removed = self.prune()
        log.info("backup written: %s (%d old removed)", target, len(removed))
        return target

    def _retry(self) -> None:
        self._due = min(self._due, time.monotonic() + RETRY_SECONDS)

    def prune(self) -> list[Path]:
        """Delete all but the ``keep`` newest backups, stale temporaries, and retired
        keys no kept backup is sealed under; the backups that went."""
        removed = []
        for old in self.files()[self.keep :]:
            with suppress(OSError):
                old.unlink()
                removed.append(old)
        for key_file in prune_retired(self.db_path, self.files()):
            log.info("retired key %s removed: no backup needs it", key_file.name)
        with suppress(OSError):
            for tmp in self.dir.glob(f".{self.db_path.stem}-*"):
                with suppress(OSError):
                    if time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                        tmp.unlink()
        return removed

    def close(self, timeout: float = 30.0) -> None:
        """Wait for a backup in progress (a half-made one is removed if the process dies)."""
        if self._thread is not None:
            self._thread.join(timeout)


# --------------------------------------------------------------------------- start-up


def startup_check(
    db_path: Path,
    cfg: Config,
    key: Keyring | bytes | None = None,
    *,
    actor: str | None = None,
) -> str:
    """Check the gallery before anything opens it; what was done, in one line for the log.

    Sound (or not created yet): says so. Damaged, with ``backup.on_corrupt``
    "refuse": GalleryError. With "restore": the newest backup that passes
    the integrity check and opens under the gallery key (``key``, default
    the configured one) replaces it, the damaged file is kept as
    ``<name>.corrupt-<time>``, and the message says which backup; if no
    backup will do, GalleryError and the damaged file is left as it was.
    """
    db_path = Path(db_path)
    if not db_path.exists():
        return f"{db_path}: no gallery yet"
    problem = check_file(db_path)
    if problem == "ok":
        return f"{db_path}: integrity check ok"
    folder = cfg.path(cfg.backup.dir)
    what = f"{db_path}: integrity check failed: {problem}"
    if cfg.backup.on_corrupt == "refuse":
        raise GalleryError(
            f"{what}; not starting (backup.on_corrupt is refuse): restore a backup from {folder}"
        )
    for candidate in list_backups(db_path, folder):
        try:
            done = restore(db_path, candidate, cfg, key, actor=actor, reason=problem)
        except GalleryError as e:
            log.warning("backup %s not used: %s", candidate.name, e)
            continue
        said = (
            f"{what}; restored {candidate}, damaged file kept as {done.kept}"
            f" ({done.describe()})"
        )
        log.warning("%s; %s", said, lost_since(candidate, done.kept, done))
        return said
    raise GalleryError(f"{what}; no backup in {folder} passes the check, not starting")


def lost_since(backup: Path, damaged: Path | None, restored: Restored | None = None) -> str:
    """What a restore of ``backup`` over ``damaged`` lost, as far as the damaged file still says.

    Every change after the backup's newest event is gone from the gallery:
    events, and people added, removed, disabled or enabled since (a person
    disabled after the backup is active again). Except what the restore
    kept (``restored``, what :func:`restore` returned): the events it carried
    over are not counted as lost, nor are people it erased again ("removed
    since, now back" would be false for them). Read best effort: a file too
    damaged to read only gets the backup's time.
    """
    try:
        with closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as b:
            last_id, last_ts = b.execute("SELECT max(id), max(ts) FROM events").fetchone()
            then = dict(b.execute("SELECT name, active FROM people").fetchall())
    except sqlite3.Error as e:
        return f"cannot read {backup} to say what was lost ({e})"
    carried = restored.carried if restored is not None else 0
    again = set(restored.forgotten) if restored is not None else set()
    but = f" but the {carried} event(s) carried over" if carried else ""
    since = f"every change after {last_ts or 'the backup was taken'}{but} is lost"
    if damaged is None:
        return since
    try:
        with closing(sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)) as d:
            events = d.execute("SELECT count(*) FROM events WHERE id > ?", [last_id or 0])
            (n_events,) = events.fetchone()
            now = dict(d.execute("SELECT name, active FROM people").fetchall())
    except sqlite3.Error:
        return f"{since} (the damaged file does not say what)"
    # Those the damaged file holds past the backup, less those in the restored gallery.
    parts = [f"{max(0, n_events - carried)} event(s)"]
    for label, names in (
        ("added since, now gone", sorted(set(now) - set(then))),
        ("removed since, now back", sorted(set(then) - set(now) - again)),
        ("disabled since, now ACTIVE again", sorted(n for n in now if n in then and then[n]
                                                    and not now[n])),
        ("enabled since, now disabled again", sorted(n for n in now if n in then and not then[n]
                                                     and now[n])),
    ):
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    return f"{since}: {'; '.join(parts)}"


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` did: where the old gallery went, and what of it was kept.

    ``carried``: events of the old gallery newer than the backup, copied into
    the restored one (so the audit trail never rewinds); ``lost``: newer
    events that could not be or were told not to be carried; ``forgotten``:
    people the old gallery's log says were erased (``edge forget``) since the
    backup, erased again so they do not come back.
    """

    kept: Path | None
    carried: int = 0
    lost: int = 0
    forgotten: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{self.carried} newer event(s) carried over"]
        if self.lost:
            parts.append(f"{self.lost} newer event(s) NOT carried over")
        if self.forgotten:
            parts.append("erased again as recorded: " + ", ".join(self.forgotten))
        return "; ".join(parts)


def restore(
    db_path: Path,
    backup: Path,
    cfg: Config,
    key: Keyring | bytes | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
    aside: str = "corrupt",
    discard_events: bool = False,
) -> Restored:
    """Put ``backup`` in place of the gallery; what was done (:class:`Restored`).

    The backup is copied beside the gallery and proven there first (integrity
    check, every template opens under the key). The old gallery's events newer
    than the backup are carried into the copy (:mod:`edge.restore_log`) and its
    recorded forgets re-applied, and a ``restore`` event saying so is
    written; only then is the old file kept as ``<name>.<aside>-<time>``
    (with its -wal) and the copy renamed into place, so the gallery path
    never holds a half-restored file. If the old gallery's log cannot be
    read, GalleryError unless ``discard_events`` (or ``aside`` is
    "corrupt": a damaged gallery gives what it can). No process may have
    the gallery open.
    """
    from .restore_log import carry_over, newer_events

    db_path, backup = Path(db_path), Path(backup)
    stamp = _stamp()
    kept = db_path.with_name(f"{db_path.name}.{aside}-{stamp}")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{db_path.name}.restore-", dir=db_path.parent)
        os.close(fd)
    except OSError as e:
        raise GalleryError(f"{db_path}: cannot restore ({e.strerror})") from None
    tmp = Path(name)
    try:
        shutil.copyfile(backup, tmp)
        problem = check_file(tmp)
        if problem != "ok":
            raise GalleryError(f"{backup}: {problem}")
        newer, unreadable = newer_events(db_path, tmp)
        if unreadable and aside != "corrupt" and not discard_events:
            raise GalleryError(
                f"{db_path}: cannot read its events to carry them over ({unreadable});"
                " give --discard-events to restore anyway and lose them"
            )
        with _named(tmp, backup), Gallery(
            tmp, actor, key=key, key_file=cfg.path(cfg.security.key_file), keys_of=db_path
        ) as g:
            g.templates()
            carried, forgotten = carry_over(g, newer, keep_events=not discard_events)
            done = Restored(
                kept if db_path.exists() else None,
                carried,
                len(newer) - carried,
                tuple(forgotten),
            )
            g.log_event(
                "restore",
                actor=actor,
                reason=reason,
                detail={
                    "backup": str(backup),
                    "kept": str(done.kept) if done.kept else None,
                    "events_carried": done.carried,
                    "events_lost": done.lost,
                    "unreadable": unreadable,
                    "forgotten_again": list(done.forgotten),
                },
            )
        _set_aside(db_path, kept)
        os.replace(tmp, db_path)
        fsync_dir(db_path.parent)
    except OSError as e:
        raise GalleryError(f"{db_path}: cannot restore {backup} ({e.strerror})") from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with suppress(OSError):
                leftover.unlink()
    return done


@contextmanager
def _named(tmp: Path, backup: Path) -> Iterator[None]:
    """Errors about the restore's working copy name the backup the admin gave instead."""
    try:
        yield
    except GalleryError as e:
        raise GalleryError(str(e).replace(str(tmp), str(backup))) from None


def _set_aside(db_path: Path, kept: Path) -> bool:
    """Keep the gallery (and its -wal) under ``kept``; drop its -shm. False if there was none.

    The file is hard-linked, not moved, so the gallery path is never empty.
    """
    if not db_path.exists():
        return False
    try:
        os.link(db_path, kept)
    except OSError:
        shutil.copy2(db_path, kept)
    wal, shm = Path(f"{db_path}-wal"), Path(f"{db_path}-shm")
    if wal.exists():
        os.replace(wal, Path(f"{kept}-wal"))
    with suppress(FileNotFoundError):
        shm.unlink()
    return True
