"""The door's side of the fleet: pull the centre's changes, push the door's events.

A fleet door keeps deciding from its own SQLite gallery, which is a replica
of the centre (:mod:`edge.fleet`, whose docstring is the change-log
contract). :class:`DoorSync` brings the two together in one pass
(:meth:`DoorSync.sync`), used by ``edge sync`` (cron, scripts, tests) and by
the daemon's :class:`SyncWorker` thread:

* **Pull**: every change after the revision the door holds, with the state it
  points at, read from one snapshot, is applied to the gallery in ONE SQLite
  transaction together with the new revision (:mod:`edge.fleet.replica`).
  The transaction bumps the gallery's generation, so the daemon's matcher
  reloads as after any gallery change. A crash before the commit leaves the
  gallery and the revision as they were; after it, both moved together. Very
  long catch-ups are read in batches of :data:`PULL_BATCH` changes, each its
  own transaction ending at a revision boundary, so memory stays bounded.
* **Push**: the door's events after its push cursor, in id order, inserted at
  the centre with the door's name and their local id under
  ``ON CONFLICT (door, local_id) DO NOTHING``; the cursor (kept in the
  gallery's ``meta``) moves only after the centre has committed. A crash
  between the two pushes those events again, and the centre ignores them:
  none is lost, none counted twice. A restore that discarded events (a
  damaged gallery, ``--discard-events``) makes the door reuse local ids the
  centre already holds for other events: when the centre refuses some of a
  batch, the push compares the centre's rows under those ids with its own
  (kind, name, time); if one differs, the batch is rolled back and, from that
  event on, local ids go to the centre shifted past the highest it holds
  (``meta`` keeps the shift), so those events are kept too.
* **Report**: the door's row in ``doors``: last contact, revision held,
  events waiting, software version.

The worker LISTENs on ``edge_changes`` so a change reaches an online door
within a second or two, polls every :data:`POLL_SECONDS` as a fallback, pushes
events within :data:`PUSH_SECONDS` of their writing, and while the centre is
unreachable (stopped, network down, too slow: connect and statement timeouts)
backs off exponentially up to :data:`BACKOFF_MAX_SECONDS`, saying so once per
change of state. The frame loop never waits on any of it: the worker has its
own connections and its own gallery handle; the daemon only gets a nudge to
reload its matcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from .. import __version__
from ..errors import EdgeError
from . import vault
from .connect import FleetError, FleetSettings, describe, settings
from .replica import (
    PUSHED_KEY,
    REVISION_KEY,
    SHIFT_FROM_KEY,
    SHIFT_KEY,
    _set_meta,
    apply,
    meta_value,
    read_changes,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..gallery import Gallery

__all__ = ["PUSHED_KEY", "REVISION_KEY", "DoorSync", "SyncResult", "SyncWorker", "connect",
           "meta_value"]

log = logging.getLogger("edge.fleet")

#: Changes read per pull transaction (a week offline is usually far fewer).
PULL_BATCH = 5_000
#: Events sent per push transaction.
PUSH_BATCH = 2_000
#: The fallback poll, for a NOTIFY missed (it is not queued for an offline door).
POLL_SECONDS = 30.0
#: How soon the worker pushes an event the daemon has written.
PUSH_SECONDS = 0.5
#: Longest wait between attempts to reach an unreachable centre.
BACKOFF_MAX_SECONDS = 30.0
#: A statement the centre has not answered by then counts as the centre being down.
STATEMENT_TIMEOUT_MS = 15_000

_EVENT_COLUMNS = "ts, mono, kind, name, similarity, liveness, decision, reason, actor, detail"
_INSERT_EVENT = (
    f"INSERT INTO events (door, local_id, {_EVENT_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
    " ON CONFLICT (door, local_id) DO NOTHING"
)
_REPORT = """
    INSERT INTO doors (name, last_contact, revision, events_waiting, version)
    VALUES (%s, now(), %s, %s, %s)
    ON CONFLICT (name) DO UPDATE SET last_contact = now(), revision = EXCLUDED.revision,
        events_waiting = EXCLUDED.events_waiting, version = EXCLUDED.version
"""


@dataclass(frozen=True)
class SyncResult:
    """What one :meth:`DoorSync.sync` did."""

    #: The revision the door holds now.
    revision: int
    #: Change-log rows applied, and the people they touched.
    changes: int
    people: int
    #: Events the centre took (new to it) and events still to push.
    pushed: int
    waiting: int


def connect(s: FleetSettings, door: str) -> psycopg.Connection[Any]:
    """A door's connection: autocommit, and timeouts so a dead or slow centre fails fast.

    ``tcp_user_timeout`` and keepalives notice a network that went away
    (a half-open TCP connection would otherwise wait minutes);
    ``statement_timeout`` a centre that answers too slowly.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": s.connect_timeout,
        "application_name": f"edge door {door}",
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": STATEMENT_TIMEOUT_MS,
    }
    if s.password is not None:
        kwargs["password"] = s.password
    if s.sslmode is not None:
        kwargs["sslmode"] = s.sslmode
    if s.sslrootcert is not None:
        kwargs["sslrootcert"] = str(s.sslrootcert)
    try:
        return psycopg.connect(s.url, **kwargs)
    except psycopg.Error as e:
        raise FleetError(f"fleet {s.where}: cannot connect: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """One line for the log: a FleetError's own, a database error's first line."""
    return str(describe(e, "sync") if isinstance(e, psycopg.Error) else e)


class DoorSync:
    """One door's link to the centre. Belongs to the thread that made it (like a Gallery).

    ``door`` is this door's name (``door.name``, else the host name); ``url``
    overrides the configured fleet (``--fleet``). Nothing connects until
    :meth:`sync` (or :meth:`connect`) is called.
    """

    def __init__(
        self,
        cfg: Config,
        db_path: str | Path,
        *,
        door: str,
        url: str | None = None,
        gallery: Gallery | None = None,
    ) -> None:
        from ..gallery import open_gallery

        self.cfg = cfg
        self.door = door
        self.settings = settings(cfg, url)
        self.key = vault.load_key(cfg)
        self.gallery = gallery if gallery is not None else open_gallery(
            cfg, db_path, actor=f"fleet sync ({door})")
        self._own_gallery = gallery is None
        self.conn: psycopg.Connection[Any] | None = None
        self._first = True  # registered in ``doors`` on this connection yet?

    # ------------------------------------------------------------- connection

    def connect(self) -> psycopg.Connection[Any]:
        """The connection to the centre, made (and the fleet key checked) if needed."""
        if self.conn is None or self.conn.closed:
            conn = connect(self.settings, self.door)
            try:
                vault.check_key(conn, self.key, str(vault.key_path(self.cfg)))
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def disconnect(self) -> None:
        self._first = True
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.disconnect()
        if self._own_gallery:
            self.gallery.close()

    def __enter__(self) -> DoorSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- one pass

    @property
    def revision(self) -> int:
        """The revision this door's gallery holds."""
        with self.gallery._read("read fleet revision"):
            return meta_value(self.gallery, REVISION_KEY)

    def waiting(self) -> int:
        """Events written at this door that the centre has not confirmed yet."""
        g = self.gallery
        with g._read("count events to push"):
            cursor = meta_value(g, PUSHED_KEY)
            return int(g.db.execute(
                "SELECT count(*) FROM events WHERE id > ?", [cursor]).fetchone()[0])

    def sync(self, *, pull: bool = True) -> SyncResult:
        """Report, pull (unless ``pull`` is False), push, report: one pass; FleetError if the
        centre cannot be reached. The first report registers the door (its events are
        accepted only once it is in ``doors``)."""
        try:
            changes = people = 0
            if self._first:
                self.report()
                self._first = False
            if pull:
                changes, people = self.pull()
            pushed = self.push()
            waiting = self.waiting()
            self.report(waiting)
        except psycopg.Error as e:  # a connection lost halfway
            self.disconnect()
            raise describe(e, "sync") from None
        except FleetError:
            self.disconnect()
            raise
        return SyncResult(self.revision, changes, people, pushed, waiting)

    def pull(self) -> tuple[int, int]:
        """Apply every change after the held revision; (changes, people) applied."""
        conn = self.connect()
        changes = people = 0
        # Person id -> the snapshot's head revision their state was applied from: a
        # later batch's change of theirs at or below it is already applied.
        applied: dict[int, int] = {}
        while True:
            held = self.revision
            p, top = read_changes(conn, held, self.key, PULL_BATCH, applied)
            if not p.changes:
                return changes, people
            done = apply(self.gallery, p, held)
            if done is None:
                applied.clear()
                continue  # another sync applied it first: read again from its revision
            applied.update((c.person_id, top) for c in p.last)
            people += done
            changes += len(p.changes)
            if len(p.changes) < PULL_BATCH:
                return changes, people

    def push(self) -> int:
        """Send the events after the push cursor, oldest first; how many were new to the centre."""
        conn = self.connect()
        g = self.gallery
        total = 0
        while True:
            with g._read("read events to push"):
                cursor = meta_value(g, PUSHED_KEY)
                shift_from, shift = meta_value(g, SHIFT_FROM_KEY), meta_value(g, SHIFT_KEY)
                rows = g.db.execute(
                    f"SELECT id, {_EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                    [cursor, PUSH_BATCH],
                ).fetchall()
            if not rows:
                return total
            diverged = None
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT_EVENT, [
                    (self.door, _pushed_id(r[0], shift_from, shift), *r[1:]) for r in rows])
                new = max(cur.rowcount, 0)
                # Only ids the centre already held can be another event's.
                if new < len(rows):
                    diverged = self._diverged(cur, rows, shift_from, shift)
                    if diverged is not None:
                        raise psycopg.Rollback()  # none of this batch goes in as it was keyed
            if diverged is not None:
                top = conn.execute(
                    "SELECT max(local_id) FROM events WHERE door = %s", [self.door]).fetchone()
                shift_from, shift = diverged, int(top[0]) + 1 - diverged  # type: ignore[index]
                with g._write("shift pushed event ids", content=False):
                    _set_meta(g, SHIFT_FROM_KEY, shift_from)
                    _set_meta(g, SHIFT_KEY, shift)
                log.warning(
                    "fleet: the centre holds other events under local ids from %d on"
                    " (the gallery was restored); pushing them as id + %d", shift_from, shift)
                continue  # the same batch again, under the new ids
            total += new
            # The centre has committed: only now does the cursor move.
            with g._write("advance push cursor", content=False):
                _set_meta(g, PUSHED_KEY, int(rows[-1][0]))
            if len(rows) < PUSH_BATCH:
                return total

    def _diverged(
        self, cur: psycopg.Cursor[Any], rows: list[Any], shift_from: int, shift: int
    ) -> int | None:
        """The first local id of this batch whose id the centre holds for another event.

        The same event again (a push retried after a crash) is not a divergence;
        another event under the id (a restore discarded the one pushed before) is.
        """
        keys = [_pushed_id(r[0], shift_from, shift) for r in rows]
        cur.execute(
            "SELECT local_id, ts, mono, kind, name FROM events"
            " WHERE door = %s AND local_id = ANY(%s)", [self.door, keys])
        held = {int(r[0]): r[1:] for r in cur.fetchall()}
        for key, r in zip(keys, rows, strict=True):
            there = held.get(key)
            if there is not None and not _same_event(there, r):
                return int(r[0])
        return None

    def report(self, waiting: int | None = None) -> None:
        """Tell the centre this door is alive, what it holds and what it still has to send."""
        conn = self.connect()
        conn.execute(_REPORT, [self.door, self.revision,
                               self.waiting() if waiting is None else waiting, __version__])


def _pushed_id(local_id: int, shift_from: int, shift: int) -> int:
    """The id an event goes to the centre under (see :meth:`DoorSync.push`)."""
    return local_id + shift if shift_from and local_id >= shift_from else local_id


def _same_event(there: tuple[Any, ...], row: tuple[Any, ...]) -> bool:
    """Whether the centre's (ts, mono, kind, name) is this local row's event."""
    ts, mono, kind, name = there
    # The local row: id, ts (ISO text), mono, kind, name, ...
    try:
        local_ts = datetime.fromisoformat(row[1])
    except (TypeError, ValueError):
        return False
    if local_ts.tzinfo is None:  # written as UTC
        local_ts = local_ts.replace(tzinfo=UTC)
    return (kind, name, mono) == (row[3], row[4], row[2]) and abs(
        (ts - local_ts).total_seconds()) < 0.001


# --------------------------------------------------------------------------- the worker


class SyncWorker:
    """The daemon's sync thread: LISTEN, poll, push, back off; never blocks the frame loop.

    ``on_change`` is called (from this thread) after a pull changed the
    gallery; the daemon uses it to reload its matcher at once. ``state`` is
    ``"connecting"``, ``"online"`` or ``"offline"``, for ``edge status``.
    """

    def __init__(
        self,
        cfg: Config,
        db_path: Path,
        *,
        door: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.db_path = db_path
        self.door = door
        self.on_change = on_change
        self.stop = threading.Event()
        self.state = "connecting"
        self.revision: int | None = None
        self.waiting: int | None = None
        self.last_error: str | None = None
        settings(cfg)  # a bad URL or password file is refused at start, in one line
        vault.load_key(cfg)
        self._thread = threading.Thread(target=self._run, name="fleet-sync", daemon=True)

    def start(self) -> SyncWorker:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            sync = DoorSync(self.cfg, self.db_path, door=self.door)
        except EdgeError as e:
            log.error("fleet: sync not started: %s", e)
            self.state = "offline"
            return
        backoff = 1.0
        listener: psycopg.Connection[Any] | None = None
        failing: str | None = None  # what went wrong last, to say it once per change
        try:
            while not self.stop.is_set():
                try:
                    if listener is None:
                        sync.connect()
                        listener = connect(sync.settings, self.door)
                        listener.execute("LISTEN edge_changes")
                    self._result(sync.sync())
                    if self.state != "online":
                        self.state, self.last_error = "online", None
                        log.info("fleet: connected, revision %d", self.revision)
                    backoff, failing = 1.0, None
                    self._wait(sync, listener)
                    continue
                except (FleetError, psycopg.Error, OSError) as e:
                    self.last_error = _reason(e)
                    if listener is not None:
                        listener.close()
                    listener = None
                    sync.disconnect()
                    if self.state != "offline":
                        self.state = "offline"
                        log.warning("fleet: centre unreachable: %s, deciding offline",
                                    self.last_error)
                except EdgeError as e:  # the gallery refused (busy, disk full): later
                    if failing != "local":
                        log.warning("fleet: sync failed at this door: %s; retrying", e)
                    failing = "local"
                except Exception:  # a bug must not end the sync for good
                    if failing != "bug":
                        log.exception("fleet: sync failed; retrying")
                    failing = "bug"
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
        finally:
            if listener is not None:
                listener.close()
            sync.close()

    def _result(self, r: SyncResult) -> None:
        self.revision, self.waiting = r.revision, r.waiting
        if r.changes:
            log.info("fleet: revision %d: %d change(s), %d person(s)", r.revision, r.changes,
                     r.people)
            if self.on_change is not None:
                self.on_change()

    def _wait(self, sync: DoorSync, listener: psycopg.Connection[Any]) -> None:
        """Until a NOTIFY, the poll interval, or stop; pushing new events meanwhile."""
        deadline = time.monotonic() + POLL_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            if any(True for _ in listener.notifies(timeout=PUSH_SECONDS, stop_after=1)):
                return  # a change at the centre: pull now
            if sync.waiting():
                self._result(replace(sync.sync(pull=False), changes=0))
