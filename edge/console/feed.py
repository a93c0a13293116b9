"""The live picture: what the frame loop hands over, and the JPEGs made from it on demand.

The frame loop must not slow down because someone is watching, and must pay
nothing when nobody is. So it reads one flag per frame (:attr:`LiveFeed.watching`)
and, only while it is set, hands over the frame and a small frozen summary of
each face (:meth:`LiveFeed.publish`: a few tuples and one reference
assignment). Everything else happens on the feed's own thread: at most
``fps`` times a second it takes the newest frame, draws the boxes and labels,
encodes a JPEG (OpenCV releases the GIL while it does) and wakes the viewers.
A viewer is anyone who asked for a frame in the last :data:`VIEWER_SECONDS`;
when the last one goes, the flag drops and the frames are let go.

Each encoded frame keeps the capture time of its camera frame (wall clock), so
a client can measure camera → screen latency itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np

from ..align import yaw
from ..camera import Frame
from ..config import Config

#: Someone who asked for a frame this recently still counts as watching.
VIEWER_SECONDS = 3.0
#: How often the encoder looks for a newer frame once its interval has passed.
POLL_SECONDS = 0.005
#: How much nicer than the daemon the encoder thread runs (os.setpriority on its thread id).
ENCODER_NICE = 10

GREEN, RED, AMBER = (60, 200, 60), (40, 40, 230), (0, 190, 255)


@dataclass(frozen=True)
class FaceState:
    """One face in one frame, as the live view shows it.

    ``waiting`` says what the decision still needs ("votes 1/3", "blink",
    "liveness frames 2/5", "a frontal face", ...) or "decided" (which the
    feed turns into the decision, "granted: ..." or "denied: ...", when the
    daemon still holds it).
    """

    box: tuple[float, float, float, float]
    track: int
    name: str | None
    similarity: float | None
    liveness: float | None
    waiting: str

    def label(self) -> str:
        sim = "" if self.similarity is None else f" {self.similarity:.2f}"
        live = "" if self.liveness is None else f" live {self.liveness:.2f}"
        return f"#{self.track} {self.name or 'unknown'}{sim}{live}"


@dataclass(frozen=True, eq=False)
class LiveFrame:
    """A camera frame and its faces, handed over by the frame loop."""

    frame: Frame
    faces: tuple[FaceState, ...]


@dataclass(frozen=True, eq=False)
class Encoded:
    """One JPEG of the live view, numbered; ``captured`` is its frame's wall-clock capture time."""

    seq: int
    jpeg: bytes
    captured: float
    index: int
    faces: tuple[FaceState, ...]

    def faces_json(self) -> str:
        """The faces as ASCII JSON (fit for an HTTP header)."""
        return json.dumps([_rounded(asdict(f)) for f in self.faces])


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float):
            v = round(v, 4)
        elif isinstance(v, tuple):
            v = [round(float(x), 1) for x in v]
        out[k] = v
    return out


def waiting_for(track: Any, det: Any, cfg: Config, frame: int) -> str:
    """What ``track``'s decision is waiting for, in the :class:`edge.decision.Decider`'s order."""
    if track.decided:
        return "decided"
    dc, lc = cfg.decision, cfg.liveness
    if not track.votes:
        if det.eye_distance < cfg.align.min_eye_distance:
            return f"closer (eyes {det.eye_distance:.0f} px, need {cfg.align.min_eye_distance:.0f})"
        if yaw(det.keypoints) > dc.max_yaw:
            return "a frontal face"
        return f"votes 0/{dc.agree_matches}"
    recent = [v.name for v in track.votes if v.frame > frame - dc.window_frames]
    latest = track.votes[-1].name
    n = recent.count(latest)
    if n < dc.agree_matches:
        return f"votes {n}/{dc.agree_matches}"
    if latest is None:
        return "decided"  # an unknown face, reported
    needs = []
    if lc.mode in ("passive", "both") and len(track.passive) < lc.passive_frames:
        needs.append(f"liveness frames {len(track.passive)}/{lc.passive_frames}")
    if lc.mode in ("active", "both") and track.blink is not None and not track.blink.blinked:
        needs.append("blink")
    return ", ".join(needs) or "decision"


def face_states(
    dets: Sequence[Any], tracks: Sequence[Any], cfg: Config, frame: int
) -> tuple[FaceState, ...]:
    """A frozen summary of each detection and its track (read on the frame loop's thread)."""
    out = []
    lc = cfg.liveness
    for det, tr in zip(dets, tracks, strict=True):
        vote = tr.votes[-1] if tr.votes else None
        scores = tr.passive[-lc.passive_frames:]
        out.append(FaceState(
            tuple(float(v) for v in det.box),  # type: ignore[arg-type]
            tr.id,
            vote.name if vote is not None else None,
            float(vote.similarity) if vote is not None else None,
            sum(scores) / len(scores) if scores else None,  # a few floats: no numpy call
            waiting_for(tr, det, cfg, frame),
        ))
    return tuple(out)


def draw(bgr: np.ndarray, faces: Sequence[FaceState]) -> np.ndarray:
    """A copy of the frame with each face's box, label and what it waits for."""
    img = bgr.copy()
    for f in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        if f.waiting.startswith("granted"):
            colour = GREEN
        elif f.waiting.startswith("denied") or (f.waiting == "decided" and f.name is None):
            colour = RED
        else:
            colour = GREEN if f.waiting == "decided" else AMBER
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
        lines = [f.label(), f.waiting]
        y = max(14, y1 - 6 - 16 * (len(lines) - 1))
        for line in lines:
            (w, h), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            cv2.rectangle(img, (x1, y - h - 3), (x1 + w + 4, y + 3), colour, -1)
            cv2.putText(img, line, (x1 + 2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
            y += 16
    return img


class LiveFeed:
    """The holder between the frame loop and the viewers, and its encoder thread."""

    def __init__(self, cfg: Config, decisions: Callable[[], Iterable[Any]] | None = None) -> None:
        self.cfg = cfg
        #: The daemon's recent decisions (read on this thread): a decided face says which.
        self._decisions = decisions
        self.fps = cfg.console.max_fps
        self.quality = cfg.console.jpeg_quality
        #: Read by the frame loop once per frame: hand frames over only while True.
        self.watching = False
        #: The newest frame the loop handed over (its one assignment per frame).
        self.latest: LiveFrame | None = None
        self.encoded: Encoded | None = None
        self._last_viewer = -float("inf")
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.encoded_frames = 0
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    # -- the frame loop's side ----------------------------------------------------

    def publish(self, frame: Frame, dets: Sequence[Any], tracks: Sequence[Any]) -> None:
        """Hand over ``frame`` and its faces (call only while :attr:`watching`)."""
        self.latest = LiveFrame(frame, face_states(dets, tracks, self.cfg, frame.index))

    # -- the viewers' side --------------------------------------------------------

    def touch(self) -> None:
        """A viewer is here: start (or keep) the frames coming."""
        self._last_viewer = time.monotonic()
        if not self.watching:
            self.watching = True
            self._wake.set()

    def wait_next(self, after: int, timeout: float) -> Encoded | None:
        """The first encoded frame numbered above ``after``, waiting up to ``timeout`` s."""
        self.touch()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._stop.is_set():
                e = self.encoded
                if e is not None and e.seq > after:
                    return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))
                self.touch()
        return None

    def newest_frame(self, after_index: int | None, timeout: float) -> Frame | None:
        """The newest raw camera frame (not drawn on) newer than ``after_index``, for enrollment."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.touch()
            lf = self.latest
            if lf is not None and (after_index is None or lf.frame.index != after_index):
                return lf.frame
            time.sleep(0.01)
        return None

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(2.0)

    # -- the encoder thread ---------------------------------------------------------

    def _run(self) -> None:
        # Below the frame loop when both want the CPU (a Pi's few cores): the
        # viewer gets a picture a little later, never the door a frame later.
        # Linux takes a thread id here and lowering one's own priority needs no right.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)
        interval = 1.0 / self.fps
        last: LiveFrame | None = None
        next_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - self._last_viewer > VIEWER_SECONDS:
                if self.watching:
                    self.watching = False
                    self.latest = last = None  # let the frames go
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            lf = self.latest
            if now < next_at or lf is None or lf is last:
                time.sleep(max(POLL_SECONDS, min(next_at - now, interval)))
                continue
            last = lf
            next_at = now + interval
            try:
                self._encode(lf)
            except Exception:  # one bad frame costs one picture, never the thread
                continue

    def _outcomes(self, faces: tuple[FaceState, ...]) -> tuple[FaceState, ...]:
        """Each decided face's "waiting" replaced by its track's decision and reason."""
        if self._decisions is None or not any(f.waiting == "decided" for f in faces):
            return faces
        by_track = {d.track: d for d in self._decisions()}
        out = []
        for f in faces:
            d = by_track.get(f.track)
            if f.waiting == "decided" and d is not None:
                f = replace(f, waiting=f"{d.decision}: {d.reason}")
            out.append(f)
        return tuple(out)

    def _encode(self, lf: LiveFrame) -> None:
        lf = LiveFrame(lf.frame, self._outcomes(lf.faces))
        img = draw(lf.frame.image, lf.faces)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        seq = (self.encoded.seq if self.encoded else 0) + 1
        enc = Encoded(seq, buf.tobytes(), lf.frame.t_wall, lf.frame.index, lf.faces)
        with self._cond:
            self.encoded = enc
            self.encoded_frames += 1
            self._cond.notify_all()
