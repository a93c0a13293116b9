"""Enrollment: photos (or camera frames) of one person become gallery templates.

All or nothing: every photo is read and checked before the gallery is
touched, and the gallery writes every template in one transaction, so one
bad photo leaves the database exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .crops import FaceCrop
from .engine import Engine, Face
from .errors import CameraError, EdgeError, GalleryError, NoFaceError
from .gallery import Gallery
from .image import read_image
from .people import EnrollResult
from .sealing import LEGACY_MODEL_ID


@dataclass(frozen=True)
class Template:
    """One face ready to store: embedding, quality, and the sha256 of its source.

    ``model_id`` names the embedder that made ``embedding``; ``crop`` is the
    face crop to keep for re-embedding (None when ``gallery.keep_crops`` is off).
    """

    embedding: np.ndarray
    quality: float
    source_sha256: str
    source: str
    model_id: str
    crop: FaceCrop | None = None


@dataclass(frozen=True)
class Rejected:
    """A photo that cannot be enrolled, and why (one line naming the file)."""

    source: str
    reason: str


def templates_from_images(
    engine: Engine, paths: Sequence[str | os.PathLike[str]]
) -> tuple[list[Template], list[Rejected]]:
    """One template per usable photo, and the photos refused with their reasons."""
    e = engine.cfg.enroll
    good: list[Template] = []
    bad: list[Rejected] = []
    for path in paths:
        try:
            image = read_image(path, e.max_image_pixels, e.max_image_bytes)
            face = engine.enrollment_face(image)
        except EdgeError as err:
            bad.append(Rejected(str(path), str(err)))
            continue
        good.append(_template(engine, face, image.sha256, str(path)))
    return good, bad


def _template(engine: Engine, face: Face, sha: str, source: str) -> Template:
    """The template of an enrollment face, with its crop if the config keeps crops."""
    assert face.embedding is not None
    crop = face.crop if engine.cfg.gallery.keep_crops else None
    return Template(face.embedding, face.quality, sha, source, engine.embedder.model_id, crop)


def templates_from_camera(
    engine: Engine, source: object, frames: int, timeout: float = 20.0
) -> list[Template]:
    """Up to ``frames`` good faces from a camera source (a :class:`edge.camera.Source`).

    Frames whose face fails the enrollment checks are skipped; a live camera
    is given ``timeout`` seconds to yield enough. A finite source (a video
    file, a folder) is read to its end however long that takes: on a slow CPU
    (a Pi, or emulated arm64) a wall-clock limit cut a file short after one
    face, though every frame was there to be read.
    """
    from .camera import Source
    from .image import Image

    assert isinstance(source, Source)
    out: list[Template] = []
    last_reason = "no frames"
    deadline = time.monotonic() + timeout
    with source:
        while len(out) < frames and (source.finite or time.monotonic() < deadline):
            frame = source.read()
            if frame is None:
                if source.finite:
                    break
                continue
            sha = hashlib.sha256(frame.image.tobytes()).hexdigest()
            try:
                face = engine.enrollment_face(
                    Image(frame.image, f"{source.name} frame {frame.index}", sha), still=False
                )
            except NoFaceError as err:
                last_reason = str(err)
                continue
            out.append(_template(engine, face, sha, f"frame {frame.index}"))
    if not out:
        raise CameraError(f"{source.name}: no usable face in the camera's frames ({last_reason})")
    return out


def enroll(
    gallery: Gallery,
    name: str,
    templates: Sequence[Template],
    display_name: str | None = None,
    *,
    refuse_look_alike: float | None = None,
) -> EnrollResult:
    """Store the templates (and their crops) under ``name`` in one transaction.

    All must come from one embedder: the gallery tags them with its ``model_id``.
    With ``refuse_look_alike`` (the match threshold), a face already enrolled
    as someone else is refused naming them (:meth:`Gallery.enroll`).
    """
    models = {t.model_id for t in templates}
    if len(models) > 1:
        raise GalleryError(f"{name!r}: templates of {len(models)} embedders in one enrollment")
    return gallery.enroll(
        name,
        [(t.embedding, t.quality, t.source_sha256) for t in templates],
        display_name=display_name,
        refuse_look_alike=refuse_look_alike,
        model_id=models.pop() if models else LEGACY_MODEL_ID,
        crops=[None if t.crop is None else t.crop.to_bytes() for t in templates],
    )


@dataclass(frozen=True)
class Quality:
    """How good one frame is for enrollment: the measures and limits, and the verdict.

    ``reason`` is what :meth:`Engine.enrollment_face` would refuse the frame for
    (None when it would take it): what the console shows while an installer
    positions someone in front of the camera.
    """

    found: bool
    eye_distance: float | None
    sharpness: float | None
    yaw: float | None
    min_eye_distance: float
    min_sharpness: float
    max_yaw: float
    ok: bool
    reason: str | None

    @property
    def size_ok(self) -> bool:
        return self.eye_distance is not None and self.eye_distance >= self.min_eye_distance

    @property
    def sharp_ok(self) -> bool:
        return self.sharpness is not None and self.sharpness >= self.min_sharpness

    @property
    def yaw_ok(self) -> bool:
        return self.yaw is not None and self.yaw <= self.max_yaw

    def as_dict(self) -> dict[str, object]:
        return self.__dict__ | {
            "size_ok": self.size_ok, "sharp_ok": self.sharp_ok, "yaw_ok": self.yaw_ok
        }


def quality(engine: Engine, image: object) -> Quality:
    """The enrollment quality of one camera frame (an :class:`edge.image.Image`)."""
    from .image import Image

    assert isinstance(image, Image)
    e = engine.cfg.enroll
    limits = (e.min_eye_distance, e.min_sharpness, e.max_yaw)
    face = engine.largest_face(image.bgr)
    if face is None:
        return Quality(False, None, None, None, *limits, False, "no face found")
    try:
        engine.enrollment_face(image, still=False)
        reason = None
    except NoFaceError as err:
        reason = str(err).split(": ", 1)[-1]
    return Quality(
        True, face.eye_distance, face.sharpness, face.yaw, *limits, reason is None, reason
    )


def enroll_from_camera(
    engine: Engine,
    open_gallery: Callable[[], Gallery],
    source: object,
    name: str,
    frames: int,
    display_name: str | None = None,
    *,
    force: bool = False,
) -> EnrollResult:
    """``edge enroll NAME --camera`` (and the console's enroll): frames, then one write.

    The name is checked before the camera is touched, and the gallery is
    opened (``open_gallery()``) only once good frames are in hand, so a
    camera that shows no usable face leaves everything as it was. A face
    already enrolled as someone else is refused (unless ``force``), as from photos.
    """
    from .records import check_name

    check_name(name)
    templates = templates_from_camera(engine, source, frames)
    with open_gallery() as g:
        return enroll(
            g, name, templates, display_name,
            refuse_look_alike=None if force else engine.cfg.match.threshold,
        )
