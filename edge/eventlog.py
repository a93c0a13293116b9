"""The event log: access decisions, door and alarm events, and the audit of admin changes.

:class:`EventLog` is a mixin of :class:`~edge.gallery.Gallery`: an event is
appended in its own small write transaction (which does not move the
generation: the daemon's matcher only cares about people and templates), and
read back oldest first. Rows are checked by :func:`edge.records.event_row`;
admin changes write their audit event inside their own transaction
(``Gallery._audit``). Writing off the frame loop is :mod:`edge.events`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import GalleryError
from .records import event_row, iso_time

if TYPE_CHECKING:
    from sqlite_utils import Database


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


class EventLog:
    """Appending and reading events: a mixin of :class:`~edge.gallery.Gallery`."""

    db: Database

    if TYPE_CHECKING:  # provided by Gallery

        def _write(self, what: str, *, content: bool = True) -> AbstractContextManager[None]: ...

        def _read(self, what: str) -> AbstractContextManager[None]: ...

        def _insert(self, table: str, row: dict[str, Any]) -> int: ...

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

