"""Prometheus metrics for the daemon, on ``metrics.listen`` (off by default).

prometheus-client is imported only when metrics are on. The frame loop does
no more than put a tuple on a queue (:meth:`Metrics.frame`, :meth:`event`);
one worker thread turns them into counters and histograms. Gauges (camera up,
lockout, events waiting, people enrolled) are read from the daemon when
Prometheus scrapes. No label names a person: decisions are counted by
decision and a short reason word (``recognised``, ``liveness``, ``lockout``,
``inactive``, ...), never by who.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from typing import Any

from .errors import ConfigError

__all__ = ["Metrics", "parse_listen", "reason_label"]

log = logging.getLogger(__name__)

_STOP = object()
#: How long the worker lets values gather before counting them (a scrape may lag this much).
BATCH_SECONDS = 0.2
_WORD = re.compile(r"[a-z_]+")


def parse_listen(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (host may be empty = all addresses) as (host, port)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"metrics.listen {text!r}: expected HOST:PORT")
    return host or "0.0.0.0", int(port)


def reason_label(reason: str | None) -> str:
    """A decision's reason as one bounded word: the text before any ':' or ';', first word."""
    head = re.split(r"[:;(]", (reason or "").lower(), maxsplit=1)[0]
    m = _WORD.search(head)
    return m.group(0) if m else "none"


class Metrics:
    """The registry, its HTTP endpoint and the worker that feeds it.

    ``daemon`` is read at scrape time for the gauges (any object with the
    attributes used in :meth:`_gauges`).
    """

    def __init__(self, listen: str, daemon: Any) -> None:
        import prometheus_client as pc

        host, port = parse_listen(listen)
        self.registry = reg = pc.CollectorRegistry()
        self.frames = pc.Counter("edge_frames", "Frames processed", registry=reg)
        self.failed_frames = pc.Counter(
            "edge_failed_frames", "Frames that raised and were dropped", registry=reg
        )
        self.frame_seconds = pc.Histogram(
            "edge_frame_processing_seconds", "Time to process one frame", registry=reg,
            buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0),
        )
        self.capture_seconds = pc.Histogram(
            "edge_capture_to_decision_seconds",
            "From a frame's capture to its processing done (decisions included)", registry=reg,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2),
        )
        self.decisions = pc.Counter(
            "edge_decisions", "Access decisions", ["decision", "reason"], registry=reg
        )
        self.liveness = pc.Histogram(
            "edge_liveness_score", "Passive liveness score of decided faces", registry=reg,
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
        )
        self.unlocks = pc.Counter("edge_door_unlocks", "Times the relay unlocked", registry=reg)
        self.alarms = pc.Counter("edge_alarms", "Alarm events (lockout, held open)", registry=reg)
        self.output_seconds = pc.Histogram(
            "edge_output_delivery_seconds", "From a grant's decision to an output done",
            ["output"], registry=reg,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        d = daemon
        for name, doc, fn in (
            ("edge_camera_up", "1 while the camera delivers frames",
             lambda: float(getattr(d.grabber, "state", None) == "streaming")),
            ("edge_lockout_active", "1 while a lockout stops all grants",
             lambda: float(bool(d.decider.lockout.locked))),
            ("edge_events_waiting", "Events not yet in the database",
             lambda: float(d.events.waiting if d.events is not None else 0)),
            ("edge_people_enrolled", "People in the loaded gallery",
             lambda: float(d.matcher.person_count)),
        ):
            pc.Gauge(name, doc, registry=reg).set_function(_safe(fn))
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="metrics", daemon=True)
        self._worker.start()
        try:
            self._server, self._server_thread = pc.start_http_server(port, host, registry=reg)
        except OSError as e:
            self._q.put(_STOP)
            raise ConfigError(f"metrics.listen {listen}: cannot listen ({e.strerror})") from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    # -- what the daemon calls (a queue put each) ----------------------------------

    def frame(self, seconds: float, latency: float) -> None:
        self._q.put(("frame", seconds, latency))

    def failed(self) -> None:
        self._q.put(("failed",))

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        self._q.put(("event", kind, fields))

    def delivered(self, output: str, _grant: Any, seconds: float) -> None:
        self._q.put(("delivered", output, seconds))

    def close(self) -> None:
        self._q.put(_STOP)
        self._worker.join(2.0)
        self._server.shutdown()
        self._server.server_close()

    # -- the worker ------------------------------------------------------------------

    def _work(self) -> None:
        """Drain the queue a few times a second: one wake-up per batch, not per frame,
        so the worker seldom competes with the frame loop for the GIL."""
        while True:
            item = self._q.get()
            batch = [item]
            time.sleep(BATCH_SECONDS)
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._q.get_nowait())
            for it in batch:
                if it is _STOP:
                    return
                try:
                    self._apply(it)
                except Exception:
                    log.exception("metrics: %r not counted", it[0])

    def _apply(self, item: tuple[Any, ...]) -> None:
        what = item[0]
        if what == "frame":
            self.frames.inc()
            self.frame_seconds.observe(item[1])
            self.capture_seconds.observe(item[2])
        elif what == "failed":
            self.failed_frames.inc()
        elif what == "delivered":
            self.output_seconds.labels(item[1]).observe(item[2])
        elif what == "event":
            kind, f = item[1], item[2]
            if kind == "access":
                self.decisions.labels(f.get("decision") or "none",
                                      reason_label(f.get("reason"))).inc()
                if f.get("liveness") is not None:
                    self.liveness.observe(float(f["liveness"]))
            elif kind == "door" and f.get("reason") == "unlocked":
                self.unlocks.inc()
            elif kind == "alarm":
                self.alarms.inc()


def _safe(fn: Any) -> Any:
    def read() -> float:
        try:
            return float(fn())
        except Exception:  # a part not started yet (or closed): report 0, never fail a scrape
            return 0.0

    return read
