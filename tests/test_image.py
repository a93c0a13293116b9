"""Safe decoding: every bad file is one clear ImageError, never a traceback or a memory blow-up."""

from __future__ import annotations

import resource
import struct
import zlib
from pathlib import Path

import pytest

from edge.errors import ImageError
from edge.image import decode, header_size, read_image

from .conftest import FACES


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (wrong) body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def test_reads_real_photos_and_hashes_them():
    img = read_image(FACES / "people/barack_obama/obama.jpg")
    assert img.bgr.shape == (1137, 910, 3) and len(img.sha256) == 64


def test_32bit_png_alpha_is_dropped():
    img = read_image(FACES / "odd/32bit.png")
    assert img.bgr.ndim == 3 and img.bgr.shape[2] == 3


@pytest.mark.parametrize("name", ["obama.jpg", "alex2.png"])
def test_header_size_matches_decoded_size(name):
    path = next(FACES.glob(f"people/*/{name}"))
    data = path.read_bytes()
    _, w, h = header_size(data)
    img = read_image(path)
    assert (h, w) == img.bgr.shape[:2]


def test_huge_png_is_refused_from_its_header_without_allocating(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(png_header_only(20000, 20000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        ImageError, match=r"huge.png: image too large to decode safely \(20000x20000"
    ):
        read_image(p)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 50


def test_missing_empty_folder_and_non_image(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: empty file"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    with pytest.raises(ImageError, match=r"notes.jpg: not an image"):
        read_image(tmp_path / "notes.jpg")


@pytest.mark.parametrize(
    "src", ["people/barack_obama/obama.jpg", "people/alex_lacamoire/alex2.png"]
)
def test_truncated_files_are_refused(tmp_path, src):
    data = (FACES / src).read_bytes()
    p = tmp_path / Path(src).name
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated (JPEG|PNG) file|cannot decode"):
        read_image(p)


def test_garbage_after_a_valid_header_is_refused():
    data = (FACES / "people/barack_obama/obama.jpg").read_bytes()
    garbled = data[:600] + bytes(range(256)) * 40 + b"\xff\xda" + b"\x00" * 100 + b"\xff\xd9"
    with pytest.raises(ImageError):
        decode(garbled, name="garbled.jpg")


def test_too_many_bytes_is_refused(tmp_path):
    p = tmp_path / "big.jpg"
    p.write_bytes(b"\xff\xd8\xff" + b"\x00" * 5000)
    with pytest.raises(ImageError, match="big.jpg: file too large"):
        read_image(p, max_bytes=1000)


def test_pgm_badge_crops_decode_and_a_truncated_one_is_refused():
    # The AT&T face set (tight badge-like crops) ships as binary PGM.
    data = (FACES.parent / "eval" / "faces" / "att_s01" / "1.pgm").read_bytes()
    assert decode(data, name="att.pgm").shape == (112, 92, 3)
    assert decode(b"P5 # comment\n2 2\n255\n" + bytes(4), name="x").shape == (2, 2, 3)
    with pytest.raises(ImageError, match="att.pgm: truncated PNM file"):
        decode(data[:-1], name="att.pgm")
    with pytest.raises(ImageError, match="x.pgm: corrupt PGM/PPM header"):
        decode(b"P5\n92", name="x.pgm")
