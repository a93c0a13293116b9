"""The recognition path on real photos: accuracy at the default threshold, enrollment checks."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge.errors import NoFaceError
from edge.image import Image, read_image

from .conftest import FACES, all_people_photos

# On the emulated Pi too (scripts/test-arm64.sh):
# the whole pipeline, embedding included, on the Pi's runtime.
pytestmark = pytest.mark.pi


def labelled_photos() -> list[tuple[str, str]]:
    """(person, path) for every single-person photo in ../shared/faces."""
    out = [(person, str(p)) for person, p in all_people_photos()]
    out += [("barack_obama", str(p)) for p in sorted((FACES / "partial").iterdir())]
    out.append(("barack_obama", str(FACES / "odd/32bit.png")))
    return out


@pytest.fixture(scope="module")
def embeddings(engine):
    out = []
    for person, path in labelled_photos():
        faces = [
            f for f in engine.faces(read_image(path).bgr, still=True) if f.embedding is not None
        ]
        assert faces, f"{path}: no face"
        out.append((person, path, faces[0].embedding))
    return out


def test_embeddings_are_unit_vectors(embeddings):
    for _, _, v in embeddings:
        assert v.shape == (128,) and v.dtype == np.float32
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_at_the_default_threshold_same_people_verify_and_different_people_do_not(cfg, embeddings):
    t = cfg.match.threshold
    same, different = [], []
    for (pa, fa, va), (pb, fb, vb) in itertools.combinations(embeddings, 2):
        (same if pa == pb else different).append((float(va @ vb), fa, fb))
    assert len(same) > 50 and len(different) > 150
    worst_same = min(same)
    worst_diff = max(different)
    assert worst_same[0] >= t, f"same person below threshold: {worst_same}"
    assert worst_diff[0] < t, f"different people above threshold: {worst_diff}"


def test_flip_average_stays_a_unit_vector_and_close(cfg, engine):
    from edge.embed import load_embedder

    flip = load_embedder(engine.models_dir, cfg.embed.model, flip_average=True)
    rgb = cv2.cvtColor(read_image(FACES / "people/kit_harington/kit1.jpg").bgr, cv2.COLOR_BGR2RGB)
    det = engine.detect(rgb, still=True)[0]
    crop = engine.embedder.crop(rgb, det.keypoints)
    a, b = engine.embedder.embed(crop), flip.embed(crop)
    assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-5)
    assert 0.8 < float(a @ b) < 1.0


def test_small_faces_are_detected_but_not_embedded(cfg, engine):
    bgr = read_image(FACES / "people/barack_obama/obama.jpg").bgr
    small = cv2.resize(bgr, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    faces = engine.faces(small, still=True)
    assert faces and faces[0].eye_distance < cfg.align.min_eye_distance
    assert faces[0].embedding is None


# --- enrollment checks, each on a real photo made bad in one way ------------


def image_of(bgr: np.ndarray, name: str) -> Image:
    return Image(bgr, name, "0" * 64)


def test_enrollment_accepts_every_people_photo(engine):
    for _, path in all_people_photos():
        face = engine.enrollment_face(read_image(path))
        assert face.embedding is not None and 0 < face.quality <= 1


def test_enrollment_refuses_no_face(engine):
    bgr = read_image(FACES / "people/joe_biden/biden.jpg").bgr
    wall = bgr[-500:, :300]  # the bottom-left corner: clothes and background
    with pytest.raises(NoFaceError, match="corner.jpg: no face found"):
        engine.enrollment_face(image_of(wall, "corner.jpg"))


def test_enrollment_refuses_two_faces(engine):
    with pytest.raises(NoFaceError, match="two_people.jpg: more than one face"):
        engine.enrollment_face(read_image(FACES / "group/two_people.jpg"))


def test_enrollment_refuses_a_small_face(engine):
    bgr = read_image(FACES / "people/barack_obama/obama.jpg").bgr
    small = cv2.resize(bgr, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)
    with pytest.raises(NoFaceError, match="small.jpg: face too small"):
        engine.enrollment_face(image_of(small, "small.jpg"))


def test_enrollment_refuses_a_blurry_face(engine):
    bgr = read_image(FACES / "people/barack_obama/obama.jpg").bgr
    with pytest.raises(NoFaceError, match="blur.jpg: face too blurry"):
        engine.enrollment_face(image_of(cv2.GaussianBlur(bgr, (41, 41), 0), "blur.jpg"))


@pytest.mark.parametrize("still", [True, False])
def test_enrollment_refuses_a_turned_face(engine, still):
    # Frame 33 of the Hamilton clip: a performer in profile.
    cap = cv2.VideoCapture(str(FACES / "video/short_hamilton_clip.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 33)
    ok, frame = cap.read()
    cap.release()
    assert ok
    with pytest.raises(NoFaceError, match="turned.png: face turned too far from frontal"):
        engine.enrollment_face(image_of(frame, "turned.png"), still=still)
