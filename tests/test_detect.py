"""BlazeFace maths as pure functions, then the real detector on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.detect import (
    FULL_RANGE,
    SHORT_RANGE,
    Detector,
    anchors,
    decode,
    iou,
    letterbox,
    tiles,
    weighted_nms,
)
from edge.models import require
from edge.runtime import load_interpreter

from .conftest import FACES, MODELS, all_people_photos

# On the emulated Pi too (scripts/test-arm64.sh):
# BlazeFace on XNNPACK: the native code that segfaulted on arm64.
pytestmark = pytest.mark.pi


def rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_anchor_counts_and_layout():
    a = anchors(SHORT_RANGE)
    assert a.shape == (896, 2)
    # 16x16 grid, 2 per cell, then 8x8 with 6 per cell.
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[512], [0.5 / 8, 0.5 / 8]) and np.allclose(a[517], a[512])
    assert np.allclose(a[518], [1.5 / 8, 0.5 / 8])
    full = anchors(FULL_RANGE)
    assert full.shape == (2304, 2)
    assert np.allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_decode_places_box_and_keypoints_around_anchor():
    reg = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    logits[0, 600] = 10.0
    reg[0, 600, 0:4] = [12.8, 0.0, 32.0, 64.0]  # shift 0.1 right; 0.25 x 0.5 box
    reg[0, 600, 4:6] = [-6.4, -6.4]
    boxes, scores, kps = decode(reg, logits, SHORT_RANGE, 0.5)
    a = anchors(SHORT_RANGE)[600]
    assert scores.shape == (1,) and scores[0] > 0.99
    cx, cy = a[0] + 0.1, a[1]
    assert np.allclose(boxes[0], [cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25], atol=1e-6)
    assert np.allclose(kps[0, 0], a - 0.05, atol=1e-6)


def test_decode_handles_extreme_logits_without_warnings():
    logits = np.array([[[-1e6], [1e6]]], np.float32)
    reg = np.zeros((1, 2, 16), np.float32)
    spec = SHORT_RANGE
    with np.errstate(all="raise"):
        _, scores, _ = decode(
            np.resize(reg, (1, 896, 16)), np.resize(logits, (1, 896, 1)), spec, 0.5
        )
    assert len(scores) == 448


def test_iou_and_weighted_nms_merge_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    assert iou(boxes[0], boxes)[0] == pytest.approx(1.0)
    assert iou(boxes[0], boxes)[2] == 0.0
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    merged = weighted_nms(boxes, scores, kps, 0.3)
    assert len(merged) == 2
    box, score, _ = merged[0]
    assert score == pytest.approx(0.9)
    assert box[0] == pytest.approx(0.6 / 1.5)  # (0*0.9 + 1*0.6) / 1.5


def test_letterbox_maps_points_back():
    img = np.zeros((300, 600, 3), np.uint8)
    img[100, 400] = 255
    sq, scale, px, py = letterbox(img, 128)
    assert sq.shape == (128, 128, 3)
    assert px == 0 and py == 32 and scale == pytest.approx(128 / 600)
    y, x = np.unravel_index(np.argmax(sq[..., 0]), sq.shape[:2])
    assert (x - px) / scale == pytest.approx(400, abs=5)
    assert (y - py) / scale == pytest.approx(100, abs=5)


def test_tiles_cover_the_frame():
    ts = tiles(2000, 1428, 512)
    covered = np.zeros((1428, 2000), bool)
    for x, y, s in ts:
        assert s == 512 and x + s <= 2000 and y + s <= 1428
        covered[y : y + s, x : x + s] = True
    assert covered.all()


@pytest.fixture(scope="module")
def short() -> Detector:
    return Detector(load_interpreter(require(MODELS, "detect_short")))


@pytest.fixture(scope="module")
def full() -> Detector:
    return Detector(load_interpreter(require(MODELS, "detect_full")))


@pytest.mark.parametrize("person,path", all_people_photos(), ids=lambda v: getattr(v, "name", v))
def test_every_people_photo_yields_its_face(short, full, person, path):
    for det in (short, full):
        faces = det.detect(rgb(path))
        assert faces, f"{path.name}: no face"
        f = faces[0]
        x1, y1, x2, y2 = f.box
        for kx, ky in f.keypoints[:4]:
            assert x1 - 5 <= kx <= x2 + 5 and y1 - 5 <= ky <= y2 + 5


def test_whole_image_short_range_misses_the_small_group_faces(short):
    # The problem the still-photo modes solve.
    assert len(short.detect(rgb(FACES / "group/obama_and_biden.jpg"))) < 2


@pytest.mark.parametrize("mode", ["full", "tiles", "both"])
@pytest.mark.parametrize("photo", ["obama_and_biden.jpg", "two_people.jpg", "kit_with_rose.jpg"])
def test_group_photos_yield_every_face(cfg, mode, photo):
    from edge.engine import Engine

    engine = Engine(
        cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"still_mode": mode})})
    )
    faces = engine.faces(cv2.imread(str(FACES / "group" / photo)), still=True)
    big = [f for f in faces if f.embedding is not None and f.yaw < 1.0]
    assert len(big) >= 2, [(f.box, f.detection.score) for f in faces]
    # Two distinct people, not one face found twice.
    a, b = big[0].box, big[1].box
    assert iou(np.array(a), np.array([b]))[0] < 0.1
