"""Liveness: crop and EAR maths as pure functions, the blink state machine on
made-up EAR sequences, then MiniFASNetV2 and FaceMesh on real photos."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detect import Detection, Detector
from edge.liveness import (
    LEFT_EYE,
    RIGHT_EYE,
    BlinkDetector,
    FaceMesh,
    PassiveLiveness,
    crop_box,
    eye_aspect_ratio,
    mean_eye_aspect_ratio,
    passive_verdict,
    roi_transform,
    softmax,
)
from edge.runtime import load_interpreter

from .conftest import FACES, ROOT

# On the emulated Pi too (scripts/test-arm64.sh):
# the liveness models (a converted model) on the Pi's runtime.
pytestmark = pytest.mark.pi

MIRROR = Path(os.environ.get("EDGE_MODEL_MIRROR", ROOT.parent / "shared" / "models"))
#: Made from the upstream checkpoint by scripts/convert_minifasnet.py, at provisioning.
PASSIVE_MODEL = ROOT / "models" / "minifasnet_v2.tflite"
SPOOF = FACES / "spoof"

FPS = 30.0


# --- pure functions ---------------------------------------------------------------


def test_crop_box_scales_about_the_centre():
    x1, y1, x2, y2 = crop_box((400, 300, 500, 400), 1920, 1080, 2.7)
    assert (x2 - x1, y2 - y1) == pytest.approx((270, 270), abs=2)
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((450, 350), abs=1)


def test_crop_box_is_shifted_into_the_frame_not_cut():
    # A face in the top-left corner: the region keeps its size and moves in.
    x1, y1, x2, y2 = crop_box((10, 20, 110, 120), 640, 480, 2.7)
    assert (x1, y1) == (0, 0)
    assert (x2 - x1, y2 - y1) == pytest.approx((270, 270), abs=2)
    # And the bottom-right corner.
    x1, y1, x2, y2 = crop_box((560, 400, 630, 470), 640, 480, 2.7)
    assert (x2, y2) == (640, 480)
    assert (x2 - x1, y2 - y1) == pytest.approx((189, 189), abs=2)


def test_crop_box_shrinks_the_scale_when_the_frame_is_too_small():
    # 2.7 x 200 px would not fit 480 px: the scale drops to 479/200, the square
    # region keeps its aspect and is shifted down into the frame.
    assert crop_box((200, 100, 400, 300), 640, 480, 2.7) == (60, 0, 540, 480)


def test_softmax_is_a_distribution_even_for_huge_logits():
    p = softmax(np.array([1000.0, 1001.0, -1000.0]))
    assert p.sum() == pytest.approx(1.0)
    assert p[1] > p[0] > p[2] >= 0.0


def eye(width: float, opening: float, at=(0.0, 0.0)) -> np.ndarray:
    """Six eye points p1..p6: corners ``width`` apart, lids ``opening`` apart."""
    x, y = at
    w, h = width, opening / 2
    return np.array(
        [[x, y], [x + w / 3, y - h], [x + 2 * w / 3, y - h],
         [x + w, y], [x + 2 * w / 3, y + h], [x + w / 3, y + h]]
    )


def test_eye_aspect_ratio_is_opening_over_width():
    assert eye_aspect_ratio(eye(30, 9)) == pytest.approx(0.3)
    assert eye_aspect_ratio(eye(30, 0)) == pytest.approx(0.0)
    # Independent of the face's size and position in the frame.
    assert eye_aspect_ratio(eye(300, 90, at=(500, 200))) == pytest.approx(0.3)
    # z is ignored.
    assert eye_aspect_ratio(np.c_[eye(30, 9), np.arange(6) * 10]) == pytest.approx(0.3)


def test_eye_aspect_ratio_of_a_degenerate_eye_is_zero():
    assert eye_aspect_ratio(np.zeros((6, 2))) == 0.0


def test_mean_eye_aspect_ratio_reads_the_facemesh_eye_indices():
    lm = np.zeros((468, 3))
    lm[list(LEFT_EYE), :2] = eye(30, 9, at=(100, 100))
    lm[list(RIGHT_EYE), :2] = eye(30, 3, at=(160, 100))
    assert mean_eye_aspect_ratio(lm) == pytest.approx((0.3 + 0.1) / 2)


def test_eye_index_constants_are_six_distinct_points_each():
    assert len(LEFT_EYE) == len(RIGHT_EYE) == 6
    assert len(set(LEFT_EYE) | set(RIGHT_EYE)) == 12


def test_roi_transform_maps_the_crop_centre_and_axes():
    m = roi_transform((300.0, 200.0), 150.0, math.radians(90), 192)
    centre = m[:, :2] @ [96, 96] + m[:, 2]
    assert centre == pytest.approx([300, 200])
    # The crop's x axis points down the frame when rotated by 90 degrees.
    right = m[:, :2] @ [192, 96] + m[:, 2]
    assert right == pytest.approx([300, 275])


def test_passive_verdict_needs_enough_frames_and_a_high_mean():
    assert not passive_verdict([0.99], 0.8, 3).live
    assert passive_verdict([0.1, 0.95, 0.9, 0.99], 0.8, 3).live
    result = passive_verdict([0.9, 0.1, 0.2], 0.8, 3)
    assert not result.live and result.score == pytest.approx(0.4)


# --- the blink state machine ----------------------------------------------------


def feed(detector: BlinkDetector, ears: list[float], start: float = 100.0) -> int:
    """Feed EARs at 30 fps; how many samples reported a blink."""
    return sum(detector.feed(e, start + i / FPS) for i, e in enumerate(ears))


OPEN, SHUT = 0.30, 0.10


def test_a_blink_is_open_closed_open():
    d = BlinkDetector(threshold=0.21, window_seconds=4.0)
    assert feed(d, [OPEN] * 10 + [SHUT] * 4 + [OPEN] * 10) == 1
    assert d.blinked and d.blinks == 1 and d.result().live


def test_two_blinks_count_twice():
    d = BlinkDetector(0.21, 4.0)
    assert feed(d, ([OPEN] * 10 + [SHUT] * 3) * 2 + [OPEN]) == 2


@pytest.mark.parametrize("ear", [OPEN, SHUT, 0.21])
def test_a_constant_ear_never_blinks(ear):
    d = BlinkDetector(0.21, 4.0)
    assert feed(d, [ear] * 600) == 0
    assert not d.result().live


def test_eyes_closed_from_the_start_then_open_is_not_a_blink():
    d = BlinkDetector(0.21, 4.0)
    assert feed(d, [SHUT] * 10 + [OPEN] * 10) == 0


def test_eyes_shut_longer_than_the_window_is_not_a_blink():
    d = BlinkDetector(0.21, 4.0)
    assert feed(d, [OPEN] * 5 + [SHUT] * int(5 * FPS) + [OPEN] * 5) == 0
    # The same closure inside the window counts.
    d = BlinkDetector(0.21, 6.0)
    assert feed(d, [OPEN] * 5 + [SHUT] * int(5 * FPS) + [OPEN] * 5) == 1


def test_a_blink_is_reported_once_when_the_eye_reopens():
    d = BlinkDetector(0.21, 4.0)
    t = 0.0
    assert not d.feed(OPEN, t)
    assert not d.feed(SHUT, t + 0.1)
    assert d.feed(OPEN, t + 0.2)
    assert not d.feed(OPEN, t + 0.3)


# --- real models on real photos -------------------------------------------------


def bgr(name: str) -> np.ndarray:
    image = cv2.imread(str(SPOOF / name))
    assert image is not None, f"missing test photo {SPOOF / name}"
    return image


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_interpreter(MIRROR / "face_detection_short_range.tflite"))


@pytest.fixture(scope="module")
def passive() -> PassiveLiveness:
    if not PASSIVE_MODEL.is_file():
        msg = f"{PASSIVE_MODEL} missing: provisioning converts it (scripts/convert_minifasnet.py)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return PassiveLiveness(load_interpreter(PASSIVE_MODEL))


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh(load_interpreter(MIRROR / "face_landmark.tflite"))


def face(detector: Detector, image_bgr: np.ndarray) -> Detection:
    faces = detector.detect(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    assert len(faces) == 1
    return faces[0]


def test_the_converted_model_takes_pytorch_layout(passive: PassiveLiveness):
    assert passive.size == (80, 80)
    it = passive._it
    assert tuple(it.get_input_details()[0]["shape"]) == (1, 3, 80, 80)
    assert int(np.prod(it.get_output_details()[0]["shape"])) == 3


@pytest.mark.parametrize(
    ("photo", "live"),
    [("image_F1.jpg", False), ("image_F2.jpg", False), ("image_T1.jpg", True)],
)
def test_passive_liveness_rejects_print_and_screen_and_accepts_a_live_face(
    detector: Detector, passive: PassiveLiveness, photo: str, live: bool
):
    image = bgr(photo)
    score = passive.score(image, face(detector, image).box)
    if live:
        assert score > 0.9
    else:
        assert score < 0.05


def test_passive_crop_is_80x80_bgr_of_the_face_region(detector, passive):
    image = bgr("image_T1.jpg")
    crop = passive.crop(image, face(detector, image).box)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8


def test_facemesh_puts_landmarks_on_the_face_with_open_eyes(detector, mesh):
    image = bgr("image_T1.jpg")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    det = face(detector, image)
    result = mesh.run(rgb, det)
    assert result.landmarks.shape == (468, 3)
    assert result.presence > 0.9
    x1, y1, x2, y2 = det.box
    pad = 0.15 * (x2 - x1)  # FaceMesh's forehead and chin reach past BlazeFace's box
    xy = result.landmarks[:, :2]
    assert np.all((xy[:, 0] > x1 - pad) & (xy[:, 0] < x2 + pad))
    assert np.all((xy[:, 1] > y1 - pad) & (xy[:, 1] < y2 + pad))
    # The eye contours sit next to BlazeFace's eye keypoints.
    for indices, kp in ((LEFT_EYE, det.keypoints[0]), (RIGHT_EYE, det.keypoints[1])):
        centre = xy[list(indices)].mean(0)
        assert np.linalg.norm(centre - kp) < 0.1 * (x2 - x1)
    assert 0.2 < result.ear < 0.4
    assert np.array_equal(mesh.landmarks(rgb, det), result.landmarks)


def test_facemesh_follows_a_tilted_head(detector, mesh):
    """Landmarks on a rotated photo are the upright ones, rotated: the crop levels the eyes."""
    image = bgr("image_T1.jpg")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    upright = mesh.landmarks(rgb, face(detector, image))
    h, w = rgb.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    tilted_rgb = cv2.warpAffine(rgb, turn, (w, h))
    tilted_bgr = cv2.cvtColor(tilted_rgb, cv2.COLOR_RGB2BGR)
    tilted = mesh.run(tilted_rgb, face(detector, tilted_bgr))
    expected = upright[:, :2] @ turn[:, :2].T + turn[:, 2]
    error = np.linalg.norm(tilted.landmarks[:, :2] - expected, axis=1)
    assert tilted.presence > 0.9
    assert np.median(error) < 3.0  # pixels, on a ~200 px face
    assert abs(tilted.ear - mean_eye_aspect_ratio(upright)) < 0.05


@pytest.mark.parametrize("photo", ["image_T1.jpg", "image_F1.jpg", "image_F2.jpg"])
def test_a_still_photo_never_blinks(detector, mesh, photo):
    image = bgr(photo)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    blink = BlinkDetector(threshold=0.21, window_seconds=4.0)
    for i in range(60):  # two seconds of camera frames of the same picture
        det = face(detector, image)
        assert not blink.feed(mesh.run(rgb, det).ear, 100.0 + i / FPS)
    assert not blink.result().live
