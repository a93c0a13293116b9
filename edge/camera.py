"""Camera sources behind one small interface, and a grabber that keeps only the newest frame.

A :class:`Source` is opened, read frame by frame and closed; it knows nothing of
threads or retries. :func:`open_source` picks the right one from the configured
string. :class:`FrameGrabber` runs a source in a thread, keeps a buffer of one
frame so the consumer always sees the newest and latency cannot grow, and
reopens a failed source with exponential backoff while the daemon keeps running.
Frames that are not a usable image (a driver handing back None, an empty or
truncated buffer, the wrong pixel type) are dropped before anyone sees them.
:class:`LoopSource` replays a file over and over, for soak runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import cv2
import numpy as np

from .config import CameraConfig
from .errors import CameraError, ConfigError, ImageError
from .image import read_image

log = logging.getLogger(__name__)

#: File name endings a :class:`FolderSource` treats as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: The first reopen waits this long; each failure doubles it up to the configured maximum.
REOPEN_FIRST_SECONDS = 0.5
#: Network streams give up a connect or a read after this long instead of hanging.
NETWORK_TIMEOUT_MS = 5000
#: A frame narrower or shorter than this many pixels is not an image of a door.
MIN_FRAME_SIDE = 16
#: Only bad frames for this long: the source is reopened, as if it had failed.
BAD_FRAMES_REOPEN_SECONDS = 5.0

#: Why a source stopped when ``read()`` returned None: the end of a file, a lost camera.
_NO_FRAME = "the source returned no frame"

GrabberState = Literal["starting", "streaming", "reconnecting", "ended", "stopped"]


@dataclass(frozen=True, eq=False)  # eq=False: identity, as arrays have no truth value
class Frame:
    """One captured image and when it was taken.

    ``image`` is BGR uint8 (H, W, 3). ``index`` counts frames from this source
    (from 0 in a file or folder). ``t_mono``/``t_wall`` are ``time.monotonic()``
    and ``time.time()`` when the frame was read. ``source_ts`` is the media time
    in seconds (file position, or index/fps for a folder, sensor time for
    picamera2), ``None`` where the source has no trustworthy clock.
    """

    image: np.ndarray
    index: int
    t_mono: float
    t_wall: float
    source_ts: float | None = None


class Source(ABC):
    """A camera, stream, video file or folder of images: open, read, close.

    ``finite`` sources (files, folders) end; ``read()`` returning ``None`` means
    the end for them and a lost connection for live ones. ``fps`` is the
    nominal rate, used to pace replays. ``open()`` raises :class:`CameraError`.
    """

    name: str
    finite: bool
    fps: float
    #: Every frame between an open and a close has the same shape (a camera, a
    #: video file); a frame of another shape is then garbage. A folder of photos is not.
    fixed_size: bool = True

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call twice or before ``open()``."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _frame(image: np.ndarray, index: int, source_ts: float | None) -> Frame:
    """A Frame stamped now; grey and BGRA become BGR, anything odder is left for
    :func:`frame_problem` to reject (a bad buffer is a dropped frame, not a crash)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return Frame(image, index, time.monotonic(), time.time(), source_ts)


def frame_problem(frame: object, expected: tuple[int, ...] | None = None) -> str | None:
    """Why ``frame`` cannot be processed, or None if it is a usable BGR image.

    Usable means a :class:`Frame` whose ``image`` is a uint8 array of shape
    (H, W, 3) with both sides at least :data:`MIN_FRAME_SIDE`, and, when
    ``expected`` is given (the shape of this stream's first good frame), that
    same shape: a frame that shrank is a truncated buffer. Its ``source_ts``
    must be None or a finite number: it is the decision clock, and a NaN there
    would make every cooldown comparison false.
    """
    if not isinstance(frame, Frame):
        return f"not a frame ({type(frame).__name__})"
    ts = frame.source_ts
    if ts is not None and (not isinstance(ts, int | float) or not math.isfinite(ts)):
        return f"bad timestamp {ts!r}"
    image = frame.image
    if not isinstance(image, np.ndarray):
        return f"no image ({type(image).__name__})"
    if image.dtype != np.uint8:
        return f"pixels are {image.dtype}, not uint8"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"shape {image.shape} is not (height, width, 3)"
    if min(image.shape[:2]) < MIN_FRAME_SIDE:
        return f"image too small {image.shape}"
    if expected is not None and image.shape != expected:
        return f"shape {image.shape} differs from the stream's {expected} (truncated?)"
    return None


class Picamera2Source(Source):
    """The Raspberry Pi camera through picamera2, imported only when opened.

    picamera2 comes from apt on Raspberry Pi OS, so it is not a dependency of
    this package and a machine without it can still use every other source.
    """

    finite = False

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, camera_num: int = 0):
        self.name = f"picamera2:{camera_num}"
        self.fps = fps
        self._size = (width, height)
        self._camera_num = camera_num
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(
                "picamera2 is not installed: on Raspberry Pi OS run "
                "'sudo apt install python3-picamera2' and create the venv with "
                "--system-site-packages"
            ) from None
        frame_us = int(1_000_000 / self.fps)
        try:
            self._cam = Picamera2(self._camera_num)
            # picamera2's "RGB888" is laid out B, G, R in memory: OpenCV's BGR.
            config = self._cam.create_video_configuration(
                main={"size": self._size, "format": "RGB888"},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
            )
            self._cam.configure(config)
            self._cam.start()
        except Exception as e:
            self.close()
            raise CameraError(f"{self.name}: cannot start camera ({e})") from None

    def read(self) -> Frame | None:
        if self._cam is None:
            raise CameraError(f"{self.name}: not open")
        request = self._cam.capture_request()
        try:
            image = request.make_array("main")
            sensor_ns = request.get_metadata().get("SensorTimestamp")
        finally:
            request.release()
        frame = _frame(image, self._index, None if sensor_ns is None else sensor_ns / 1e9)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as e:  # closing a failed camera must not hide the first error
                log.debug("%s: close failed: %s", self.name, e)


OpenCVKind = Literal["device", "url", "pipeline", "file"]


def _redact(url: str) -> str:
    """The URL without a password, so it can be logged."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


class OpenCVSource(Source):
    """A V4L2/USB device, an RTSP/HTTP stream, a GStreamer pipeline or a video file.

    Devices are asked for ``width``x``height`` at ``fps`` and a one-frame driver
    buffer (less latency); streams get connect/read timeouts so a dead camera
    is noticed instead of hanging the reader. A file is finite and reports its
    own frame rate and each frame's media time.
    """

    def __init__(
        self,
        spec: str,
        kind: OpenCVKind,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
    ):
        self.spec = spec
        self.kind = kind
        self.name = _redact(spec) if kind == "url" else spec
        self.finite = kind == "file"
        self.fps = fps
        self._size = (width, height)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        self.close()
        if self.kind == "file" and not os.path.isfile(self.spec):
            raise CameraError(f"{self.name}: no such video file")
        if self.kind == "device":
            target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
            cap = cv2.VideoCapture(target)
        elif self.kind == "url":
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                NETWORK_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                NETWORK_TIMEOUT_MS,
            ]
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, timeouts)
        elif self.kind == "pipeline":
            cap = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name}: cannot open {self.kind}")
        if self.kind == "device":
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._size[1])
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.finite:
            self._index = 0
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            if 0 < file_fps < 1000:
                self.fps = file_fps
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.name}: not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        ts: float | None = None
        if self.finite:
            pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            ts = pos if (pos > 0 or self._index == 0) else self._index / self.fps
        frame = _frame(image, self._index, ts)
        self._index += 1
        return frame

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class FolderSource(Source):
    """The images of a folder in name order, one frame each, at a nominal ``fps``.

    For replaying a scene without a camera. Files are read through
    :func:`edge.image.read_image`, so a decompression bomb is refused from its
    header; files that cannot be decoded are skipped with a warning. A folder
    that is missing or holds no images fails to open, so the grabber retries
    until it is filled.
    """

    finite = True
    fixed_size = False

    def __init__(self, folder: str | os.PathLike[str], fps: float = 30.0):
        self.folder = Path(folder)
        self.name = str(folder)
        self.fps = fps
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0

    def open(self) -> None:
        try:
            files = sorted(
                (p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda p: p.name,
            )
        except OSError as e:
            raise CameraError(f"{self.name}: cannot list folder ({e.strerror or e})") from None
        if not files:
            raise CameraError(f"{self.name}: no images in folder")
        self._files, self._pos, self._index = files, 0, 0

    def read(self) -> Frame | None:
        while self._pos < len(self._files):
            path = self._files[self._pos]
            self._pos += 1
            try:
                image = read_image(path).bgr  # size-checked before decoding
            except ImageError as e:
                log.warning("skipping %s", e)
                continue
            frame = _frame(image, self._index, self._index / self.fps)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        self._files, self._pos = [], 0


class LoopSource(Source):
    """A file or folder played from the start again each time it ends; ``loops`` times, or forever.

    For soak runs and tests that need a long stream from a short clip. It is a
    replay (``finite``), so the grabber paces it at its frame rate, but with
    ``loops=None`` it never ends. Frame indices and media times carry on across
    restarts and reopens, so the decision clock never goes back.
    """

    def __init__(self, inner: Source, loops: int | None = None):
        if not inner.finite:
            raise ValueError(f"{inner.name}: only a file or folder can be looped")
        self.inner = inner
        self.loops = loops
        self.name = f"loop:{inner.name}"
        self.finite = True
        self.fixed_size = inner.fixed_size
        self.fps = inner.fps
        #: How many times the inner source has been played to its end.
        self.completed = 0
        self._index = 0
        self._offset = 0.0  # added to the inner source's media time
        self._next_ts = 0.0  # the media time our next frame gets at least

    def open(self) -> None:
        self.inner.open()
        self.fps = self.inner.fps
        self._offset = self._next_ts

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            self.completed += 1
            if self.loops is not None and self.completed >= self.loops:
                return None
            self.inner.close()
            self.open()
            frame = self.inner.read()
            if frame is None:  # nothing left to loop
                return None
        inner_ts = frame.source_ts if frame.source_ts is not None else frame.index / self.fps
        ts = self._offset + inner_ts
        self._next_ts = ts + 1.0 / self.fps
        looped = replace(frame, index=self._index, source_ts=ts)
        self._index += 1
        return looped

    def close(self) -> None:
        self.inner.close()


def open_source(spec: str, cfg: CameraConfig) -> Source:
    """The source a configured string names; built, not opened (the grabber opens it).

    "picamera2"; a device index ("0") or /dev/video path; a URL ("rtsp://…");
    a GStreamer pipeline (anything with "!"); a folder; otherwise a video file.
    A path that does not exist yet is a video file if its name has a suffix,
    else a folder.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("camera.source: empty")
    opts: dict[str, Any] = {"width": cfg.width, "height": cfg.height, "fps": cfg.fps}
    if spec.lower() == "picamera2":
        return Picamera2Source(**opts)
    if "!" in spec:
        return OpenCVSource(spec, "pipeline", **opts)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return OpenCVSource(spec, "device", **opts)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        return OpenCVSource(spec, "url", **opts)
    path = Path(spec).expanduser()
    if path.is_dir() or (not path.exists() and not path.suffix):
        return FolderSource(path, fps=cfg.fps)
    return OpenCVSource(str(path), "file", **opts)


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


__all__ = [
    "FolderSource",
    "Frame",
    "FrameGrabber",
    "LoopSource",
    "OpenCVSource",
    "Picamera2Source",
    "Source",
    "backoff_seconds",
    "frame_problem",
    "open_source",
]
