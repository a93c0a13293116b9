"""The door daemon's life: its parts built in order, signals, READY, and the way out.

:class:`Lifecycle` is the base of :class:`~edge.daemon.Daemon`: it holds the
daemon's state, brings the parts up as a list of named steps (source, models,
gallery, events, metrics, snapshots, door, mqtt, voice, camera), installs the
SIGTERM/SIGINT/SIGHUP handlers and the fail-secure hooks, tells systemd READY
once the first frame is in, and closes every part again, door first (locked),
events last (flushed). The frame loop is :mod:`edge.daemon`; the periodic work
(watchdog, reload, status file) is :mod:`edge.housekeeping`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import notify
from .backup import Backups, startup_check
from .camera import FrameGrabber, Source, open_source
from .config import Config
from .decision import Decider, Decision, Tracker
from .engine import Engine
from .errors import CameraError
from .events import EventWriter
from .gallery import Gallery, open_gallery
from .outputs import Outputs
from .rules import door_place
from .snapshots import SnapshotStore
from .storage import StorageMonitor

#: The daemon's logger, whichever of its modules speaks (journal filters name it).
log = logging.getLogger("edge.daemon")


class Lifecycle:
    """The daemon's state and its start-up and shutdown; see :class:`~edge.daemon.Daemon`.

    ``source``, ``voice`` and ``pin_factory`` may be handed in (tests give a
    folder source, a WAV-rendering voice and gpiozero's MockFactory);
    otherwise they are made from the config. ``handle_signals`` installs the
    SIGTERM/SIGINT/SIGHUP handlers and the fail-secure hooks (the CLI does).
    """

    if TYPE_CHECKING:  # provided by Daemon and Housekeeping

        def _event(self, kind: str, **fields: Any) -> None: ...

        def write_status(self) -> None: ...

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
        self.fleet: Any = None  # edge.fleet.sync.SyncWorker when the door is in a fleet
        self.console: Any = None  # edge.console.server.Console, when console.listen is set
        self.voice = voice
        self._pin_factory = pin_factory
        self._handle_signals = handle_signals
        self.stop = threading.Event()
        self._wake = threading.Event()  # ends an idle wait early (stop, a synced change)
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
        self.place = door_place(cfg)  # this door's name and zone, for access rules

    # -- start-up --------------------------------------------------------------

    def start(self) -> Self:
        """Bring everything up in order; any failure leaves the door locked."""
        steps = [
            ("source", self._check_source),
            ("models", self._start_models),
            ("gallery check", self._check_gallery),
            ("gallery", self._start_gallery),
            ("events", self._start_events),
            ("fleet", self._start_fleet),
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
        if self.loop:  # edge run --loop: played again from the start each time it ends
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
        self.matcher = self._build_matcher()

    def _build_matcher(self) -> Any:
        """A matcher over the gallery for the running embedder, judging rules at this door."""
        assert self.gallery is not None
        return self.gallery.matcher(self.cfg.match, self.engine.embedder.model_id, self.place)

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

    def _start_fleet(self) -> None:
        """The sync worker, when this door belongs to a fleet (psycopg is imported only then)."""
        if self.fleet is not None or not (
            self.cfg.fleet.url or os.environ.get("EDGE_FLEET_URL")
        ):
            return
        from .fleet.sync import SyncWorker

        self.fleet = SyncWorker(
            self.cfg, self.db_path, door=self.place.door, on_change=self._gallery_moved
        ).start()

    def _gallery_moved(self) -> None:
        """Called by the sync worker after it changed the gallery: reload at the next turn
        (an idle loop is woken for it)."""
        self._last_poll = 0.0
        self._wake.set()

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
            if self.events is not None:  # woken by each commit, not by polling the table
                self.events.on_written(self.mqtt.nudge)

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
        self._wake.set()

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
        if self.fleet is not None:  # after the events: what is written is pushed next time
            self.fleet.close()
        if self.gallery is not None:
            self.gallery.close()
        if self.metrics is not None:
            self.metrics.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
