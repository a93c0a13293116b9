"""Liveness: is the face at the door a person, or a photo or screen held up to it?

Two independent checks, either or both chosen by ``LivenessConfig.mode``:

* passive - two MiniFASNets (Silent-Face-Anti-Spoofing) each score an 80x80
  crop around the face box: MiniFASNetV2 scaled 2.7x, MiniFASNetV1SE scaled
  4.0x (more of the print's or screen's border and the room around it). As
  upstream does, their softmaxes are summed: the score is the mean of their
  "real" probabilities. :class:`PassiveLiveness` is one model,
  :class:`FusedLiveness` the pair (:func:`load_passive`).
* active - a blink. FaceMesh gives six landmarks per eye, their eye aspect
  ratio (EAR) drops when the eye closes, and :class:`BlinkDetector` looks for
  open -> closed -> open within a time window. A still photo never blinks.

The geometry (crop boxes, EAR, softmax) is pure functions on numpy arrays;
the two classes only feed an interpreter built elsewhere
(:func:`edge.runtime.load_interpreter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .detect import Detection

#: MiniFASNetV2's crop: the face box scaled this much about its centre (the "2.7" in
#: the checkpoint's name), resized to 80x80.
PASSIVE_SCALE = 2.7
#: MiniFASNetV1SE's crop scale (the "4_0" in its checkpoint's name).
SE_SCALE = 4.0
#: The passive models as (manifest role, crop scale), fused in this order.
PASSIVE_MODELS = (("liveness", PASSIVE_SCALE), ("liveness_se", SE_SCALE))
#: Softmax index of "real face" among MiniFASNet's 3 classes (the others are attacks).
REAL_CLASS = 1

#: FaceMesh landmark indices of each eye as p1..p6 of the EAR formula: p1 and p4
#: the corners, (p2, p6) and (p3, p5) the upper/lower lid pairs. "Left" is the
#: eye on the image's left, like BlazeFace's keypoint 0.
LEFT_EYE = (33, 160, 158, 133, 153, 144)
RIGHT_EYE = (362, 385, 387, 263, 373, 380)

#: FaceMesh looks at the BlazeFace box enlarged this much, as MediaPipe's graph does.
MESH_SCALE = 1.5
MESH_LANDMARKS = 468


@dataclass(frozen=True)
class LivenessResult:
    """A verdict for one face: live or not, the score behind it if any, and why."""

    live: bool
    score: float | None
    reason: str


# --- pure functions -------------------------------------------------------------


def crop_box(
    box: Sequence[float], frame_w: int, frame_h: int, scale: float = PASSIVE_SCALE
) -> tuple[int, int, int, int]:
    """The region MiniFASNet was trained on: ``box`` scaled about its centre, kept in frame.

    Follows upstream's ``CropImage``: the scale is first reduced so the region
    fits the frame, then a region that sticks out of one side is shifted back
    in rather than cut, so the face stays at the same relative size (training
    did the same). Returns (x1, y1, x2, y2) to slice as ``frame[y1:y2, x1:x2]``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((frame_h - 1) / bh, (frame_w - 1) / bw, scale)
    w, h = bw * scale, bh * scale
    cx, cy = x1 + bw / 2, y1 + bh / 2
    left, top, right, bottom = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > frame_w - 1:
        left, right = left - (right - frame_w + 1), frame_w - 1.0
    if bottom > frame_h - 1:
        top, bottom = top - (bottom - frame_h + 1), frame_h - 1.0
    # upstream truncates and slices inclusively: [int(top), int(bottom)]
    return int(left), int(top), int(right) + 1, int(bottom) + 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large logits."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of one eye given six points p1..p6 (x, y[, z]) in the order of :data:`LEFT_EYE`.

    (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|), Soukupová and Čech (2016); it does
    not depend on the face's size in the frame. Only x and y are used. With
    FaceMesh on ../shared/faces, open eyes measure 0.19 (a broad smile) to 0.44.
    """
    p = np.asarray(eye, np.float64)[:, :2]
    width = np.linalg.norm(p[0] - p[3])
    if width < 1e-6:
        return 0.0
    height = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(height / (2.0 * width))


def mean_eye_aspect_ratio(landmarks: np.ndarray) -> float:
    """The mean EAR of both eyes from FaceMesh's (468, 2 or 3) landmarks.

    People blink with both eyes, so the mean halves the noise of either one.
    """
    lm = np.asarray(landmarks)
    return (eye_aspect_ratio(lm[list(LEFT_EYE)]) + eye_aspect_ratio(lm[list(RIGHT_EYE)])) / 2


def roi_transform(
    centre: tuple[float, float], side: float, angle: float, size: int
) -> np.ndarray:
    """The 2x3 matrix taking a ``size``x``size`` crop's pixels to frame pixels.

    The crop is a square of ``side`` frame pixels centred on ``centre`` and
    rotated by ``angle`` radians (its x axis points along (cos a, sin a) in the
    frame). Use it with ``cv2.WARP_INVERSE_MAP`` to cut the crop, and directly
    to map points found in the crop back into the frame.
    """
    s = side / size
    c, n = math.cos(angle) * s, math.sin(angle) * s
    lin = np.array([[c, -n], [n, c]])
    shift = np.asarray(centre, np.float64) - lin @ np.array([size / 2, size / 2])
    return np.hstack([lin, shift[:, None]])


def passive_verdict(scores: Sequence[float], threshold: float, frames: int) -> LivenessResult:
    """Judge a face track from its recent passive scores (``LivenessConfig`` fields).

    Live when at least ``frames`` scores exist and the mean of the last
    ``frames`` reaches ``threshold``: one frame caught mid-motion or badly lit
    neither admits nor rejects on its own.
    """
    if len(scores) < frames:
        return LivenessResult(False, None, f"waiting for {frames} liveness frames")
    mean = float(np.mean(scores[-frames:]))
    if mean >= threshold:
        return LivenessResult(True, mean, "passive check passed")
    return LivenessResult(False, mean, "looks like a photo or screen")


# --- models ---------------------------------------------------------------------


class PassiveLiveness:
    """MiniFASNetV2 behind one call: ``score(bgr_frame, box) -> P(real)``.

    ``interpreter`` is an allocated LiteRT interpreter of the converted model
    (scripts/convert_minifasnet.py): input 1x3x80x80 float32, BGR, 0-255 and
    not normalised, output 3 logits. An NHWC model (1x80x80x3) works as well.
    """

    def __init__(self, interpreter: Any, scale: float = PASSIVE_SCALE) -> None:
        self._it = interpreter
        inp = interpreter.get_input_details()[0]
        self._input = inp["index"]
        shape = tuple(int(v) for v in inp["shape"])
        self._nchw = shape[1] == 3
        self.size = (shape[3], shape[2]) if self._nchw else (shape[2], shape[1])  # (w, h)
        self._output = interpreter.get_output_details()[0]["index"]
        self.scale = scale

    def crop(self, bgr: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """The model's input image (h, w, 3) uint8 BGR for the face in ``box``."""
        h, w = bgr.shape[:2]
        x1, y1, x2, y2 = crop_box(box, w, h, self.scale)
        return cv2.resize(bgr[y1:y2, x1:x2], self.size)

    def score(self, bgr: np.ndarray, box: Sequence[float]) -> float:
        """Probability that the face in ``box`` (frame pixels x1, y1, x2, y2) is real."""
        x = self.crop(bgr, box).astype(np.float32)
        if self._nchw:
            x = x.transpose(2, 0, 1)
        self._it.set_tensor(self._input, np.ascontiguousarray(x[None]))
        self._it.invoke()
        logits = self._it.get_tensor(self._output).reshape(-1)
        return float(softmax(logits)[REAL_CLASS])


class FusedLiveness:
    """Several passive models on one face: ``score(bgr_frame, box)`` is their mean P(real).

    Upstream Silent-Face sums the models' softmaxes and takes the arg-max;
    the mean of the "real" probabilities is that sum's real share, a number in
    [0, 1] that one threshold can be set on. Same call as
    :class:`PassiveLiveness`, so the daemon scores each track's frames alike.
    """

    def __init__(self, models: Sequence[PassiveLiveness]) -> None:
        if not models:
            raise ValueError("FusedLiveness needs at least one model")
        self.models = tuple(models)

    def scores(self, bgr: np.ndarray, box: Sequence[float]) -> tuple[float, ...]:
        """Each model's P(real) for the face in ``box``, in model order."""
        return tuple(m.score(bgr, box) for m in self.models)

    def score(self, bgr: np.ndarray, box: Sequence[float]) -> float:
        """The fused probability that the face in ``box`` is real."""
        return float(np.mean(self.scores(bgr, box)))


def load_passive(interpreter: Callable[[str], Any], models: str = "v2") -> FusedLiveness:
    """The passive check ``liveness.passive_models`` names; ``interpreter(role)`` builds each.

    ``"fused"``: both of :data:`PASSIVE_MODELS`, as upstream; ``"v2"``:
    MiniFASNetV2 alone, the default because on ../shared/eval/spoof V1SE's
    4.0x crop refuses live webcam frames that V2 accepts while letting no
    fewer screens through (README, Liveness). ``interpreter`` is e.g.
    :meth:`edge.engine.Engine.interpreter`, which checks every file against
    the model manifest before loading it.
    """
    chosen = PASSIVE_MODELS if models == "fused" else PASSIVE_MODELS[:1]
    return FusedLiveness([PassiveLiveness(interpreter(role), scale) for role, scale in chosen])


@dataclass(frozen=True)
class Mesh:
    """FaceMesh's answer for one face: landmarks in frame pixels and presence in [0, 1]."""

    landmarks: np.ndarray  # (468, 3) float32: x, y in frame pixels, z in the same scale
    presence: float

    @property
    def ear(self) -> float:
        """Mean eye aspect ratio of both eyes."""
        return mean_eye_aspect_ratio(self.landmarks)


class FaceMesh:
    """MediaPipe FaceMesh behind one call: ``landmarks(rgb_frame, detection)``.

    The crop follows MediaPipe's own graph: the BlazeFace box made square on
    its long side, enlarged 1.5x, and rotated so the eyes are level, because
    the model was trained on upright faces filling that much of the crop.
    ``interpreter`` is an allocated LiteRT interpreter of face_landmark.tflite.
    """

    def __init__(self, interpreter: Any, scale: float = MESH_SCALE) -> None:
        self._it = interpreter
        inp = interpreter.get_input_details()[0]
        self._input = inp["index"]
        self.size = int(inp["shape"][1])
        by_size = {int(np.prod(o["shape"])): o["index"] for o in interpreter.get_output_details()}
        self._points = by_size[3 * MESH_LANDMARKS]
        self._presence = by_size[1]
        self.scale = scale

    def roi(self, detection: Detection) -> np.ndarray:
        """The crop-to-frame matrix (see :func:`roi_transform`) for a detection."""
        x1, y1, x2, y2 = detection.box
        left, right = detection.keypoints[0], detection.keypoints[1]
        angle = math.atan2(float(right[1] - left[1]), float(right[0] - left[0]))
        side = max(x2 - x1, y2 - y1) * self.scale
        return roi_transform(((x1 + x2) / 2, (y1 + y2) / 2), side, angle, self.size)

    def run(self, rgb: np.ndarray, detection: Detection) -> Mesh:
        """Landmarks and presence for the face BlazeFace found in an RGB frame."""
        m = self.roi(detection)
        crop = cv2.warpAffine(
            rgb, m, (self.size, self.size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
        )
        self._it.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self._it.invoke()
        pts = self._it.get_tensor(self._points).reshape(MESH_LANDMARKS, 3).astype(np.float64)
        logit = float(np.clip(self._it.get_tensor(self._presence).reshape(-1)[0], -100, 100))
        out = np.empty_like(pts)
        out[:, :2] = pts[:, :2] @ m[:, :2].T + m[:, 2]
        out[:, 2] = pts[:, 2] * math.hypot(m[0, 0], m[1, 0])  # same scale as x and y
        return Mesh(out.astype(np.float32), 1.0 / (1.0 + math.exp(-logit)))

    def landmarks(self, rgb: np.ndarray, detection: Detection) -> np.ndarray:
        """(468, 3) landmarks in frame pixels; see :meth:`run` for the presence score too."""
        return self.run(rgb, detection).landmarks


class BlinkDetector:
    """Watches one face track's EAR over time for a blink (open -> closed -> open).

    A blink counts when the EAR falls below ``threshold`` after an open-eye
    sample and rises back above it no more than ``window_seconds`` after that
    last open sample. Eyes already closed when tracking starts, eyes that stay
    shut longer than the window, and a constant EAR (a photo) never count.
    Feed it samples in time order from one face; make a new one per track.
    """

    def __init__(self, threshold: float = 0.21, window_seconds: float = 4.0) -> None:
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.blinks = 0
        self._last_open: float | None = None
        self._closed = False

    def feed(self, ear: float, t: float) -> bool:
        """Add one EAR sample taken at monotonic time ``t``; True if it completes a blink."""
        if ear < self.threshold:
            self._closed = self._last_open is not None
            return False
        blinked = (
            self._closed
            and self._last_open is not None
            and t - self._last_open <= self.window_seconds
        )
        self._closed = False
        self._last_open = t
        self.blinks += blinked
        return blinked

    @property
    def blinked(self) -> bool:
        """Whether any blink has been seen on this track."""
        return self.blinks > 0

    def result(self) -> LivenessResult:
        """The active check's verdict so far."""
        if self.blinked:
            return LivenessResult(True, None, "blink seen")
        return LivenessResult(False, None, "no blink yet")
