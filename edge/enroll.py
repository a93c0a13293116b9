"""Enrollment: photos (or camera frames) of one person become gallery templates.

All or nothing: every photo is read and checked before the gallery is
touched, and the gallery writes every template in one transaction, so one
bad photo leaves the database exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .engine import Engine
from .errors import CameraError, EdgeError, NoFaceError
from .gallery import EnrollResult, Gallery
from .image import read_image


@dataclass(frozen=True)
class Template:
    """One face ready to store: embedding, quality, and the sha256 of its source."""

    embedding: np.ndarray
    quality: float
    source_sha256: str
    source: str


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
        assert face.embedding is not None
        good.append(Template(face.embedding, face.quality, image.sha256, str(path)))
    return good, bad


def templates_from_camera(
    engine: Engine, source: object, frames: int, timeout: float = 20.0
) -> list[Template]:
    """Up to ``frames`` good faces from a camera source (a :class:`edge.camera.Source`).

    Frames whose face fails the enrollment checks are skipped; the camera
    is given ``timeout`` seconds to yield enough.
    """
    from .camera import Source
    from .image import Image

    assert isinstance(source, Source)
    out: list[Template] = []
    last_reason = "no frames"
    deadline = time.monotonic() + timeout
    with source:
        while len(out) < frames and time.monotonic() < deadline:
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
            assert face.embedding is not None
            out.append(Template(face.embedding, face.quality, sha, f"frame {frame.index}"))
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
    """Store the templates under ``name`` in one transaction.

    With ``refuse_look_alike`` (the match threshold), a face already enrolled
    as someone else is refused naming them (:meth:`Gallery.enroll`).
    """
    return gallery.enroll(
        name,
        [(t.embedding, t.quality, t.source_sha256) for t in templates],
        display_name=display_name,
        refuse_look_alike=refuse_look_alike,
    )
