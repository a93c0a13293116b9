"""A captured frame, the interface every camera source has, and what makes a frame usable.

:class:`Frame` is one image and when it was taken; :class:`Source` is what
:mod:`edge.sources` implements for each kind of camera, stream, file or
folder; :func:`frame_problem` says why a frame cannot be processed (a driver
handing back None, an empty or truncated buffer, the wrong pixel type) so the
grabber (:mod:`edge.grabber`) can drop it before anyone sees it.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import cv2
import numpy as np

#: A frame narrower or shorter than this many pixels is not an image of a door.
MIN_FRAME_SIDE = 16


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
