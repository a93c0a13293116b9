"""The door daemon: camera → detect → track → recognise → liveness → decide → door, voice, events.

One process, one frame loop, a few worker threads (camera grabber, event
writer, speech, door timer). Start-up is a list of named steps; READY goes to
systemd only when the camera has delivered its first frame (until then a hint
says what to do, every minute). A file or folder that cannot be read is an
error at start, and one that has been played to its end leaves the daemon
idle (door locked, admin commands served) unless ``exit_at_end``. SIGTERM and
SIGINT stop the loop, SIGHUP reloads config and gallery without touching the
camera (what only a restart can change is kept, see :mod:`edge.reload`). The
relay is locked on every way out.

Faults are survived, not fatal: a camera that fails is reopened by the
grabber, bad frames are dropped, a frame that raises is logged and skipped,
events wait in memory (or a spill file) while the database is busy or the disk
full, and snapshots stop while space is low. The systemd watchdog is fed only
for frames that were processed (or by an ended replay, idle on purpose), so a
process that is truly stuck, or a camera gone for longer than ``WatchdogSec``,
gets the service restarted. Every interval is measured on the monotonic clock.

This module is the frame loop and what one frame does; the daemon's state,
start-up and shutdown are :mod:`edge.lifecycle`, its periodic work (watchdog,
gallery poll, reload, status file) :mod:`edge.housekeeping`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import cv2

from . import notify
from .align import yaw
from .camera import Frame
from .decision import Alarm, Decision, Vote
from .errors import EdgeError
from .housekeeping import POLL_SECONDS, PURGE_SECONDS, Housekeeping
from .outputs import Grant

__all__ = [
    "HINT_FIRST_SECONDS",
    "HINT_SECONDS",
    "POLL_SECONDS",
    "PURGE_SECONDS",
    "Daemon",
    "configure_logging",
]

log = logging.getLogger("edge.daemon")

#: While the camera has not delivered a first frame, the hint is repeated this often.
HINT_SECONDS = 60.0
#: A camera still opening (no failure yet) after this long gets the hint too.
HINT_FIRST_SECONDS = 10.0


class Daemon(Housekeeping):
    """The running door. Build it, :meth:`start` it, :meth:`run` it, :meth:`close` it.

    ``source``, ``voice`` and ``pin_factory`` may be handed in (tests give a
    folder source, a WAV-rendering voice and gpiozero's MockFactory);
    otherwise they are made from the config. ``handle_signals`` installs the
    SIGTERM/SIGINT/SIGHUP handlers and the fail-secure hooks (the CLI does).
    The constructor, :meth:`start` and :meth:`close` are
    :class:`~edge.lifecycle.Lifecycle`'s; status and reload
    :class:`~edge.housekeeping.Housekeeping`'s.
    """

    def run(self) -> int:
        """Process frames until stopped (or, with ``exit_at_end``, the source ends)."""
        assert self.grabber is not None
        while not self.stop.is_set():
            frame = self.grabber.get(timeout=0.5)
            now = time.monotonic()
            if frame is None:
                if self.grabber.ended:
                    if self.exit_at_end:
                        break
                    self._idle(now)
                elif not self.ready:
                    self._hint(now)
                self._housekeeping(now)
                continue
            if not self.ready:
                self._become_ready()
            if self._process_safely(frame):
                self._fps_window.append(now)
                self._feed_watchdog(now)  # only for frames that made it through
            self._housekeeping(now)
        return 0

    def _idle(self, now: float) -> None:
        """A replay played to its end: wait (door locked) until stopped, without spinning.

        The watchdog is fed (idle on purpose is not stuck) often enough for
        ``WatchdogSec``; housekeeping (status, gallery, reloads) runs as usual.
        """
        if not self._end_logged:
            self._end_logged = True
            log.info(
                "%s ended after %d frames; idle with the door locked until stopped "
                "(--exit-at-end exits instead)",
                self._source_name(),
                self.frames,
            )
            notify.status(f"{self._source_name()} ended; idle")
        self._feed_watchdog(now)
        wait = POLL_SECONDS if not self._watchdog else min(POLL_SECONDS, self._watchdog / 3)
        self._wake.wait(wait)
        self._wake.clear()

    def _hint(self, now: float) -> None:
        """No frame yet: say what to do, now and every HINT_SECONDS, and not READY."""
        assert self.grabber is not None
        state = self.grabber.state
        if state != "reconnecting" and now - self.started < HINT_FIRST_SECONDS:
            return
        if now - self._last_hint < HINT_SECONDS:
            return
        self._last_hint = now
        log.warning(
            "no frame from camera %s yet (%s); not ready. Check the camera with "
            "`edge doctor`, or run without one: edge run --source FILE_OR_FOLDER",
            self._source_name(),
            state,
        )
        notify.status(f"waiting for camera {self._source_name()}: no frame yet (edge doctor)")

    def _process_safely(self, frame: Frame) -> bool:
        """Process one frame and time it; one that raises is dropped, logged once per run of them.

        A bad frame or a bug must not end the door loop. Failed frames do not
        feed the watchdog, so a loop failing on every frame still gets restarted.
        """
        t0 = time.perf_counter()
        try:
            self.process(frame)
        except Exception:
            self.failed_frames += 1
            if self.metrics is not None:
                self.metrics.failed()
            if not self._frames_failing:
                self._frames_failing = True
                log.exception("frame %d not processed; dropping frames that fail", frame.index)
            return False
        self.frame_ms.append((time.perf_counter() - t0) * 1000.0)
        self.latency_ms.append((time.monotonic() - frame.t_mono) * 1000.0)
        if self.metrics is not None:
            self.metrics.frame(self.frame_ms[-1] / 1000.0, self.latency_ms[-1] / 1000.0)
        self.frames += 1
        if self._frames_failing:
            self._frames_failing = False
            log.info("frames processed again (%d failed in all)", self.failed_frames)
        return True

    def process(self, frame: Frame) -> list[Decision]:
        """Everything one frame does; returns the decisions it made."""
        t = frame.source_ts if frame.source_ts is not None else frame.t_mono
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        dets = self.engine.detect(rgb)
        tracks = self.tracker.update([d.box for d in dets], t, frame.index)
        made = []
        dc = self.cfg.decision
        min_eye = self.cfg.align.min_eye_distance
        for det, track in zip(dets, tracks, strict=True):
            if track.decided:
                continue
            # Only faces that will be matched are aligned and embedded: turned or
            # small ones are tracked, and cost no inference.
            if det.eye_distance >= min_eye and yaw(det.keypoints) <= dc.max_yaw:
                m = self.matcher.match(self.engine.embed(rgb, det))
                track.votes.append(Vote(frame.index, m.name, m.similarity, m))
                if m.accepted and self.passive is not None:
                    track.passive.append(self.passive.score(frame.image, det.box))
            if track.blink is not None and self.mesh is not None:
                mesh = self.mesh.run(rgb, det)
                if mesh.presence >= 0.5:
                    track.blink.feed(mesh.ear, t)
            d = self.decider.consider(track, t, frame.index)
            if d is not None:
                self.act(d, frame)
                made.append(d)
        for alarm in self.decider.pop_alarms(t):
            self._alarm(alarm, frame)
        # The console's live view: one flag read per frame, nothing more while nobody watches.
        if self.console is not None and self.console.feed.watching:
            self.console.feed.publish(frame, dets, tracks)
        return made

    def act(self, d: Decision, frame: Frame) -> None:
        """Open the door, greet, and record one decision."""
        if d.decision == "granted":
            d = self._recheck(d)
        self.decisions.append(d)
        self.counts[d.decision] += 1
        if d.decision == "granted":
            if self.outputs is not None:  # only a queue put: the outputs have their own threads
                self.outputs.grant(Grant(d.name, d.person_id, time.monotonic()))
            if self.voice is not None:
                self.voice.greet(d.display_name or d.name or "")
        elif d.name is not None and self.voice is not None:
            self.voice.deny()
        detail = {
            "track": d.track,
            "frame": frame.index,
            "latency_ms": round(d.latency * 1000.0, 1),
        }
        self._event(
            "access",
            name=d.name,
            similarity=_round(d.similarity),
            liveness=_round(d.liveness),
            decision=d.decision,
            reason=d.reason,
            detail=detail,
        )
        log.info(
            "%s %s sim=%s live=%s: %s",
            d.decision,
            d.name or "unknown",
            _fmt(d.similarity),
            _fmt(d.liveness),
            d.reason,
        )
        # Low on space: snapshots go first; the decision above is already made and queued.
        if d.decision == "denied" and self.snapshots is not None and self.storage.ok():
            self.snapshots.save(frame.image, d.name, frame.t_wall, d.person_id)

    def _recheck(self, d: Decision) -> Decision:
        """The grant ``d`` if the gallery still lets that person in, else a denial.

        The matcher is rebuilt on a 1 s poll; an admin who has just disabled
        or removed someone must not see them let in during that second. So
        every grant re-reads the person's row (one indexed read) right before
        the door opens. A gallery that cannot be read refuses: fail-secure.
        """
        assert self.gallery is not None
        try:
            why = (
                "no person id"
                if d.person_id is None
                else self.gallery.may_enter(d.person_id, place=self.place)
            )
        except EdgeError as e:
            log.warning("grant for %s refused: gallery unreadable (%s)", d.name, e)
            why = "gallery unreadable"
        if why is None:
            return d
        self._last_poll = 0.0  # reload the matcher at the next housekeeping
        return replace(d, decision="denied", reason=why)

    def _alarm(self, alarm: Alarm, frame: Frame) -> None:
        """Record a lockout starting or ending as one ``alarm`` event."""
        detail = {"lockout": alarm.state, "failures": alarm.failures, "frame": frame.index}
        self._event("alarm", reason=alarm.reason, detail=detail)
        log.warning("%s", alarm.reason)

    def _event(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.put(kind, **fields)
        if self.metrics is not None:
            self.metrics.event(kind, fields)


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def configure_logging(level: str) -> None:
    """One line per message on stdout (journald adds time and unit)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
    )
