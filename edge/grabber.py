"""The frame grabber: a source read in a thread, only the newest frame kept, failures reopened.

:class:`FrameGrabber` runs a :class:`~edge.frames.Source` in a thread, keeps
a buffer of one frame so the consumer always sees the newest and latency
cannot grow, and reopens a failed source with exponential backoff
(:func:`backoff_seconds`) while the daemon keeps running. Frames that are not
a usable image (:func:`~edge.frames.frame_problem`) are dropped here.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Literal

from .errors import CameraError
from .frames import Frame, Source, frame_problem

#: The camera's logger, whichever of its modules speaks (log filters and tests name it).
log = logging.getLogger("edge.camera")

#: The first reopen waits this long; each failure doubles it up to the configured maximum.
REOPEN_FIRST_SECONDS = 0.5
#: Only bad frames for this long: the source is reopened, as if it had failed.
BAD_FRAMES_REOPEN_SECONDS = 5.0

#: Why a source stopped when ``read()`` returned None: the end of a file, a lost camera.
_NO_FRAME = "the source returned no frame"

GrabberState = Literal["starting", "streaming", "reconnecting", "ended", "stopped"]


def backoff_seconds(
    failures: int, max_seconds: float, first: float = REOPEN_FIRST_SECONDS
) -> float:
    """How long to wait after ``failures`` consecutive failures (1, 2, …): doubling, capped."""
    return min(max_seconds, first * 2.0 ** max(0, min(failures - 1, 60)))


class FrameGrabber:
    """Reads a :class:`Source` in a thread and hands out only the newest frame.

    The buffer holds one frame: a new frame replaces an unread one (counted in
    ``dropped``), so a slow consumer always gets the latest and latency never
    grows. Live sources run free. A finite source with ``realtime=False`` gives
    every frame in order, waiting for the consumer (deterministic replay); with
    ``realtime=True`` it is paced at its fps and drops like a camera.

    A source that fails to open, raises, or stops delivering is reopened after
    0.5 s, doubling up to ``reopen_max_seconds``; the state change is logged
    once, not every attempt. Frames :func:`frame_problem` rejects are dropped
    and counted in ``bad_frames``, logged when they start and when good frames
    return; only bad frames for ``bad_frames_reopen_seconds`` count as a
    failure. ``state`` is "starting", "streaming", "reconnecting", "ended" (a
    finite source ran out) or "stopped"; ``last_frame_mono`` is the
    ``time.monotonic()`` of the newest good frame, for a watchdog. All timing
    is monotonic: a wall clock set back or forward changes nothing here.
    """

    def __init__(
        self,
        source: Source,
        *,
        realtime: bool = True,
        reopen_max_seconds: float = 30.0,
        reopen_first_seconds: float = REOPEN_FIRST_SECONDS,
        bad_frames_reopen_seconds: float = BAD_FRAMES_REOPEN_SECONDS,
    ):
        self.source = source
        self.bad_frames_reopen_seconds = bad_frames_reopen_seconds
        self.realtime = realtime or not source.finite
        self.reopen_max_seconds = reopen_max_seconds
        self.reopen_first_seconds = reopen_first_seconds
        self.state: GrabberState = "starting"
        self.last_frame_mono: float | None = None
        self.frames_read = 0
        self.dropped = 0
        self.bad_frames = 0
        self.reopen_attempts = 0
        self._dropping_bad = False
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ended(self) -> bool:
        """True once a finite source has delivered its last frame."""
        return self.state == "ended"

    def start(self) -> FrameGrabber:
        """Start the reader thread (once); returns self."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(
                target=self._run, name=f"grab:{self.source.name}", daemon=True
            )
            self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame, waiting up to ``timeout`` s; None on timeout, end or stop."""
        if self._thread is None:
            raise RuntimeError("FrameGrabber.get() before start()")
        with self._cond:
            self._cond.wait_for(
                lambda: self._slot is not None or self.state in ("ended", "stopped"), timeout
            )
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the source; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: reader did not stop within %.1f s", self.source.name, timeout)
        if self.state != "ended":
            self._set_state("stopped")

    def __enter__(self) -> FrameGrabber:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _set_state(self, state: GrabberState, reason: str = "") -> None:
        with self._cond:
            if state == self.state or self.state == "stopped":
                return
            self.state = state
            self._cond.notify_all()
        if state == "reconnecting":
            log.warning("%s; reopening with backoff", reason)
        else:
            log.info("%s: %s%s", self.source.name, state, f" ({reason})" if reason else "")

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if not self.realtime:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self._cond.notify_all()

    def _stream(self) -> str:
        """Read until the source ends, fails or we stop; returns why it stopped."""
        count = 0
        pace = self.source.finite and self.realtime
        t0 = last_good = time.monotonic()
        shape: tuple[int, ...] | None = None  # of this stream's first good frame
        while not self._stop.is_set():
            if pace and self._stop.wait(max(0.0, t0 + count / self.source.fps - time.monotonic())):
                break
            frame = self.source.read()
            if frame is None:
                return _NO_FRAME
            count += 1
            problem = frame_problem(frame, shape)
            if problem is not None:
                self._bad_frame(problem)
                if time.monotonic() - last_good > self.bad_frames_reopen_seconds:
                    return f"only bad frames for {self.bad_frames_reopen_seconds:g} s ({problem})"
                continue
            if self.source.fixed_size and shape is None:
                shape = frame.image.shape
            last_good = time.monotonic()
            self._good_frame()
            self.frames_read += 1
            self.last_frame_mono = frame.t_mono
            self._set_state("streaming")
            self._put(frame)
        return "stopped"

    def _bad_frame(self, problem: str) -> None:
        self.bad_frames += 1
        if not self._dropping_bad:
            self._dropping_bad = True
            log.warning("%s: dropping bad frames (%s)", self.source.name, problem)

    def _good_frame(self) -> None:
        if self._dropping_bad:
            self._dropping_bad = False
            log.info("%s: good frames again (%d bad dropped)", self.source.name, self.bad_frames)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            before, reason = self.frames_read, ""
            try:
                self.source.open()
                reason = self._stream()
            except Exception as e:  # any failure of a device or decoder means: reopen later
                reason = str(e) if isinstance(e, CameraError) else f"{type(e).__name__}: {e}"
            finally:
                self.source.close()
            count = self.frames_read - before
            if self._stop.is_set():
                break
            if self.source.finite and count > 0 and reason == _NO_FRAME:
                self._set_state("ended")
                return
            if not reason.startswith(self.source.name):
                reason = f"{self.source.name}: {reason}"
            failures = 1 if count > 0 else failures + 1
            self.reopen_attempts += 1
            self._set_state("reconnecting", f"{reason} (after {count} frames)" if count else reason)
            log.debug("retry %d: %s", failures, reason)
            self._stop.wait(
                backoff_seconds(failures, self.reopen_max_seconds, self.reopen_first_seconds)
            )
