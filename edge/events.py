"""Event writing off the frame loop.

The loop hands each event to :class:`EventWriter`, which never blocks: a
worker thread owns its own gallery connection and writes in order, retrying
while the database is busy (an admin's ``edge`` command holding a write) or
unavailable. Events wait in memory up to a cap; past it they go to an
append-only spill file that is written back, in order, once SQLite answers.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from .errors import GalleryError

log = logging.getLogger(__name__)

MEMORY_CAP = 10_000
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


class EventWriter:
    """A background writer of events into the gallery at ``db_path``.

    ``put(kind, **fields)`` returns at once. ``spill_path`` receives events
    that do not fit in memory (one JSON object per line, fsync'd), and is
    replayed before anything newer is written.
    """

    def __init__(
        self, db_path: Path, spill_path: Path | None = None, memory_cap: int = MEMORY_CAP
    ) -> None:
        self.db_path = db_path
        self.spill_path = spill_path or db_path.with_name(db_path.name + ".spill.jsonl")
        self.memory_cap = memory_cap
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stop = threading.Event()
        self._spill_lock = threading.Lock()
        self.written = 0
        self.spilled = 0
        self.failing = False
        self._thread = threading.Thread(target=self._run, name="edge-events", daemon=True)
        self._thread.start()

    def put(self, kind: str, **fields: Any) -> None:
        """Queue one event; stamped now with both clocks (wall for people, monotonic for order)."""
        fields.setdefault("ts", _now_iso())
        fields.setdefault("mono", time.monotonic())
        ev = {"kind": kind, **fields}
        if self._q.qsize() >= self.memory_cap:
            self._spill(ev)
        else:
            self._q.put(ev)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (True) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._q.unfinished_tasks == 0 and not self._has_spill():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to ``timeout``), then stop; what is left is spilled."""
        if self._stop.is_set():
            return
        self.flush(timeout)
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout)
        while True:  # anything not written survives in the spill file
            try:
                ev = self._q.get_nowait()
            except queue.Empty:
                break
            if ev is not None:
                self._spill(ev)

    # -- worker --------------------------------------------------------------

    def _spill(self, ev: dict[str, Any]) -> None:
        with self._spill_lock:
            try:
                with open(self.spill_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(ev) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                self.spilled += 1
            except OSError as e:
                log.error("event lost: cannot spill to %s (%s): %s", self.spill_path, e, ev)

    def _has_spill(self) -> bool:
        return self.spill_path.exists() and self.spill_path.stat().st_size > 0

    def _run(self) -> None:
        from .gallery import Gallery

        gallery: Gallery | None = None
        delay = RETRY_FIRST
        pending: dict[str, Any] | None = None
        while True:
            try:
                if gallery is None:
                    gallery = Gallery(self.db_path)
                self._replay_spill(gallery)
                if pending is None:
                    pending = self._q.get(timeout=0.5)
                    if pending is None:
                        self._q.task_done()
                        break
                gallery.log_event(**pending)
                pending = None
                self._q.task_done()
                self.written += 1
                if self.failing:
                    log.info("events: database writable again")
                    self.failing = False
                delay = RETRY_FIRST
            except queue.Empty:
                if self._stop.is_set():
                    break
            except GalleryError as e:
                if not self.failing:
                    log.warning("events: cannot write yet, keeping them (%s)", e)
                    self.failing = True
                if gallery is not None:
                    gallery.close()
                    gallery = None
                if self._stop.is_set():
                    break
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        if pending is not None:
            self._spill(pending)
            self._q.task_done()
        if gallery is not None:
            gallery.close()

    def _replay_spill(self, gallery: Any) -> None:
        """Write back spilled events, oldest first, then remove the file."""
        with self._spill_lock:
            if not self._has_spill():
                return
            lines = self.spill_path.read_text(encoding="utf-8").splitlines()
            events = []
            for line in lines:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    log.error("events: skipping a damaged spill line")
            gallery.log_events(events)
            self.spill_path.unlink()
            self.written += len(events)


def _now_iso() -> str:
    from .gallery import now_iso

    return now_iso()
