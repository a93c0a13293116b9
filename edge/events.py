"""Event writing off the frame loop, losing nothing.

The loop hands each event to :meth:`EventWriter.put`, which stamps it, appends
it to a list in memory and returns: it never touches the disk. A worker thread
owns its own gallery connection and writes the events in order, in small
batches, retrying while the database is busy (an admin's ``edge`` command
holding a write), full or unavailable. While it cannot write and more than
``memory_cap`` events wait, it moves them to an append-only spill file (JSON
lines, fsync'd); the spill file is written back first, once SQLite answers,
and one left by an earlier run is written back at start. The order is always
spill file, then memory, so events reach the table in the order they happened.

Delivery is at least once: a power cut after a spill chunk's commit but before
its progress is noted writes that chunk (at most :data:`SPILL_CHUNK` events)
twice. If the spill file cannot be written either (disk full), events stay in
memory: RAM is the last resort, dropping an access record is not an option.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import GalleryError
from .files import fsync_dir
from .gallery import Gallery
from .records import now_iso

log = logging.getLogger(__name__)

#: Events kept in memory while the database cannot be written; more are spilled.
MEMORY_CAP = 10_000
#: Events written per transaction.
BATCH = 100
#: Spilled events written back per transaction (and duplicated at most by a power cut).
SPILL_CHUNK = 500
#: First and longest wait between attempts to reach a failing database.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: The writer's SQLite busy timeout: short, so it comes back to spill and to stop.
BUSY_MS = 1000

Event = dict[str, Any]


def open_events_db(path: Path) -> Gallery:
    """The gallery as the event writer opens it: a commit that returned survives a power cut.

    ``synchronous`` is a per-connection setting: FULL fsyncs the WAL at every
    commit (the gallery's NORMAL may lose the last commits to a power cut,
    though never consistency). Events are few, so the fsync costs nothing that
    matters. The busy timeout is :data:`BUSY_MS`.
    """
    g = Gallery(path)
    try:
        g.db.execute("PRAGMA synchronous = FULL")
        g.db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
    except sqlite3.Error as e:
        g.close()
        raise GalleryError(f"{path}: cannot set up the event connection ({e})") from e
    return g


def transient(e: BaseException) -> bool:
    """True when the database failed (busy, locked, full, I/O, missing), not the event.

    Such a write is retried; anything else (a bad kind, an unserialisable
    detail, a constraint) would fail forever, so that one event is refused.
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError | sqlite3.OperationalError):
            return True
        if type(cur) is sqlite3.DatabaseError:  # e.g. a damaged file: a restore may mend it
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class EventWriter:
    """A background writer of events into the gallery at ``db_path``.

    ``put(kind, **fields)`` returns at once. ``spill_path`` (default: beside
    the database) receives events while the database fails and more than
    ``memory_cap`` wait. Counters: ``accepted`` (put), ``written`` (in the
    table), ``spilled`` (moved to the spill file), ``refused`` (invalid events,
    logged in full and dropped); ``failing`` is True while writes fail.
    """

    def __init__(
        self, db_path: Path, spill_path: Path | None = None, memory_cap: int = MEMORY_CAP
    ) -> None:
        self.db_path = Path(db_path)
        self.spill_path = spill_path or self.db_path.with_name(self.db_path.name + ".spill.jsonl")
        self._pos_path = self.spill_path.with_name(self.spill_path.name + ".pos")
        self.memory_cap = memory_cap
        self.accepted = 0
        self.written = 0
        self.spilled = 0
        self.refused = 0
        self.failing = False
        self._memory: deque[Event] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closed = False
        self._spill_warned = False
        self._spill_lock = threading.Lock()
        self._listeners: list[Callable[[], Any]] = []
        self._spill_pending = self._repair_spill()
        self._pos = self._read_pos() if self._spill_pending else 0  # bytes written back
        self._thread = threading.Thread(target=self._run, name="edge-events", daemon=True)
        self._thread.start()

    # -- the loop's side ---------------------------------------------------------

    def put(self, kind: str, **fields: Any) -> None:
        """Queue one event, stamped now with both clocks: ``ts`` (wall, for people)
        and ``mono`` (monotonic, for order and intervals, immune to clock jumps)."""
        ev = json.loads(json.dumps({"kind": kind, **fields}, default=_plain))  # a frozen copy
        with self._cond:
            ev.setdefault("ts", now_iso())
            ev.setdefault("mono", time.monotonic())
            self._memory.append(ev)
            self.accepted += 1
            self._cond.notify_all()
        if self._closed:
            self._spill_memory()

    def on_written(self, listener: Callable[[], Any]) -> None:
        """Call ``listener()`` (on the writer's thread) after each batch is committed.

        What reads the table (the MQTT forwarder) blocks until then instead
        of polling the database; a listener must be quick and never raise.
        """
        self._listeners.append(listener)

    @property
    def waiting(self) -> int:
        """Events in memory not yet in the table (the spill file not counted)."""
        with self._cond:
            return len(self._memory) + self._in_flight

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far is in the table (True), or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._memory and not self._in_flight and not self._spill_pending,
                timeout,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Write what waits (up to ``timeout``), stop, and spill what is left. Idempotent."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout + BUSY_MS / 1000)  # it may be in a busy wait
        if self._thread.is_alive():
            log.warning("events: writer still in a write; it spills what it holds when it returns")
        self._spill_memory()
        with self._cond:
            left = list(self._memory)
        if left:  # the journal is the last place left to keep them
            log.error("events: %d events could be neither written nor spilled:", len(left))
            for ev in left:
                log.error("events: unsaved %s", json.dumps(ev, default=str))

    # -- the worker --------------------------------------------------------------

    def _run(self) -> None:
        db: Gallery | None = None
        delay = RETRY_FIRST
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._memory or self._spill_pending or self._stop.is_set()
                )
            if self._stop.is_set():
                break
            try:
                if db is None:
                    db = open_events_db(self.db_path)
                if self._spill_pending:
                    self._replay_spill(db)
                self._write_memory(db)
            except Exception as e:
                if not self.failing:
                    log.warning("events: cannot write yet, keeping them (%s)", e)
                    self.failing = True
                if db is not None:  # a fresh connection next time: the file may have changed
                    db.close()
                    db = None
                if self.waiting > self.memory_cap:
                    self._spill_memory()
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failing:
                log.info("events: database writable again; kept events written")
                self.failing = False
            delay = RETRY_FIRST
        if db is not None:
            db.close()
        self._spill_memory()  # stopping: what could not be written waits in the spill file

    def _write_memory(self, db: Gallery) -> None:
        """Write the events in memory, oldest first, in batches; put back what fails."""
        while True:
            with self._cond:
                batch = [self._memory.popleft() for _ in range(min(BATCH, len(self._memory)))]
                self._in_flight = len(batch)
            if not batch:
                return
            try:
                self._write(db, batch)
            finally:
                with self._cond:
                    self._memory.extendleft(reversed(batch))  # what was not written
                    self._in_flight = 0
                    self._cond.notify_all()
            self._tell()  # committed: readers of the table may look now

    def _tell(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("events: a written-listener failed")

    def _write(self, db: Gallery, batch: list[Event]) -> None:
        """Write ``batch`` in one transaction, emptying it; raise if the database fails.

        If the gallery refuses the batch, the events are tried one by one and
        only the refused one is dropped (logged whole). Written events leave
        ``batch`` as they go, so on an exception ``batch`` is what is left.
        """
        try:
            db.log_events(batch)
            self.written += len(batch)
            batch.clear()
            return
        except Exception as e:
            if transient(e):
                raise
        while batch:
            try:
                db.log_events(batch[:1])
                self.written += 1
            except Exception as e:
                if transient(e):
                    raise
                self.refused += 1
                log.error("events: refused by the gallery, dropped (%s): %s", e, batch[0])
            batch.pop(0)

    # -- the spill file ----------------------------------------------------------

    def _spill_memory(self) -> None:
        """Move every event in memory to the end of the spill file (or keep them, if it fails)."""
        with self._spill_lock:
            self._spill_memory_locked()

    def _spill_memory_locked(self) -> None:
        with self._cond:
            events = list(self._memory)
        if not events:
            return
        data = "".join(json.dumps(ev, default=str) + "\n" for ev in events).encode()
        try:
            self._append(data)
        except OSError as e:
            if not self._spill_warned:
                log.error("events: cannot spill to %s (%s); keeping them in memory",
                          self.spill_path, e)
                self._spill_warned = True
            return
        self._spill_warned = False
        with self._cond:
            for _ in events:  # the oldest; put() only appends on the right
                self._memory.popleft()
            self.spilled += len(events)
            self._spill_pending = True
            self._cond.notify_all()
        log.info("events: %d spilled to %s", len(events), self.spill_path)

    def _append(self, data: bytes) -> None:
        """Append whole lines and fsync; on failure cut the file back, leaving no torn line."""
        fd = os.open(self.spill_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # else _repair_spill cuts it at next start
                    os.ftruncate(fd, start)
                    if start == 0:
                        os.unlink(self.spill_path)
                raise
        finally:
            os.close(fd)
        if start == 0:
            fsync_dir(self.spill_path.parent)

    def _repair_spill(self) -> bool:
        """Cut a line torn by a crash off the spill file; True if events are waiting in it."""
        try:
            size = self.spill_path.stat().st_size
        except FileNotFoundError:
            self._pos_path.unlink(missing_ok=True)
            return False
        with open(self.spill_path, "rb+") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
            if tail and not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n") + 1
                f.truncate(size - len(tail) + cut)
                log.error("events: cut a torn line off %s", self.spill_path)
        return size > 0

    def _replay_spill(self, db: Gallery) -> None:
        """Write the spill file back, oldest first, in chunks noting progress; then remove it."""
        with open(self.spill_path, "rb") as f:
            f.seek(self._pos)
            while lines := list(itertools.islice(f, SPILL_CHUNK)):
                events = []
                for line in lines:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        log.error("events: skipping a damaged spill line: %r", line[:200])
                self._write(db, events)
                self._pos += sum(len(line) for line in lines)
                self._write_pos(self._pos)
        self.spill_path.unlink(missing_ok=True)
        self._pos_path.unlink(missing_ok=True)
        self._pos = 0
        with self._cond:
            self._spill_pending = False
            self._cond.notify_all()
        self._tell()
        log.info("events: spill file written back")

    def _read_pos(self) -> int:
        try:
            return int(self._pos_path.read_text())
        except (OSError, ValueError):
            return 0

    def _write_pos(self, pos: int) -> None:
        """Note replay progress for a restart; best effort (this run keeps it in memory)."""
        tmp = self._pos_path.with_name(self._pos_path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(str(pos))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._pos_path)
        except OSError as e:
            log.debug("events: replay progress not noted (%s)", e)


def _plain(value: Any) -> Any:
    """JSON for what json cannot encode itself: numpy scalars as numbers, the rest as text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)
