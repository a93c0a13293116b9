"""SFace as converted by scripts/convert_sface.py against OpenCV 4.11 running the upstream ONNX.

OpenCV's ``FaceRecognizerSF`` is SFace's reference pipeline (it is what OpenCV
Zoo's figures were measured with); it needs OpenCV 4.11, which runs in its own
venv (.venv-reference) because the project needs 5.0. Every face our pipeline finds in
../shared/eval/faces is aligned once, by our code, and the same crop is fed
to both: the converted model must give the same direction (cosine ≥ 0.99) on
every one. Also: the contract the rest of the project relies on (template,
``model_id``, ``name``) and the mobilefacenet switch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.embed import EMBED_MODELS, load_embedder
from edge.image import read_image
from edge.models import entry, require, sha256_file

from .conftest import MODELS, ROOT

EVAL = Path(os.environ.get("EDGE_EVAL", ROOT.parent / "shared" / "eval"))
MIN_COSINE = 0.99


@pytest.fixture(scope="session")
def eval_crops(engine) -> list[tuple[str, np.ndarray]]:
    """(file, aligned RGB 112x112 crop) for every face found in ../shared/eval/faces."""
    folder = EVAL / "faces"
    assert folder.is_dir(), f"the shared eval photos are missing: {folder}"
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        # cv2.imread, not edge.image: the photo reader is not under test here (and
        # the .pgm badge crops are another change's business).
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        assert bgr is not None, p
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for det in engine.detect(rgb, still=True):
            out.append((str(p.relative_to(folder)), engine.embedder.crop(rgb, det.keypoints)))
    return out


REFERENCE_PYTHON = Path(
    os.environ.get("EDGE_REFERENCE_PYTHON") or ROOT / ".venv-reference" / "bin" / "python"
)


def opencv_features(crops: np.ndarray, tmp: Path) -> np.ndarray:
    """OpenCV 4.11's SFace features of RGB crops, run in .venv-reference (5.0 refuses the file)."""
    assert REFERENCE_PYTHON.is_file(), (
        f"{REFERENCE_PYTHON}: missing; make it with 'make reference-venv' "
        "(OpenCV 4.11, tests/reference-requirements.txt)"
    )
    np.save(tmp / "crops.npy", crops)
    r = subprocess.run(
        [str(REFERENCE_PYTHON), str(ROOT / "tests" / "sface_reference.py"),
         str(require(MODELS, "embed_sface_onnx")), str(tmp / "crops.npy"), str(tmp / "out.npy")],
        capture_output=True, text=True, timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return np.load(tmp / "out.npy")


def test_converted_sface_matches_opencv_on_every_eval_face(engine, eval_crops, tmp_path):
    assert engine.embedder.name == "sface"
    assert len(eval_crops) > 300  # 525 photos; the tight att_* crops are the detector's issue
    ref = opencv_features(np.stack([c for _, c in eval_crops]), tmp_path)
    ours = np.stack([engine.embedder.embed(c) for _, c in eval_crops])
    cos = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
    worst = int(np.argmin(cos))
    assert cos[worst] >= MIN_COSINE, (
        f"cosine to OpenCV below {MIN_COSINE}: {cos[worst]:.6f} on {eval_crops[worst][0]}"
    )


def test_the_embedder_says_which_model_made_it(engine):
    e = engine.embedder
    assert e.name == "sface"
    assert e.model_id == entry("embed_sface").sha256 == sha256_file(MODELS / "sface.tflite")
    assert e.template.size == (112, 112)
    rgb = cv2.cvtColor(read_image(sorted((EVAL / "faces/nuaa_0001").iterdir())[0]).bgr,
                       cv2.COLOR_BGR2RGB)
    det = engine.detect(rgb, still=True)[0]
    assert e.crop(rgb, det.keypoints).shape == (112, 112, 3)


def test_mobilefacenet_stays_selectable_with_its_own_template_and_id(engine):
    old = load_embedder(MODELS, "mobilefacenet")
    assert old.name == "mobilefacenet" and old.template.size == (96, 112)
    assert old.model_id == sha256_file(MODELS / "mobilefacenet_int8.tflite")
    assert old.model_id != engine.embedder.model_id
    assert set(EMBED_MODELS) == {"sface", "mobilefacenet"}
    rgb = cv2.cvtColor(read_image(sorted((EVAL / "faces/nuaa_0002").iterdir())[0]).bgr,
                       cv2.COLOR_BGR2RGB)
    det = engine.detect(rgb, still=True)[0]
    crop = old.crop(rgb, det.keypoints)
    assert crop.shape == (112, 96, 3)
    v = old.embed(crop)
    assert v.shape == (128,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
