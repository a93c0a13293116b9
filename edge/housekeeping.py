"""The daemon's periodic work: watchdog, gallery poll, storage, SIGHUP reload, status file.

:class:`Housekeeping` sits between :class:`~edge.lifecycle.Lifecycle` and
:class:`~edge.daemon.Daemon`: the frame loop calls it after every frame and
every empty wait. Once a second (:data:`POLL_SECONDS`) it purges old
snapshots, records free space running low or back, shows the camera's state
in ``systemctl status``, reloads the matcher when the gallery changed, takes a
backup when one is due and rewrites the status file ``edge status`` reads. A
SIGHUP re-reads config and gallery without touching the camera (what only a
restart can change is kept, see :mod:`edge.reload`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from . import notify
from .config import load_config
from .errors import ConfigError, EdgeError
from .lifecycle import Lifecycle
from .reload import plan_reload

#: The daemon's logger, whichever of its modules speaks (journal filters name it).
log = logging.getLogger("edge.daemon")

#: How often the loop asks the gallery whether people changed, and rewrites status.
POLL_SECONDS = 1.0
#: How often snapshots past privacy.snapshot_days are deleted.
PURGE_SECONDS = 3600.0


class Housekeeping(Lifecycle):
    """What the running daemon does besides frames; a base of :class:`~edge.daemon.Daemon`."""

    if TYPE_CHECKING:  # provided by Daemon

        def _event(self, kind: str, **fields: Any) -> None: ...

    def _feed_watchdog(self, now: float) -> None:
        if self._watchdog and now - self._last_watchdog >= self._watchdog / 3:
            notify.watchdog()
            self._last_watchdog = now

    def _housekeeping(self, now: float) -> None:
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        if now - self._last_poll < POLL_SECONDS:
            return
        self._last_poll = now
        if self.snapshots is not None and now - self._last_purge >= PURGE_SECONDS:
            self._last_purge = now
            self.snapshots.purge(time.time())
        self._check_storage()
        self._check_camera()
        assert self.gallery is not None
        try:
            if self.gallery.changed(self.matcher.generation):
                self.matcher = self._build_matcher()
                log.info("gallery changed: %d people", self.matcher.person_count)
            if self._gallery_failing:
                self._gallery_failing = False
                log.info("gallery readable again")
        except EdgeError as e:
            if not self._gallery_failing:
                self._gallery_failing = True
                log.warning("gallery not reloaded (%s); keeping the people already loaded", e)
        if self.backups is not None and self.storage.ok():
            self.backups.maybe_backup(now)  # a float comparison until one is due
        self.write_status()

    def _check_storage(self) -> None:
        """Record a ``storage`` event when free space runs low and when it comes back."""
        st = self.storage
        for change, fired in (("low", st.went_low), ("recovered", st.recovered)):
            if fired():
                detail = {"free_mb": st.free_mb, "min_free_mb": st.min_free_mb}
                self._event("storage", reason=f"{change}: {st.describe()}", detail=detail)

    def _check_camera(self) -> None:
        """Show the camera's state in ``systemctl status`` when it changes."""
        state = self.grabber.state if self.grabber is not None else None
        if state is not None and state != self._camera_state:
            self._camera_state = state
            notify.status(f"camera {state}")

    def reload(self) -> None:
        """SIGHUP: re-read config and gallery; the camera keeps running."""
        if self.ready:  # before READY, systemd is still waiting for the start
            notify.reloading()
        try:
            cfg = load_config(self.config_path) if self.config_path else self.cfg
        except ConfigError as e:
            log.error("reload refused, keeping the old config: %s", e)
            self._reloaded()
            return
        plan = plan_reload(self.cfg, cfg)
        if plan.held_back:
            log.warning(
                "restart needed to apply %s; running on the old values until then",
                ", ".join(plan.held_back),
            )
        self.cfg = cfg = plan.config
        logging.getLogger().setLevel(cfg.daemon.log_level.upper())
        self.storage.min_free_mb = cfg.storage.min_free_mb
        if self.events is not None:
            self.events.memory_cap = cfg.storage.event_memory_cap
        self._start_models()
        self._start_snapshots()
        assert self.gallery is not None
        try:
            self.matcher = self._build_matcher()
        except EdgeError as e:
            log.warning("gallery not reloaded (%s); keeping the people already loaded", e)
        if self.voice is not None and hasattr(self.voice, "config"):
            self.voice.config = cfg.voice
        log.info("reloaded config and gallery: %d people", self.matcher.person_count)
        self._reloaded()

    def _reloaded(self) -> None:
        if self.ready:
            notify.ready()

    def status(self) -> dict[str, Any]:
        """What ``edge status`` shows."""
        w = self._fps_window
        fps = (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0
        last = asdict(self.decisions[-1]) if self.decisions else None
        return {
            "pid": os.getpid(),
            # An ended replay leaves the daemon idle, not stopped: it still holds the door.
            "stopped": self.stop.is_set(),
            "ready": self.ready,
            "updated": time.time(),
            # CLOCK_MONOTONIC is system-wide: `edge status` can judge staleness by it
            # even after the wall clock jumps.
            "updated_mono": time.monotonic(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "frames": self.frames,
            "fps": round(fps, 1),
            "frame_ms_median": round(statistics.median(self.frame_ms), 2)
            if self.frame_ms
            else None,
            "camera": self.grabber.state if self.grabber else None,
            "camera_bad_frames": self.grabber.bad_frames if self.grabber else 0,
            "failed_frames": self.failed_frames,
            "events_waiting": self.events.waiting if self.events else 0,
            "storage_ok": self.storage.ok(),
            "liveness": self.cfg.liveness.mode,
            "locked_out": self.decider.lockout.locked,
            "people": self.matcher.person_count,
            "fleet": None if self.fleet is None else {
                "state": self.fleet.state,
                "revision": self.fleet.revision,
                "events_waiting": self.fleet.waiting,
                "error": self.fleet.last_error,
            },
            "door_simulated": bool(getattr(self.door, "simulated", False)),
            "last_decision": last,
            "console": self.console.url if self.console is not None else None,
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def write_status(self) -> None:
        path = self.cfg.path(self.cfg.daemon.status_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            # It names the last person granted or denied: owner-only, like the gallery.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask, or an older tmp's mode
                f.write(json.dumps(self.status()))
            os.replace(tmp, path)
        except OSError as e:
            log.debug("status not written (%s)", e)
