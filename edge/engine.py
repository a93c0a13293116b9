"""The recognition path shared by the daemon, enrollment and the CLI.

detect → align → embed, with the quality measures that decide whether a face
is worth embedding or enrolling. Frames come in as BGR (OpenCV's order) and
are converted to RGB once here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import models
from .align import sharpness, yaw
from .config import Config
from .crops import FaceCrop, face_crop
from .detect import Detection, Detector, merge, pad, refine
from .embed import Embedder, load_embedder
from .errors import NoFaceError
from .image import Image
from .runtime import load_interpreter

#: A second face counts as "another person in the photo" when it is at least
#: this fraction of the largest face's size; smaller ones are background.
SECOND_FACE_RATIO = 0.5

#: Still photos are also searched padded by this fraction of their longer
#: side, so a face filling a tight crop (a badge photo) has room around it.
STILL_PAD = 0.25


@dataclass(frozen=True)
class Face:
    """A detected face with its quality and, when good enough, its embedding.

    ``crop`` is set on enrollment faces only: the model-neutral face crop the
    gallery keeps for re-embedding (:mod:`edge.crops`).
    """

    detection: Detection
    eye_distance: float
    sharpness: float
    yaw: float
    embedding: np.ndarray | None
    crop: FaceCrop | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.detection.box

    @property
    def quality(self) -> float:
        """One number for ranking templates: detector score, shrunk for small or turned faces."""
        size = min(1.0, self.eye_distance / 60.0)
        return float(self.detection.score * size * max(0.0, 1.0 - self.yaw))


class Engine:
    """Detection, alignment and embedding, built once from the config.

    The camera path uses one detector on whole frames; still photos use the
    detector chosen by ``detect.still_mode`` (full range and/or tiles), loaded
    only when first needed so the camera path pays nothing for it.
    """

    def __init__(self, cfg: Config, models_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.models_dir = models_dir or cfg.path(cfg.models.dir)
        self._detectors: dict[str, Detector] = {}
        self.embedder: Embedder = load_embedder(
            self.models_dir, cfg.embed.model, cfg.models.threads, cfg.embed.flip_average
        )
        self.camera_detector = self._detector(cfg.detect.camera_mode)

    def interpreter(self, role: str) -> Any:
        """An interpreter for the model with ``role``; :func:`models.require` checks the file."""
        return load_interpreter(models.require(self.models_dir, role), self.cfg.models.threads)

    def _detector(self, kind: str) -> Detector:
        """The short- or full-range detector, loaded once."""
        if kind not in self._detectors:
            d = self.cfg.detect
            role = "detect_full" if kind == "full" else "detect_short"
            self._detectors[kind] = Detector(
                self.interpreter(role),
                d.score_threshold,
                d.iou_threshold,
                d.max_faces,
            )
        return self._detectors[kind]

    def detect(self, rgb: np.ndarray, still: bool = False) -> list[Detection]:
        """Faces in an RGB frame; ``still`` searches harder (group photos, small faces)."""
        if not still:
            return self.camera_detector.detect(rgb)
        return self.still_detect(rgb)

    def still_detect(self, rgb: np.ndarray) -> list[Detection]:
        """Every face of a still photo, with keypoints from the short-range model.

        ``detect.still_mode`` chooses the search: the full- and/or short-range
        model on the photo and on a padded copy of it (so a face that fills a
        tight crop is found), and short-range tiles for large group photos.
        Each face found is then re-detected by the short-range model on a
        square crop around it (:func:`detect.refine`), the model and scale the
        door aligns with. A face it cannot confirm is dropped: a phantom box
        of another search, or a face the door could not recognise either (a
        bystander a few pixels wide, a profile cut by the frame's edge).
        """
        d = self.cfg.detect
        mode = d.still_mode
        padded, p = pad(rgb, STILL_PAD)
        whole = ["full", "short"] if mode == "both" else ["short" if mode == "tiles" else mode]
        parts = []
        for kind in whole:
            det = self._detector(kind)
            parts.append(det.raw(rgb))
            b, s, k = det.raw(padded)
            parts.append((b - p, s, k - p))
        if mode in ("tiles", "both"):
            parts += self._detector("short").parts(rgb, d.tile_size)[1:]
        short = self._detector("short")
        candidates = merge(parts, d.iou_threshold, d.max_faces)
        found = [f for c in candidates if (f := refine(short, rgb, c)) is not None]
        if not found:
            return []
        refined = (
            np.array([f.box for f in found], np.float32),
            np.array([f.score for f in found], np.float32),
            np.array([f.keypoints for f in found], np.float32),
        )
        return merge([refined], d.iou_threshold, d.max_faces)

    def embed(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        """The embedding of a detected face (aligned, then embedded): the frame loop's path."""
        return self.embedder.embed(self.embedder.crop(rgb, det.keypoints))

    def describe(self, rgb: np.ndarray, det: Detection, min_eye_distance: float) -> Face:
        """Measure a detection's quality; embed it when its eyes are far enough apart."""
        crop = self.embedder.crop(rgb, det.keypoints)
        eye = det.eye_distance
        emb = self.embedder.embed(crop) if eye >= min_eye_distance else None
        return Face(det, eye, sharpness(crop), yaw(det.keypoints), emb)

    def _largest_first(self, bgr: np.ndarray, still: bool) -> tuple[np.ndarray, list[Detection]]:
        """The frame in RGB and its detections, largest face (eye distance) first."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return rgb, sorted(self.detect(rgb, still), key=lambda d: -d.eye_distance)

    def faces(self, bgr: np.ndarray, still: bool = False) -> list[Face]:
        """Every face in a BGR frame, largest first, embedded where big enough."""
        rgb, dets = self._largest_first(bgr, still)
        return [self.describe(rgb, d, self.cfg.align.min_eye_distance) for d in dets]

    def largest_face(self, bgr: np.ndarray, still: bool = False) -> Face | None:
        """The largest face in a BGR frame, embedded if big enough (the others are skipped)."""
        rgb, dets = self._largest_first(bgr, still)
        return self.describe(rgb, dets[0], self.cfg.align.min_eye_distance) if dets else None

    def _one_detection(
        self, image: Image, still: bool
    ) -> tuple[np.ndarray, Detection]:
        """The frame in RGB and its one face, or NoFaceError: none, or several people."""
        rgb, dets = self._largest_first(image.bgr, still)
        if not dets:
            raise NoFaceError(f"{image.path}: no face found")
        largest = dets[0]
        others = [d for d in dets[1:] if d.width >= SECOND_FACE_RATIO * largest.width]
        if others:
            raise NoFaceError(
                f"{image.path}: more than one face ({len(others) + 1}); use a photo of one person"
            )
        return rgb, largest

    def single_face(self, image: Image, still: bool = True) -> Face:
        """The one face of a photo to compare (``edge verify``), embedded, or NoFaceError.

        Refused like an enrollment photo when it shows no face or several
        people, or when the face is too small to embed; not held to the
        enrollment's pose and sharpness limits.
        """
        rgb, det = self._one_detection(image, still)
        face = self.describe(rgb, det, self.cfg.align.min_eye_distance)
        if face.embedding is None:
            raise NoFaceError(
                f"{image.path}: face too small (eyes {det.eye_distance:.0f} px apart, "
                f"need {self.cfg.align.min_eye_distance:.0f})"
            )
        return face

    def enrollment_face(self, image: Image, still: bool = True) -> Face:
        """The one good face of an enrollment photo, or :class:`NoFaceError` saying why."""
        e = self.cfg.enroll
        rgb, largest = self._one_detection(image, still)
        # Turned first: a profile's eyes are close together, and "turned" is
        # the reason a person can act on.
        turn = yaw(largest.keypoints)
        if turn > e.max_yaw:
            raise NoFaceError(
                f"{image.path}: face turned too far from frontal "
                f"(yaw {turn:.2f}, max {e.max_yaw:.2f})"
            )
        if largest.eye_distance < e.min_eye_distance:
            raise NoFaceError(
                f"{image.path}: face too small (eyes {largest.eye_distance:.0f} px apart, "
                f"need {e.min_eye_distance:.0f})"
            )
        face = self.describe(rgb, largest, 0.0)
        if face.sharpness < e.min_sharpness:
            raise NoFaceError(
                f"{image.path}: face too blurry (sharpness {face.sharpness:.0f}, "
                f"need {e.min_sharpness:.0f})"
            )
        return replace(face, crop=face_crop(rgb, largest.keypoints))
