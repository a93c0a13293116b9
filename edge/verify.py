"""Verification of photo pairs: is this the same person? Used to check the threshold.

``edge verify --pairs FILE.csv`` runs every pair in one process, embedding
each distinct photo once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import Engine
from .errors import EdgeError, ImageError
from .image import read_image
from .pairs import pair_rows


@dataclass(frozen=True)
class PairResult:
    """One pair's answer; ``similarity`` is None and ``error`` says why when a photo is unusable.

    ``same`` is the CSV's expected answer, when it has a ``same`` column.
    """

    file_x: str
    file_y: str
    similarity: float | None
    verified: bool
    error: str | None = None
    same: bool | None = None

    def as_dict(self) -> dict[str, object]:
        """The JSON row: ``error`` only on a broken row, ``same`` only when the CSV gave it."""
        out: dict[str, object] = {
            "file_x": self.file_x,
            "file_y": self.file_y,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "verified": self.verified,
        }
        if self.same is not None:
            out["same"] = self.same
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Pair:
    """One row of a pairs CSV: paths to read, paths as written, and the expected answer."""

    path_x: str
    path_y: str
    file_x: str
    file_y: str
    same: bool | None = None


class PhotoEmbeddings:
    """The embedding of the one face of each photo, computed once per path."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[np.ndarray | None, str | None]] = {}

    def get(self, path: str) -> tuple[np.ndarray | None, str | None]:
        """(embedding, None) or (None, reason) for the photo at ``path``.

        A photo with several people is refused, as enrollment refuses it:
        comparing "the largest face" of a group photo silently answers for
        whoever stood nearest.
        """
        if path not in self._cache:
            e = self.engine.cfg.enroll
            try:
                image = read_image(path, e.max_image_pixels, e.max_image_bytes)
                self._cache[path] = (self.engine.single_face(image).embedding, None)
            except EdgeError as err:
                self._cache[path] = (None, str(err))
        return self._cache[path]


def verify(photos: PhotoEmbeddings, pair: Pair, threshold: float) -> PairResult:
    """Compare the faces of a pair's two photos at ``threshold``."""
    ex, err_x = photos.get(pair.path_x)
    ey, err_y = photos.get(pair.path_y)
    if ex is None or ey is None:
        return PairResult(pair.file_x, pair.file_y, None, False, err_x or err_y, pair.same)
    sim = float(np.dot(ex, ey))
    return PairResult(pair.file_x, pair.file_y, sim, sim >= threshold, None, pair.same)


#: Accepted values of a pairs CSV's ``same`` column (case-insensitive).
SAME_VALUES = {"yes": True, "1": True, "true": True, "no": False, "0": False, "false": False}


def read_pairs(csv_path: str | os.PathLike[str]) -> list[Pair]:
    """Every row of a pairs CSV, checked before any photo is read.

    The header must have ``file_x`` and ``file_y``; a ``same`` column, if
    there is one, must hold yes/no/1/0/true/false on every row; other
    columns are ignored. A UTF-8 byte-order mark (Excel writes one) is
    skipped. Relative paths are relative to the CSV's folder, not the
    current one, so a folder of photos and its CSV can move together.
    """
    p = Path(csv_path)
    out = []
    header = "pairs file needs a header with file_x,file_y"
    for n, row, fields in pair_rows(p, ("file_x", "file_y"), header):
        x, y = (row.get("file_x") or "").strip(), (row.get("file_y") or "").strip()
        if not x or not y:
            raise ImageError(f"{p}: line {n}: file_x and file_y are both needed")
        same = None
        if "same" in fields:
            word = (row.get("same") or "").strip().lower()
            if word not in SAME_VALUES:
                raise ImageError(
                    f"{p}: line {n}: same is {row.get('same')!r};"
                    " expected yes, no, 1, 0, true or false"
                )
            same = SAME_VALUES[word]
        out.append(Pair(str(p.parent / x), str(p.parent / y), x, y, same))
    return out
