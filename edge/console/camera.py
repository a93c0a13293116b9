"""The daemon's camera as an enrollment source: the frames the frame loop hands the feed.

The daemon holds the camera; enrolling from the console must not open it a
second time. :class:`FeedSource` is a :class:`edge.camera.Source` that reads
the newest frames the loop publishes (asking for them keeps the feed on), so
enrollment goes through the very code ``edge enroll --camera`` uses
(:func:`edge.enroll.templates_from_camera`): same checks, same all-or-nothing.
"""

from __future__ import annotations

from ..camera import Frame, Source
from ..errors import CameraError
from .feed import LiveFeed

#: A camera that gives no new frame for this long has stopped, as far as enrollment goes.
FRAME_TIMEOUT_SECONDS = 5.0


class FeedSource(Source):
    """Each :meth:`read` is the next new frame of the live feed (never the same one twice)."""

    finite = False
    fixed_size = True

    def __init__(self, feed: LiveFeed) -> None:
        self.feed = feed
        self.name = "the daemon's camera"
        self.fps = feed.fps
        self._last: int | None = None

    def open(self) -> None:
        self._last = None
        if self.feed.newest_frame(None, FRAME_TIMEOUT_SECONDS) is None:
            raise CameraError(f"{self.name}: no frame (is the camera streaming?)")

    def read(self) -> Frame | None:
        frame = self.feed.newest_frame(self._last, FRAME_TIMEOUT_SECONDS)
        if frame is not None:
            self._last = frame.index
        return frame

    def close(self) -> None:
        self._last = None
