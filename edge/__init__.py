"""edge-access: offline face-recognition access control for a door, gate or kiosk."""

import os as _os

# A second line of defence behind edge.image's header check: OpenCV itself
# refuses to allocate more than this many pixels for one decoded image.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64_000_000))
# OpenCV and FFmpeg print their own warnings on every failed camera open;
# edge-access logs camera state changes itself, once.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
