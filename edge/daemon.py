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
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2

from . import notify
from .align import yaw
from .backup import Backups, startup_check
from .camera import Frame, FrameGrabber, Source, open_source
from .config import Config, load_config
from .decision import Alarm, Decider, Decision, Tracker, Vote
from .engine import Engine
from .errors import CameraError, ConfigError, EdgeError
from .events import EventWriter
from .gallery import Gallery, open_gallery
from .outputs import Grant, Outputs
from .reload import plan_reload
from .snapshots import SnapshotStore
from .storage import StorageMonitor

log = logging.getLogger("edge.daemon")

#: How often the loop asks the gallery whether people changed, and rewrites status.
POLL_SECONDS = 1.0
#: How often snapshots past privacy.snapshot_days are deleted.
PURGE_SECONDS = 3600.0
#: While the camera has not delivered a first frame, the hint is repeated this often.
HINT_SECONDS = 60.0
#: A camera still opening (no failure yet) after this long gets the hint too.
HINT_FIRST_SECONDS = 10.0


class Daemon:
    """The running door. Build it, :meth:`start` it, :meth:`run` it, :meth:`close` it.

    ``source``, ``voice`` and ``pin_factory`` may be handed in (tests give a
    folder source, a WAV-rendering voice and gpiozero's MockFactory);
    otherwise they are made from the config. ``handle_signals`` installs the
    SIGTERM/SIGINT/SIGHUP handlers and the fail-secure hooks (the CLI does).
    """

    def __init__(
        self,
        cfg: Config,
        db_path: Path,
        *,
        config_path: Path | None = None,
        source: Source | None = None,
        source_spec: str | None = None,
        voice: Any = None,
        pin_factory: Any = None,
        handle_signals: bool = True,
        realtime: bool | None = None,
        exit_at_end: bool = False,
        loop: bool = False,
    ) -> None:
        self.cfg = cfg
        self.db_path = db_path
        self.config_path = config_path
        self.exit_at_end = exit_at_end
        self.loop = loop
        self._source = source
        self._source_spec = source_spec
        self._realtime = realtime
        self.door: Any = None
        self.outputs: Outputs | None = None
        self.metrics: Any = None
        self.mqtt: Any = None
        self.console: Any = None  # edge.console.server.Console, when console.listen is set
        self.voice = voice
        self._pin_factory = pin_factory
        self._handle_signals = handle_signals
        self.stop = threading.Event()
        self._reload = threading.Event()
        self.grabber: FrameGrabber | None = None
        self.events: EventWriter | None = None
        self.gallery: Gallery | None = None
        self.backups: Backups | None = None
        self.passive: Any = None
        self.mesh: Any = None
        # The recent decisions (bounded: the daemon runs for months) and a count of all.
        self.decisions: deque[Decision] = deque(maxlen=100)
        self.counts: Counter[str] = Counter()
        self.frame_ms: deque[float] = deque(maxlen=1000)  # processing time per frame
        self.latency_ms: deque[float] = deque(maxlen=1000)  # from capture to processed
        self.frames = 0
        self.failed_frames = 0
        self._frames_failing = False
        self._gallery_failing = False
        self._camera_state: str | None = None
        self.source: Source | None = None
        self.ready = False  # READY sent: the camera delivered a frame
        self._last_hint = -float("inf")
        self._end_logged = False
        self.storage = StorageMonitor(db_path.parent, cfg.storage.min_free_mb)
        self.started = time.monotonic()
        self._last_poll = 0.0
        self._last_watchdog = 0.0
        self.snapshots: SnapshotStore | None = None
        self._last_purge = -float("inf")
        self._fps_window: deque[float] = deque(maxlen=60)
        self._watchdog = notify.watchdog_interval()

    # -- start-up --------------------------------------------------------------

    def start(self) -> Daemon:
        """Bring everything up in order; any failure leaves the door locked."""
        steps = [
            ("source", self._check_source),
            ("models", self._start_models),
            ("gallery check", self._check_gallery),
            ("gallery", self._start_gallery),
            ("events", self._start_events),
            ("metrics", self._start_metrics),
            ("snapshots", self._start_snapshots),
            ("door", self._start_door),
            ("mqtt", self._start_mqtt),
            ("voice", self._start_voice),
            ("console", self._start_console),
            ("camera", self._start_camera),
        ]
        for name, step in steps:
            log.debug("starting %s", name)
            step()
        log.info("started; waiting for the first frame from %s", self._source_name())
        return self

    def _source_name(self) -> str:
        return self.source.name if self.source is not None else "?"

    def _check_source(self) -> None:
        """Build the source; a file or folder must yield a frame now, or it is an error.

        A replay that cannot be read will not heal by retrying: the typo in
        ``--source`` is reported at once (exit 1, one line), before any model,
        pin or database is touched. Live cameras are retried by the grabber.
        A source handed in by the caller is its own business and is not probed.
        """
        if self._source is not None:
            self.source = self._source
            return
        self.source = open_source(self._source_spec or self.cfg.camera.source, self.cfg.camera)
        if not self.source.finite:
            return
        try:
            self.source.open()
            first = self.source.read()
        except CameraError:
            raise
        except Exception as e:  # a decoder's own error: the file is not readable
            raise CameraError(f"{self.source.name}: cannot be read ({e})") from None
        finally:
            self.source.close()
        if first is None:
            raise CameraError(f"{self.source.name}: no frame can be read from it")
        if self.loop:
            from .camera import LoopSource

            self.source = LoopSource(self.source)

    def _become_ready(self) -> None:
        """The first frame is in: tell systemd READY, and the log."""
        self.ready = True
        notify.ready(f"watching {self._source_name()}")
        log.info(
            "ready: liveness %s, %d people, camera %s",
            self.cfg.liveness.mode,
            self.matcher.person_count,
            self._source_name(),
        )

    def _start_models(self) -> None:
        from .liveness import FaceMesh, load_passive

        self.engine = Engine(self.cfg)
        mode = self.cfg.liveness.mode
        if mode in ("passive", "both") and self.passive is None:
            self.passive = load_passive(self.engine.interpreter, self.cfg.liveness.passive_models)
        if mode in ("active", "both") and self.mesh is None:
            self.mesh = FaceMesh(self.engine.interpreter("facemesh"))
        self.tracker = Tracker(self.cfg.decision.window_frames, self.cfg.liveness)
        # A reload keeps a running lockout and its count: SIGHUP must not lift it.
        old: Decider | None = getattr(self, "decider", None)
        kept = old.lockout if old is not None else None
        self.decider = Decider(
            self.cfg.decision, self.cfg.liveness, self.cfg.security, lockout=kept
        )

    def _check_gallery(self) -> None:
        """Integrity check before anything opens the file; may restore a backup (a WARNING)."""
        done = startup_check(self.db_path, self.cfg, actor="edge daemon")
        if "restored" not in done:  # a restore is logged as a warning, with what it lost
            log.info("%s", done)

    def _start_gallery(self) -> None:
        self.gallery = open_gallery(self.cfg, self.db_path)
        self.backups = Backups(self.db_path, self.cfg)
        self.matcher = self.gallery.matcher(self.cfg.match, self.engine.embedder.model_id)

    def _start_snapshots(self) -> None:
        """Snapshots of refused faces, if decision.snapshot_dir is set; old ones purged now."""
        d = self.cfg.decision
        self.snapshots = None
        if d.snapshot_dir is not None:
            self.snapshots = SnapshotStore(
                self.cfg.path(d.snapshot_dir),
                d.snapshot_max_mb,
                self.cfg.privacy.snapshot_days,
                min_free_mb=self.cfg.storage.min_free_mb,
            )
            self.snapshots.purge(time.time())
            self._last_purge = time.monotonic()  # housekeeping need not purge again at once

    def _start_events(self) -> None:
        self.events = EventWriter(self.db_path, memory_cap=self.cfg.storage.event_memory_cap)

    def _start_door(self) -> None:
        from .door import Door, install_fail_secure
        from .outputs import build_outputs

        if "relay" in self.cfg.door.outputs:
            self.door = Door.from_config(
                self.cfg.door,
                on_switch=lambda state: self._event("door", reason=state),
                on_held_open=lambda s: self._event("alarm", reason=f"door held open {s:.0f} s"),
                on_exit=lambda: self._event("door", reason="request to exit"),
                pin_factory=self._pin_factory,
            )
        delivered = self.metrics.delivered if self.metrics is not None else None
        self.outputs = build_outputs(
            self.cfg, self.db_path, self.door, self._pin_factory, on_delivered=delivered
        )
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
            install_fail_secure()

    def _start_metrics(self) -> None:
        if self.cfg.metrics.listen and self.metrics is None:
            from .metrics import Metrics

            self.metrics = Metrics(self.cfg.metrics.listen, self)

    def _start_mqtt(self) -> None:
        if self.cfg.mqtt.host and self.mqtt is None:
            from .mqtt import MqttBridge

            self.mqtt = MqttBridge(self.cfg, self.db_path, self)

    def _start_console(self) -> None:
        if self.cfg.console.listen and self.console is None:
            from .console.server import Console

            self.console = Console(self.cfg, self.db_path, self)

    def _start_voice(self) -> None:
        if self.voice is None and self.cfg.voice.enabled:
            from .voice import Voice

            self.voice = Voice(self.cfg.voice)

    def _start_camera(self) -> None:
        source = self.source
        assert source is not None
        realtime = self._realtime if self._realtime is not None else not source.finite
        self.grabber = FrameGrabber(
            source, realtime=realtime, reopen_max_seconds=self.cfg.camera.reopen_max_seconds
        ).start()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        self.stop.set()

    # -- the loop --------------------------------------------------------------

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
        self.stop.wait(wait)

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
            why = "no person id" if d.person_id is None else self.gallery.may_enter(d.person_id)
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
        if self.mqtt is not None:
            self.mqtt.nudge()

    # -- housekeeping: watchdog, reloads, status ----------------------------------

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
                self.matcher = self.gallery.matcher(self.cfg.match, self.engine.embedder.model_id)
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
            self.matcher = self.gallery.matcher(cfg.match, self.engine.embedder.model_id)
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

    # -- shutdown --------------------------------------------------------------

    def close(self) -> None:
        """Stop every part, door first (locked), events last (flushed)."""
        notify.stopping()
        self.stop.set()
        if self.door is not None:
            self.door.close()
        if self.outputs is not None:
            self.outputs.close()
        if self.console is not None:
            self.console.close()
        if self.mqtt is not None:
            if self.events is not None:
                self.events.flush(2.0)  # the last events reach the broker if it is up
            self.mqtt.close()
        if self.grabber is not None:
            self.grabber.close()
        if self.voice is not None:
            self.voice.flush(2.0)  # let a greeting already queued finish
            self.voice.close()
        if self.grabber is not None:  # start() got that far: every part has a state
            self.write_status()
        if self.backups is not None:
            self.backups.close()
        if self.events is not None:
            self.events.close()
        if self.gallery is not None:
            self.gallery.close()
        if self.metrics is not None:
            self.metrics.close()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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

