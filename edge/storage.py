"""Is there room on the data disk? A cheap answer the frame loop can ask every frame.

A full SD card must not stop the door: when free space falls below
``storage.min_free_mb``, the optional writes (unknown-face snapshots, backups)
stop, while access decisions go on being recorded (the event writer keeps them
in memory until SQLite can write again). :class:`StorageMonitor` answers
:meth:`~StorageMonitor.ok` from a cached ``shutil.disk_usage``, re-checked at
most every ``check_seconds`` (monotonic, so a wall-clock jump cannot freeze
it), and remembers the transitions so the daemon can record a ``storage`` event
when space runs low and when it comes back.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: How often free space is measured at most.
CHECK_SECONDS = 2.0


class StorageMonitor:
    """Free space on the filesystem holding ``path``, against ``min_free_mb``.

    ``free_mb`` is the last measurement (None if it failed: a path that cannot
    be measured counts as low). :meth:`went_low` and :meth:`recovered` each
    return True once per transition; one owner (the daemon) should consume them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        min_free_mb: float,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.min_free_mb = min_free_mb
        self.check_seconds = check_seconds
        self.free_mb: float | None = None
        self._ok = True
        self._checked: float | None = None
        self._went_low = False
        self._recovered = False

    def ok(self) -> bool:
        """True while at least ``min_free_mb`` is free; measured at most every ``check_seconds``."""
        now = time.monotonic()
        if self._checked is None or now - self._checked >= self.check_seconds:
            self._checked = now
            self._measure()
        return self._ok

    def went_low(self) -> bool:
        """True once after space has fallen below the minimum (also when it is low at start)."""
        self.ok()
        fired, self._went_low = self._went_low, False
        return fired

    def recovered(self) -> bool:
        """True once after space has come back above the minimum."""
        self.ok()
        fired, self._recovered = self._recovered, False
        return fired

    def describe(self) -> str:
        """One line for a log or an event: free space against the minimum."""
        free = "unknown" if self.free_mb is None else f"{self.free_mb:.1f} MB"
        return f"{free} free on {self.path} (minimum {self.min_free_mb:g} MB)"

    def _measure(self) -> None:
        try:
            self.free_mb = shutil.disk_usage(self.path).free / 1e6
        except OSError as e:
            if self._ok:  # logged once, with the transition to low below
                log.warning("cannot measure free space on %s: %s", self.path, e)
            self.free_mb = None
        ok = self.free_mb is not None and self.free_mb >= self.min_free_mb
        if ok == self._ok:
            return
        self._ok = ok
        if ok:
            self._recovered, self._went_low = True, False
            log.info("storage ok again: %s", self.describe())
        else:
            self._went_low, self._recovered = True, False
            log.warning("storage low: %s; snapshots and backups paused", self.describe())
