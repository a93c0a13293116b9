"""Presentation-attack evaluation: ``edge liveness IMAGE...`` and ``edge eval --spoof FOLDER``.

Each image is scored the way the door scores a frame: the camera-path
detector (``detect.camera_mode``) finds the faces, the passive check
(:func:`edge.liveness.load_passive`) gives each a P(real), and
``liveness.passive_threshold`` turns it into "live" or "attack". The door
then averages ``passive_frames`` such scores per track; per image is the
harder test.

Rates use ISO/IEC 30107-3's terms: APCER, per attack type, is the share of
attack presentations accepted as bona fide; BPCER the share of bona fide
presentations refused. An image where no face is found is a failure to
acquire: counted apart (``no_face``), in neither rate. The folder holds
``live/`` and one subfolder per attack type; live images are also reported
by source (the file-name prefix before the first ``_``), because a folder may
mix full camera frames and tight face crops, which the 2.7x/4.0x crops of
MiniFASNet see very differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .engine import Engine
from .errors import EdgeError, ImageError
from .image import read_image
from .liveness import FusedLiveness, load_passive

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LIVE = "live"


@dataclass(frozen=True)
class FaceScore:
    """One face of an image: its box, P(real) and the verdict at the threshold."""

    box: tuple[float, float, float, float]
    live: float
    verdict: str  # "live" | "attack"

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "live": round(self.live, 4),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ImageScore:
    """Every face of one image, largest first, or why the image could not be read."""

    file: str
    faces: tuple[FaceScore, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "faces": [f.as_dict() for f in self.faces]}


class SpoofScorer:
    """The door's detector and passive check, built once, applied to still images."""

    def __init__(self, engine: Engine, passive: FusedLiveness | None = None) -> None:
        self.engine = engine
        lv = engine.cfg.liveness
        self.passive = passive or load_passive(engine.interpreter, lv.passive_models)
        self.threshold = lv.passive_threshold

    def image(self, path: str | Path) -> ImageScore:
        """Score every face in the image at ``path``; errors become ``error``, never raise."""
        e = self.engine.cfg.enroll
        try:
            bgr = read_image(path, e.max_image_pixels, e.max_image_bytes).bgr
        except (EdgeError, ImageError) as err:
            return ImageScore(str(path), error=str(err))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        dets = sorted(self.engine.detect(rgb), key=lambda d: -d.eye_distance)
        faces = []
        for d in dets:
            p = self.passive.score(bgr, d.box)
            verdict = "live" if p >= self.threshold else "attack"
            faces.append(FaceScore(tuple(float(v) for v in d.box), p, verdict))  # type: ignore[arg-type]
        return ImageScore(str(path), tuple(faces))


@dataclass(frozen=True)
class ClassResult:
    """One subfolder's images: largest-face scores and the failures to acquire."""

    name: str
    images: int
    no_face: int
    errors: int
    scores: tuple[float, ...]

    def error_rate(self, threshold: float) -> float | None:
        """APCER for an attack class (accepted share), BPCER for live (refused share)."""
        if not self.scores:
            return None
        s = np.asarray(self.scores)
        is_live = self.name == LIVE or self.name.startswith("live:")
        wrong = s < threshold if is_live else s >= threshold
        return float(np.mean(wrong))

    def summary(self, threshold: float) -> dict[str, Any]:
        s = np.asarray(self.scores)
        rate = self.error_rate(threshold)
        return {
            "images": self.images,
            "scored": len(self.scores),
            "no_face": self.no_face,
            "errors": self.errors,
            "wrong": int(round((rate or 0.0) * len(self.scores))),
            "min": round(float(s.min()), 4) if s.size else None,
            "median": round(float(np.median(s)), 4) if s.size else None,
            "max": round(float(s.max()), 4) if s.size else None,
        }


@dataclass(frozen=True)
class SpoofReport:
    """``edge eval --spoof``: live, per-source live, and per-attack-type results."""

    folder: str
    threshold: float
    live: ClassResult
    live_sources: tuple[ClassResult, ...]
    attacks: tuple[ClassResult, ...]

    @property
    def bpcer(self) -> float | None:
        return self.live.error_rate(self.threshold)

    def apcer(self) -> dict[str, float | None]:
        return {a.name: a.error_rate(self.threshold) for a in self.attacks}

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "folder": self.folder,
            "threshold": self.threshold,
            "bpcer": r(self.bpcer),
            "bpcer_by_source": {
                c.name.split(":", 1)[1]: r(c.error_rate(self.threshold)) for c in self.live_sources
            },
            "apcer": {k: r(v) for k, v in self.apcer().items()},
            "live": self.live.summary(self.threshold),
            "live_by_source": {
                c.name.split(":", 1)[1]: c.summary(self.threshold) for c in self.live_sources
            },
            "attacks": {a.name: a.summary(self.threshold) for a in self.attacks},
        }

    def text(self) -> str:
        """The report as a few aligned lines for a terminal."""
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"

        def line(label: str, c: ClassResult, term: str) -> str:
            s = c.summary(self.threshold)
            rng = "-" if s["min"] is None else f"{s['min']:.3f}..{s['max']:.3f}"
            return (
                f"{label:<16}{term} {pct(c.error_rate(self.threshold)):>6}  "
                f"({s['wrong']} of {s['scored']}; no face {s['no_face']}; scores {rng}, "
                f"median {s['median'] if s['median'] is not None else '-'})"
            )

        out = [f"{self.folder}: passive threshold {self.threshold:.2f}"]
        out.append(line("live", self.live, "BPCER"))
        out += [line(f"  {c.name.split(':', 1)[1]}", c, "BPCER") for c in self.live_sources]
        out += [line(a.name, a, "APCER") for a in self.attacks]
        return "\n".join(out)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _class(name: str, results: Sequence[ImageScore]) -> ClassResult:
    return ClassResult(
        name=name,
        images=len(results),
        no_face=sum(1 for r in results if r.error is None and not r.faces),
        errors=sum(1 for r in results if r.error is not None),
        scores=tuple(r.faces[0].live for r in results if r.faces),
    )


def evaluate(scorer: SpoofScorer, folder: str | Path) -> SpoofReport:
    """Score ``folder``'s ``live/`` and attack subfolders (largest face of each image)."""
    root = Path(folder)
    if not (root / LIVE).is_dir():
        raise EdgeError(f"{root}: no live/ subfolder (need live/ and one folder per attack type)")
    attack_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name != LIVE)
    if not attack_dirs:
        raise EdgeError(f"{root}: no attack subfolder beside live/")
    live = [(p, scorer.image(p)) for p in _images(root / LIVE)]
    sources = sorted({p.name.split("_", 1)[0] for p, _ in live})
    return SpoofReport(
        folder=str(root),
        threshold=scorer.threshold,
        live=_class(LIVE, [r for _, r in live]),
        live_sources=tuple(
            _class(f"live:{s}", [r for p, r in live if p.name.split("_", 1)[0] == s])
            for s in sources
        )
        if len(sources) > 1
        else (),
        attacks=tuple(_class(d.name, [scorer.image(p) for p in _images(d)]) for d in attack_dirs),
    )


def plot(report: SpoofReport, path: str | Path) -> None:
    """Write a PNG: the score histogram of live and of each attack type, and the threshold."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeError("--plot needs matplotlib (pip install 'edge-access[plot]')") from None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = [i / 40 for i in range(41)]
    groups = [*(report.live_sources or (report.live,)), *report.attacks]
    for c in groups:
        label = c.name.replace("live:", "live ")
        ax.hist(c.scores, bins=bins, histtype="step", linewidth=1.5,
                label=f"{label} ({len(c.scores)})")
    ax.axvline(report.threshold, color="k", linestyle="--",
               label=f"threshold {report.threshold:.2f}")
    ax.set_xlabel("passive score P(real)")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.set_title(f"edge eval --spoof {Path(report.folder).name}")
    ax.legend(loc="upper center")
    fig.tight_layout()
    try:
        fig.savefig(str(path), format="png")
    except OSError as e:
        raise EdgeError(f"{path}: cannot write plot ({e.strerror or e})") from None
    finally:
        plt.close(fig)
