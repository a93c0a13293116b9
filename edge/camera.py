"""Camera sources behind one small interface, and a grabber that keeps only the newest frame.

A :class:`Source` is opened, read frame by frame and closed; it knows nothing of
threads or retries. :func:`open_source` picks the right one from the configured
string. :class:`FrameGrabber` runs a source in a thread, keeps a buffer of one
frame so the consumer always sees the newest and latency cannot grow, and
reopens a failed source with exponential backoff while the daemon keeps running.
Frames that are not a usable image (a driver handing back None, an empty or
truncated buffer, the wrong pixel type) are dropped before anyone sees them.
:class:`LoopSource` replays a file over and over, for soak runs.

The camera is three modules and this one: the frame and the source interface
in :mod:`edge.frames`, the sources themselves in :mod:`edge.sources`, the
grabber in :mod:`edge.grabber`. Here is :func:`open_source`, the one place
that knows which configured string means which source; every name of those
modules is re-exported, so ``from edge.camera import X`` keeps working.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .config import CameraConfig
from .errors import ConfigError
from .frames import MIN_FRAME_SIDE, Frame, Source, _frame, frame_problem
from .grabber import (
    _NO_FRAME,
    BAD_FRAMES_REOPEN_SECONDS,
    REOPEN_FIRST_SECONDS,
    FrameGrabber,
    GrabberState,
    backoff_seconds,
)
from .sources import (
    IMAGE_SUFFIXES,
    NETWORK_TIMEOUT_MS,
    FolderSource,
    LoopSource,
    OpenCVKind,
    OpenCVSource,
    Picamera2Source,
    _redact,
)


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


__all__ = [
    "BAD_FRAMES_REOPEN_SECONDS",
    "IMAGE_SUFFIXES",
    "MIN_FRAME_SIDE",
    "NETWORK_TIMEOUT_MS",
    "REOPEN_FIRST_SECONDS",
    "_NO_FRAME",
    "FolderSource",
    "Frame",
    "FrameGrabber",
    "GrabberState",
    "LoopSource",
    "OpenCVKind",
    "OpenCVSource",
    "Picamera2Source",
    "Source",
    "_frame",
    "_redact",
    "backoff_seconds",
    "frame_problem",
    "open_source",
]
