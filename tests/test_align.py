"""Alignment and face-quality maths as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from edge.align import CROP_SIZE, TEMPLATE, align, sharpness, similarity_transform, yaw

# On the emulated Pi too (scripts/test-arm64.sh): the alignment arithmetic, on the Pi's NumPy.
pytestmark = pytest.mark.pi


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = TEMPLATE.astype(np.float64)
    dst = src @ r.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], r, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = TEMPLATE.astype(np.float64)
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_align_puts_keypoints_on_the_template():
    img = np.zeros((400, 400, 3), np.uint8)
    kps = np.zeros((6, 2), np.float32)
    kps[:4] = TEMPLATE * 2 + [100, 50]
    for x, y in kps[:4]:
        img[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crop = align(img, kps)
    assert crop.shape == (CROP_SIZE[1], CROP_SIZE[0], 3)
    for x, y in TEMPLATE:
        assert crop[int(round(y)), int(round(x))].max() > 100


def test_yaw_is_zero_for_a_frontal_face_and_grows_when_turned():
    frontal = np.array([[30, 50], [66, 50], [48, 70], [48, 92], [10, 55], [86, 55]], np.float32)
    assert yaw(frontal) == pytest.approx(0.0)
    turned = frontal.copy()
    turned[2, 0] += 18  # nose half an eye distance to the side
    assert yaw(turned) == pytest.approx(0.5)
    assert yaw(np.zeros((6, 2), np.float32)) == 1.0


def test_sharpness_drops_with_blur():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (112, 96, 3), dtype=np.uint8)
    import cv2

    assert sharpness(cv2.GaussianBlur(crop, (9, 9), 0)) < sharpness(crop) / 10
