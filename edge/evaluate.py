"""``edge eval``: how well recognition separates people, measured on a site's own photos.

The calibration tool. Given labelled photos (a folder with one subfolder per
person, or a pairs CSV) it embeds every photo once through the
:class:`~edge.engine.Engine` (whatever embedder the config selects) and
reports what an installer needs to choose ``match.threshold`` and
``match.margin``:

- verification: genuine (same person) and impostor (different people) score
  counts and ranges, TAR at FAR 1e-2, 1e-3, 1e-4 and 0, the EER, and the
  threshold that keeps FAR at a target;
- closed-set identification: rank-1 and precision@k, every photo against all
  the others;
- open-set identification with the configured threshold and margin, as the
  door decides: one photo of each person enrolled, every other photo of
  them identified, and each person in turn left out and identified as a
  stranger (who must not be named).

The metrics are pure functions of score arrays; only :class:`Embeddings`
touches photos and models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import EdgeError, ImageError
from .match import NO_ONE, decide
from .pairs import pair_rows

#: The FARs at which TAR is always reported; 0 means "no impostor accepted".
REPORTED_FARS = (1e-2, 1e-3, 1e-4, 0.0)
#: precision@k is reported for k = 1 .. MAX_K.
MAX_K = 5
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".pgm", ".ppm"}

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------- metrics (pure)


@dataclass(frozen=True)
class OperatingPoint:
    """TAR reached while at most ``far`` of the impostors pass (score >= ``threshold``).

    ``resolvable`` is False when there are too few impostor pairs to measure
    ``far`` (fewer than 1/far): the point is then the same as FAR 0.
    """

    far: float
    tar: float
    threshold: float
    achieved_far: float
    resolvable: bool


def tar_at_far(genuine: npt.ArrayLike, impostor: npt.ArrayLike, far: float) -> OperatingPoint:
    """The lowest threshold at which at most ``far`` of impostors pass, and its TAR.

    A pair passes when its score >= threshold. With k = floor(far * N)
    impostors allowed through, the threshold sits just above the (k+1)-th
    highest impostor score (see :func:`above`), so ties never let more than
    k through.
    """
    g = np.asarray(genuine, np.float64)
    imp = np.sort(np.asarray(impostor, np.float64))[::-1]
    n = imp.size
    allowed = math.floor(far * n + 1e-9)
    # Everything passes when the FAR allows every impostor through. Else the
    # smallest 4-decimal value above that impostor, so the number can be
    # copied into match.threshold as printed.
    threshold = -math.inf if allowed >= n else above(float(imp[allowed]))
    tar = float(np.mean(g >= threshold)) if g.size else math.nan
    achieved = float(np.mean(imp >= threshold)) if n else math.nan
    return OperatingPoint(far, tar, threshold, achieved, far == 0.0 or far * n >= 1.0)


def above(score: float, digits: int = 4) -> float:
    """The smallest number of ``digits`` decimals strictly greater than ``score``."""
    step = 10.0**-digits
    return round(math.floor(score / step) * step + step, digits)


def rates_at(
    genuine: npt.ArrayLike, impostor: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """(TAR, FAR) when pairs with score >= ``threshold`` pass."""
    g, imp = np.asarray(genuine), np.asarray(impostor)
    tar = float(np.mean(g >= threshold)) if g.size else math.nan
    far = float(np.mean(imp >= threshold)) if imp.size else math.nan
    return tar, far


def roc(
    genuine: npt.ArrayLike, impostor: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(FAR, TAR, threshold) at every distinct score, threshold descending."""
    g = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    t = np.unique(np.concatenate([g, imp]))[::-1]
    tar = (g.size - np.searchsorted(g, t, side="left")) / max(g.size, 1)
    far = (imp.size - np.searchsorted(imp, t, side="left")) / max(imp.size, 1)
    return far, tar, t


def eer(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> tuple[float, float]:
    """(equal error rate, its threshold): where FAR and FRR (1 - TAR) cross.

    Taken at the threshold where |FAR - FRR| is smallest, as their mean.
    """
    far, tar, t = roc(genuine, impostor)
    if t.size == 0:
        return math.nan, math.nan
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2), float(t[i])


def pair_scores(sim: npt.ArrayLike, labels: list[str]) -> tuple[FloatArray, FloatArray]:
    """(genuine, impostor) scores of every unordered pair of a similarity matrix."""
    s = np.asarray(sim, np.float64)
    lab = np.asarray(labels)
    i, j = np.triu_indices(len(lab), k=1)
    same = lab[i] == lab[j]
    return s[i, j][same], s[i, j][~same]


def closed_set(sim: npt.ArrayLike, labels: list[str], max_k: int = MAX_K) -> dict[str, Any]:
    """Rank-1 and precision@k: each photo ranked against every other photo.

    precision@k is the mean share of a probe's k nearest other photos that
    show the same person; rank-1 is precision@1. Photos whose person has no
    other photo are not probes.
    """
    s = np.array(sim, np.float64)
    lab = np.asarray(labels)
    np.fill_diagonal(s, -np.inf)
    counts = {name: int(np.sum(lab == name)) for name in set(labels)}
    probes = [i for i in range(len(lab)) if counts[lab[i]] > 1]
    if not probes:
        return {"probes": 0, "rank1": math.nan, "precision_at_k": [math.nan] * max_k}
    order = np.argsort(-s[probes], axis=1, kind="stable")[:, :max_k]
    hits = lab[order] == lab[probes][:, None]
    precision = [float(hits[:, :k].mean()) for k in range(1, max_k + 1)]
    return {"probes": len(probes), "rank1": precision[0], "precision_at_k": precision}


def first_of_each(labels: list[str]) -> dict[str, int]:
    """The index of each person's first photo: the one enrolled in the open-set test."""
    out: dict[str, int] = {}
    for i, name in enumerate(labels):
        out.setdefault(name, i)
    return out


def _named(row: np.ndarray, gallery: list[int], threshold: float, margin: float) -> int | None:
    """Index of the gallery photo the door would name for a probe, or None."""
    if not gallery:
        return None
    scores = row[gallery]
    order = np.argsort(-scores, kind="stable")
    best = float(scores[order[0]])
    second = float(scores[order[1]]) if len(order) > 1 else NO_ONE
    return gallery[int(order[0])] if decide(best, second, threshold, margin) else None


def open_set(
    sim: npt.ArrayLike, labels: list[str], threshold: float, margin: float
) -> dict[str, Any]:
    """Identification as the door does it, one enrolled photo per person.

    Genuine: every person's first photo enrolled, each of their other photos
    identified: named right, named as someone else, or not named.
    Strangers: each person in turn is left out of the gallery and every
    photo of theirs identified; any name given is a stranger let in.
    """
    s = np.asarray(sim, np.float64)
    enrolled = first_of_each(labels)
    everyone = sorted(enrolled.values())
    right = wrong = unnamed = 0
    for i, name in enumerate(labels):
        if enrolled[name] == i:
            continue
        got = _named(s[i], everyone, threshold, margin)
        if got is None:
            unnamed += 1
        elif labels[got] == name:
            right += 1
        else:
            wrong += 1
    accepted: list[dict[str, Any]] = []
    strangers = 0
    for left_out in enrolled:
        gallery = [g for g in everyone if labels[g] != left_out]
        for i, name in enumerate(labels):
            if name != left_out:
                continue
            strangers += 1
            got = _named(s[i], gallery, threshold, margin)
            if got is not None:
                accepted.append({"probe": i, "named": labels[got], "similarity": float(s[i, got])})
    return {
        "threshold": threshold,
        "margin": margin,
        "genuine": {
            "probes": right + wrong + unnamed,
            "right": right,
            "wrong": wrong,
            "not_named": unnamed,
        },
        "strangers": {"probes": strangers, "accepted": len(accepted)},
        "accepted": accepted,
    }


# --------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Sample:
    """One labelled photo: its path and who it shows (its folder's name)."""

    path: str
    identity: str


def _keep(identity: str, only: tuple[str, ...]) -> bool:
    return not only or identity.startswith(only)


def scan_folder(folder: str | Path, only: tuple[str, ...] = ()) -> list[Sample]:
    """Every photo of FOLDER/<person>/…, person = subfolder name, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (expected one subfolder of photos per person)")
    out = [
        Sample(str(p), d.name)
        for d in sorted(root.iterdir())
        if d.is_dir() and _keep(d.name, only)
        for p in sorted(d.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not out:
        raise ImageError(f"{root}: no photos in subfolders (one subfolder per person)")
    return out


_YES = {"yes", "y", "1", "true", "same"}
_NO = {"no", "n", "0", "false", "different"}


def read_labelled_pairs(
    csv_path: str | Path, only: tuple[str, ...] = ()
) -> list[tuple[Sample, Sample, bool]]:
    """(x, y, same) per row of ``file_x,file_y,same``; paths relative to the CSV's folder.

    A photo's identity is its folder's name (used for the identification
    measures and ``--only``).
    """
    p = Path(csv_path)
    rows: list[tuple[Sample, Sample, bool]] = []
    header = "pairs file needs a header with file_x,file_y,same"
    for n, row, _ in pair_rows(p, ("file_x", "file_y", "same"), header):
        x, y = (row["file_x"] or "").strip(), (row["file_y"] or "").strip()
        same = (row["same"] or "").strip().lower()
        if not x or not y or same not in _YES | _NO:
            raise ImageError(f"{p}: line {n}: needs file_x, file_y and same (yes/no)")
        sx = Sample(str(p.parent / x), Path(x).parent.name)
        sy = Sample(str(p.parent / y), Path(y).parent.name)
        if _keep(sx.identity, only) and _keep(sy.identity, only):
            rows.append((sx, sy, same in _YES))
    if not rows:
        raise ImageError(f"{p}: no pairs to evaluate")
    return rows


class Embeddings:
    """The embedding of the largest face of each photo, computed once per path.

    ``engine`` is anything with ``cfg`` and ``largest_face(bgr, still=True)``
    returning a face with ``.embedding`` (the :class:`~edge.engine.Engine`),
    so the measures hold for whichever embedder the config selects.
    """

    def __init__(self, engine: Any, progress: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.progress = progress
        self._cache: dict[str, np.ndarray | None] = {}
        self.errors: dict[str, str] = {}

    def get(self, path: str) -> np.ndarray | None:
        """The unit embedding, or None (the reason is then in :attr:`errors`)."""
        if path not in self._cache:
            from .image import read_image

            e = self.engine.cfg.enroll
            emb = None
            try:
                face = self.engine.largest_face(
                    read_image(path, e.max_image_pixels, e.max_image_bytes).bgr, still=True
                )
                emb = None if face is None else face.embedding
                if emb is None:
                    self.errors[path] = (
                        f"{path}: no face found"
                        if face is None
                        else (f"{path}: face too small to embed")
                    )
            except EdgeError as err:
                self.errors[path] = str(err)
            self._cache[path] = emb
            if self.progress:
                self.progress(len(self._cache))
        return self._cache[path]

    def matrix(self, samples: Iterable[Sample]) -> tuple[list[Sample], np.ndarray]:
        """The usable samples (each path once) and their embeddings stacked (N, D)."""
        seen: dict[str, Sample] = {}
        for s in samples:
            seen.setdefault(s.path, s)
        kept = [s for s in seen.values() if self.get(s.path) is not None]
        vecs = [self.get(s.path) for s in kept]
        if not kept:
            return kept, np.zeros((0, 0), np.float64)
        return kept, np.array(vecs, np.float64)


# --------------------------------------------------------------- the evaluation


@dataclass(frozen=True)
class Evaluation:
    """Everything ``edge eval`` reports; ``genuine``/``impostor`` are kept for the plot."""

    photos: int
    identities: int
    unusable: list[str]
    genuine: FloatArray = field(repr=False)
    impostor: FloatArray = field(repr=False)
    threshold: float
    margin: float
    target_far: float
    at_far: list[OperatingPoint]
    target: OperatingPoint
    eer: float
    eer_threshold: float
    closed_set: dict[str, Any]
    open_set: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become None)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return round(v, 6) if math.isfinite(v) else None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        tar, far = rates_at(self.genuine, self.impostor, self.threshold)
        return clean(
            {
                "photos": self.photos,
                "identities": self.identities,
                "unusable": self.unusable,
                "genuine": summary(self.genuine),
                "impostor": summary(self.impostor),
                "at_threshold": {"threshold": self.threshold, "tar": tar, "far": far},
                "tar_at_far": [asdict(p) for p in self.at_far],
                "target_far": asdict(self.target),
                "eer": {"eer": self.eer, "threshold": self.eer_threshold},
                "closed_set": self.closed_set,
                "open_set": self.open_set,
            }
        )


def summary(scores: FloatArray) -> dict[str, Any]:
    if scores.size == 0:
        return {"count": 0, "min": None, "max": None, "mean": None}
    return {
        "count": int(scores.size),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "mean": float(scores.mean()),
    }


def evaluate(
    embeddings: Embeddings,
    samples: list[Sample],
    threshold: float,
    margin: float,
    target_far: float = 1e-3,
    pairs: list[tuple[Sample, Sample, bool]] | None = None,
) -> Evaluation:
    """Measure every photo of ``samples`` (all pairs), or only the given ``pairs``."""
    kept, vecs = embeddings.matrix(samples)
    labels = [s.identity for s in kept]
    sim = vecs @ vecs.T
    if pairs is None:
        genuine, impostor = pair_scores(sim, labels)
    else:
        index = {s.path: i for i, s in enumerate(kept)}
        g: list[float] = []
        imp: list[float] = []
        for x, y, same in pairs:
            if x.path in index and y.path in index:
                (g if same else imp).append(sim[index[x.path], index[y.path]])
        genuine, impostor = np.array(g, np.float64), np.array(imp, np.float64)
    seen = {s.path for s in samples}
    unusable = sorted(embeddings.errors[p] for p in seen if p in embeddings.errors)
    if genuine.size == 0 or impostor.size == 0:
        why = f"; {len(unusable)} unusable, e.g. {unusable[0]}" if unusable else ""
        raise ImageError(
            f"nothing to measure: {genuine.size} same-person and {impostor.size} "
            f"different-person pairs (need two or more photos of each of two or more "
            f"people){why}"
        )
    eer_value, eer_t = eer(genuine, impostor)
    opened = open_set(sim, labels, threshold, margin)
    opened["accepted"] = [
        {"file": kept[a["probe"]].path, "named": a["named"], "similarity": a["similarity"]}
        for a in opened["accepted"]
    ]
    return Evaluation(
        photos=len(seen),
        identities=len(set(labels)),
        unusable=unusable,
        genuine=genuine,
        impostor=impostor,
        threshold=threshold,
        margin=margin,
        target_far=target_far,
        at_far=[tar_at_far(genuine, impostor, f) for f in REPORTED_FARS],
        target=tar_at_far(genuine, impostor, target_far),
        eer=eer_value,
        eer_threshold=eer_t,
        closed_set=closed_set(sim, labels),
        open_set=opened,
    )


def run(
    engine: Any,
    folder: str | None = None,
    pairs_csv: str | None = None,
    only: tuple[str, ...] = (),
    target_far: float = 1e-3,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """``edge eval``: every pair of FOLDER's photos, or the pairs of a CSV, at the config's
    ``match.threshold`` and ``match.margin``."""
    m = engine.cfg.match
    emb = Embeddings(engine, progress)
    if pairs_csv is not None:
        pairs = read_labelled_pairs(pairs_csv, only)
        samples = [s for x, y, _ in pairs for s in (x, y)]
        return evaluate(emb, samples, m.threshold, m.margin, target_far, pairs)
    if folder is None:
        raise ImageError("give a FOLDER of people's photos or --pairs CSV")
    return evaluate(emb, scan_folder(folder, only), m.threshold, m.margin, target_far)
