"""The camera sources: the Pi camera, OpenCV (device, stream, pipeline, file), a folder, a loop.

Each is a :class:`~edge.frames.Source`: opened, read frame by frame and
closed; none knows of threads or retries (that is :mod:`edge.grabber`).
:func:`edge.camera.open_source` picks the right one from the configured
string. :class:`LoopSource` replays a file over and over, for soak runs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import cv2

from .errors import CameraError, ImageError
from .frames import Frame, Source, _frame
from .image import read_image

#: The camera's logger, whichever of its modules speaks (log filters and tests name it).
log = logging.getLogger("edge.camera")

#: File name endings a :class:`FolderSource` treats as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Network streams give up a connect or a read after this long instead of hanging.
NETWORK_TIMEOUT_MS = 5000


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
