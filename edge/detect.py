"""Face detection with MediaPipe's BlazeFace (short and full range).

The maths (anchors, decoding, weighted NMS, letterbox) are pure functions on
numpy arrays; :class:`Detector` only feeds them the interpreter's outputs.
Every box and keypoint leaves this module in the pixels of the frame given.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

#: BlazeFace keypoints, in model order.
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth", "left_ear", "right_ear")


#: Raw detections in frame pixels: boxes (N, 4), scores (N,), keypoints (N, 6, 2).
Raw = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Detection:
    """One face in frame pixels: box (x1, y1, x2, y2), score, 6 keypoints (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray  # shape (6, 2), float32

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class ModelSpec:
    """What differs between the BlazeFace variants."""

    size: int
    strides: tuple[int, ...]
    anchors_per_stride: tuple[int, ...]


SHORT_RANGE = ModelSpec(128, (8, 16, 16, 16), (2, 2, 2, 2))
FULL_RANGE = ModelSpec(192, (4,), (1,))


@lru_cache(maxsize=4)
def anchors(spec: ModelSpec) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], as MediaPipe's SsdAnchorsCalculator makes them.

    Consecutive layers with the same stride share one grid, their anchors
    interleaved per cell; with fixed anchor size only the centres matter.
    """
    out: list[np.ndarray] = []
    i = 0
    strides = spec.strides
    while i < len(strides):
        j, per_cell = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            per_cell += spec.anchors_per_stride[j]
            j += 1
        grid = int(np.ceil(spec.size / strides[i]))
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode(
    regressors: np.ndarray, logits: np.ndarray, spec: ModelSpec, score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode raw outputs into boxes (M, 4), scores (M,), keypoints (M, 6, 2).

    Coordinates are in [0, 1] of the model input. Only anchors whose score
    passes the threshold are decoded.
    """
    reg = regressors.reshape(-1, 16)
    logits = np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 6, 2), np.float32),
        )
    a = anchors(spec)[keep]
    r = reg[keep] / spec.size
    centre = a + r[:, 0:2]
    half = r[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = a[:, None, :] + r[:, 4:16].reshape(-1, 6, 2)
    return boxes.astype(np.float32), scores[keep].astype(np.float32), kps.astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (4,) against many (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: overlapping detections are averaged, weighted by score.

    The merged detection keeps the best score of its cluster. Returns
    (box, score, keypoints) best first.
    """
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.arange(len(scores))
    out = []
    while remaining.size:
        first = remaining[0]
        overlap = iou(boxes[first], boxes[remaining]) >= iou_threshold
        cluster = remaining[overlap]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, float(scores[first]), kps))
        remaining = remaining[~overlap]
    return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Scale an image to fit ``size``x``size`` keeping its aspect, padding equally.

    Returns (square image, scale, pad_x, pad_y) where a point p in the square
    maps back to the source as (p - pad) / scale.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size, 3), dtype=image.dtype)
    out[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    return out, scale, float(pad_x), float(pad_y)


def tiles(width: int, height: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int]]:
    """Square tiles (x, y, side) covering a frame with the given overlap."""
    side = min(tile, width, height)
    step = max(1, int(side * (1 - overlap)))

    def starts(extent: int) -> list[int]:
        s = list(range(0, max(1, extent - side + 1), step))
        if s[-1] + side < extent:
            s.append(extent - side)
        return s

    return [(x, y, side) for y in starts(height) for x in starts(width)]


class Detector:
    """BlazeFace behind one call: ``detect(rgb_frame) -> list[Detection]``.

    ``interpreter`` is an allocated LiteRT interpreter of a short- or
    full-range model; which one is read from its input size.
    """

    def __init__(
        self,
        interpreter: Any,
        score_threshold: float = 0.6,
        iou_threshold: float = 0.3,
        max_faces: int = 20,
    ) -> None:
        self._it = interpreter
        inp = interpreter.get_input_details()[0]
        self._input = inp["index"]
        size = int(inp["shape"][1])
        self.spec = SHORT_RANGE if size == SHORT_RANGE.size else FULL_RANGE
        outs = interpreter.get_output_details()
        # regressors have 16 values per anchor, classificators 1.
        self._reg = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._cls = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces

    def raw(self, rgb: np.ndarray) -> Raw:
        """Run the model on a whole RGB frame; boxes, scores, keypoints in frame pixels."""
        square, scale, px, py = letterbox(rgb, self.spec.size)
        x = square.astype(np.float32) * (2.0 / 255.0) - 1.0
        self._it.set_tensor(self._input, x[None])
        self._it.invoke()
        boxes, scores, kps = decode(
            self._it.get_tensor(self._reg),
            self._it.get_tensor(self._cls),
            self.spec,
            self.score_threshold,
        )
        size = self.spec.size
        boxes = (boxes * size - [px, py, px, py]) / scale
        kps = (kps * size - [px, py]) / scale
        return boxes, scores, kps

    def parts(self, rgb: np.ndarray, tile: int | None = None) -> list[Raw]:
        """Raw detections of the whole frame and, with ``tile``, of overlapping tiles."""
        out = [self.raw(rgb)]
        h, w = rgb.shape[:2]
        if tile and max(h, w) > tile:
            for x, y, side in tiles(w, h, tile):
                b, s, k = self.raw(rgb[y : y + side, x : x + side])
                out.append((b + [x, y, x, y], s, k + [x, y]))
        return out

    def detect(self, rgb: np.ndarray, tile: int | None = None) -> list[Detection]:
        """Faces in an RGB frame, best first; ``tile`` also searches overlapping tiles."""
        return merge(self.parts(rgb, tile), self.iou_threshold, self.max_faces)


def merge(parts: list[Raw], iou_threshold: float, max_faces: int) -> list[Detection]:
    """Weighted-NMS several sets of raw detections (same frame pixels) into Detections."""
    boxes = np.concatenate([p[0] for p in parts]).reshape(-1, 4)
    scores = np.concatenate([p[1] for p in parts]).reshape(-1)
    kps = np.concatenate([p[2] for p in parts]).reshape(-1, 6, 2)
    if scores.size == 0:
        return []
    merged = weighted_nms(boxes, scores, kps, iou_threshold)[:max_faces]
    return [
        Detection(tuple(float(v) for v in b), s, k.astype(np.float32))  # type: ignore[arg-type]
        for b, s, k in merged
    ]


def pad(image: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """The image with ``fraction`` of its longer side added on every edge (edges repeated).

    A face that fills the frame (a badge photo cropped to the face) gives a
    detector no chin, hair or background to recognise it by; repeating the
    edge pixels outward gives it that margin without inventing a second face.
    Returns (padded image, pad in pixels): a point p in it is p - pad here.
    """
    p = int(round(fraction * max(image.shape[:2])))
    if p == 0:
        return image, 0
    return cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REPLICATE), p


def square_crop(
    image: np.ndarray, cx: float, cy: float, side: float
) -> tuple[np.ndarray, int, int]:
    """The ``side``x``side`` square centred on (cx, cy), black where it leaves the image.

    Returns (crop, x0, y0): a point p in the crop is p + (x0, y0) in the image.
    """
    s = max(1, int(round(side)))
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    h, w = image.shape[:2]
    out = np.zeros((s, s, *image.shape[2:]), image.dtype)
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    if xb > xa and yb > ya:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya:yb, xa:xb]
    return out, x0, y0


#: The refining crops are these many times the face's box: about how a door
#: camera frames a face from arm's length to a step back, so the short-range
#: model sees the face at the scales it sees at the door. Its keypoints from
#: the two crops are averaged (weighted NMS): steadier than either alone.
REFINE_SCALES = (2.5, 4.0)


def refine(short: Detector, rgb: np.ndarray, det: Detection) -> Detection | None:
    """``det`` re-detected by the short-range model on square crops around it.

    The door aligns faces from the short-range model's keypoints; a still
    photo found by another search (full range, tiles, padding) is aligned
    from the same model's keypoints through this, so gallery and probe agree.
    None when the short-range model sees no face overlapping ``det``.
    """
    x1, y1, x2, y2 = det.box
    box = np.asarray(det.box, np.float32)
    parts: list[Raw] = []
    for scale in REFINE_SCALES:
        side = scale * max(x2 - x1, y2 - y1)
        crop, x0, y0 = square_crop(rgb, (x1 + x2) / 2, (y1 + y2) / 2, side)
        boxes, scores, kps = short.raw(crop)
        boxes, kps = boxes + [x0, y0, x0, y0], kps + [x0, y0]
        same = iou(box, boxes) >= short.iou_threshold
        parts.append((boxes[same], scores[same], kps[same]))
    # An IoU of 0 merges every overlapping re-detection into one face.
    found = merge(parts, 1e-6, 1)
    return found[0] if found else None
