"""Enrollment face crops: kept so templates can be recomputed for another embedder.

Why: a template is one model's embedding of one photo. When the embedder
changes (a new model file, another input size), old templates cannot be
compared with new ones (:mod:`edge.reembed`), and the photos themselves are
not kept. So each enrollment keeps a *face crop* from which any model's
input can be made again.

What is stored: not the embedder's own input (MobileFaceNet wants 96x112,
SFace 112x112 on another template), but a larger, model-neutral crop:
:data:`SIZE` x :data:`SIZE` RGB, similarity-aligned from the detector's
keypoints so the face is upright, eyes about 42 px apart, with a margin of
about 13 px around any of those models' crop boxes, plus the detector's six
keypoints mapped into crop coordinates. Any model's alignment is then
recomputed from the crop: ``align(crop.image, crop.keypoints)`` gives what
``align(photo, keypoints)`` gave, resampled once more (MobileFaceNet int8:
cosine 0.95-0.99 between the two embeddings on the shared photos, far above
the match threshold; a test checks >= 0.9).

Bytes (sealed by the gallery like templates): keypoints as (6, 2) little-endian
float32 (48 bytes), then the crop as PNG (lossless, about 40 KB).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import MOBILEFACENET, similarity_transform
from .errors import GalleryError

#: The stored crop is SIZE x SIZE pixels.
SIZE = 160
#: Stored crop pixels per pixel of the 96x112 template: faces at 1.2x the embedder's scale.
SCALE = 1.2
#: Keypoints stored with a crop (BlazeFace: eyes, nose tip, mouth centre, ears).
KEYPOINTS = 6
_KP_BYTES = KEYPOINTS * 2 * 4
#: The 96x112 template's points placed in the crop: its box centre (48, 56) at the crop's centre.
CANONICAL = ((MOBILEFACENET.points - np.array([48.0, 56.0], np.float32)) * SCALE + SIZE / 2).astype(
    np.float32
)


@dataclass(frozen=True)
class FaceCrop:
    """A stored face: ``image`` (SIZE, SIZE, 3) uint8 RGB, ``keypoints`` (6, 2) in its pixels."""

    image: np.ndarray
    keypoints: np.ndarray

    def to_bytes(self) -> bytes:
        """Keypoints then PNG: what the gallery seals."""
        ok, png = cv2.imencode(".png", cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - a uint8 image always encodes
            raise GalleryError("cannot encode a face crop")
        return np.asarray(self.keypoints, "<f4").reshape(KEYPOINTS, 2).tobytes() + png.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceCrop:
        """The crop from :meth:`to_bytes`; GalleryError if it is not one."""
        bgr = None
        if len(data) > _KP_BYTES:
            bgr = cv2.imdecode(np.frombuffer(data[_KP_BYTES:], np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != (SIZE, SIZE, 3):
            raise GalleryError("a stored face crop is not a valid image")
        kps = np.frombuffer(data[:_KP_BYTES], "<f4").astype(np.float32).reshape(KEYPOINTS, 2)
        return cls(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), kps)


def face_crop(rgb: np.ndarray, keypoints: np.ndarray) -> FaceCrop:
    """The stored crop of the face whose detector keypoints (6, 2) in ``rgb`` are given."""
    m = similarity_transform(keypoints[:4], CANONICAL)
    image = cv2.warpAffine(
        rgb, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    kps = np.asarray(keypoints, np.float64)[:KEYPOINTS]
    mapped = kps @ m[:, :2].T + m[:, 2]
    return FaceCrop(image, mapped.astype(np.float32))
