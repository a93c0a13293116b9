"""Verification of photo pairs: is this the same person? Used to check the threshold.

``edge verify --pairs FILE.csv`` runs every pair in one process, embedding
each distinct photo once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import Engine
from .errors import EdgeError, ImageError
from .image import read_image


@dataclass(frozen=True)
class PairResult:
    """One pair's answer; ``similarity`` is None when either photo has no usable face."""

    file_x: str
    file_y: str
    similarity: float | None
    verified: bool
    error: str | None = None


class PhotoEmbeddings:
    """The embedding of the largest face of each photo, computed once per path."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[np.ndarray | None, str | None]] = {}

    def get(self, path: str) -> tuple[np.ndarray | None, str | None]:
        """(embedding, None) or (None, reason) for the photo at ``path``."""
        if path not in self._cache:
            e = self.engine.cfg.enroll
            try:
                image = read_image(path, e.max_image_pixels, e.max_image_bytes)
                face = self.engine.largest_face(image.bgr, still=True)
                emb = face.embedding if face is not None else None  # None: too small to embed
                self._cache[path] = (
                    (emb, None) if emb is not None else (None, f"{path}: no face found")
                )
            except EdgeError as err:
                self._cache[path] = (None, str(err))
        return self._cache[path]


def verify(
    photos: PhotoEmbeddings,
    x: str,
    y: str,
    threshold: float,
    label_x: str | None = None,
    label_y: str | None = None,
) -> PairResult:
    """Compare the largest faces of two photos at ``threshold``."""
    ex, err_x = photos.get(x)
    ey, err_y = photos.get(y)
    lx, ly = label_x or x, label_y or y
    if ex is None or ey is None:
        return PairResult(lx, ly, None, False, err_x or err_y)
    sim = float(np.dot(ex, ey))
    return PairResult(lx, ly, sim, sim >= threshold)


def read_pairs(csv_path: str | os.PathLike[str]) -> Iterator[tuple[str, str, str, str]]:
    """(path_x, path_y, as written x, as written y) per row of a pairs CSV.

    The header must have ``file_x`` and ``file_y``; other columns are
    ignored. Relative paths are relative to the CSV's folder.
    """
    p = Path(csv_path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ImageError(
            f"{p}: cannot read pairs file ({getattr(e, 'strerror', None) or e})"
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        fields = reader.fieldnames or []
        if "file_x" not in fields or "file_y" not in fields:
            raise ImageError(f"{p}: pairs file needs a header with file_x,file_y")
        for n, row in enumerate(reader, start=2):
            x, y = (row.get("file_x") or "").strip(), (row.get("file_y") or "").strip()
            if not x or not y:
                raise ImageError(f"{p}: line {n}: file_x and file_y are both needed")
            yield str(p.parent / x), str(p.parent / y), x, y
    except csv.Error as e:
        raise ImageError(f"{p}: not a readable CSV ({e})") from None
