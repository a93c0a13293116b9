"""Alignment of a detected face onto the embedder's template, and face quality.

Pure functions: a similarity transform (rotation, uniform scale, shift)
fitted to four keypoints, the warp, and the cheap quality measures that
decide whether a face is worth embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Template:
    """Where an embedder wants the four BlazeFace keypoints in its crop, and the crop size.

    Points in order: the eye on the image's left, the other eye, nose tip, mouth centre.
    """

    points: np.ndarray
    size: tuple[int, int]  # width, height


#: SFace (and ArcFace-style models): the standard 112x112 five-point template with
#: the two mouth corners replaced by their mean, since BlazeFace gives the mouth centre.
SFACE = Template(
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.1396, 92.2848]],
        dtype=np.float32,
    ),
    (112, 112),
)
#: The MobileFaceNet int8 model (kept for comparison): a 96x112 crop.
MOBILEFACENET = Template(
    np.array(
        [[30.29, 51.70], [65.53, 51.50], [48.03, 71.74], [48.14, 92.28]], dtype=np.float32
    ),
    (96, 112),
)
#: The default embedder's template (SFace).
TEMPLATE = SFACE.points
CROP_SIZE = SFACE.size  # width, height


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix that maps ``src`` points onto ``dst`` (least squares).

    Umeyama's closed form, without reflection.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align(rgb: np.ndarray, keypoints: np.ndarray, template: Template = SFACE) -> np.ndarray:
    """The RGB crop (uint8, the template's size) of the face whose BlazeFace keypoints are given."""
    m = similarity_transform(keypoints[:4], template.points)
    return cv2.warpAffine(
        rgb, m, template.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of an aligned crop: low means blurred or featureless."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def yaw(keypoints: np.ndarray) -> float:
    """How far the head is turned, from the nose's offset off the eyes' midline.

    0 is frontal; about 0.5 is a three-quarter view. Dimensionless (in eye
    distances), so it does not depend on the face's size.
    """
    left, right, nose = keypoints[0], keypoints[1], keypoints[2]
    axis = right - left
    dist = float(np.linalg.norm(axis))
    if dist == 0:
        return 1.0
    mid = (left + right) / 2
    return float(abs(np.dot(nose - mid, axis / dist)) / dist)
