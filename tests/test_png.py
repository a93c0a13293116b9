"""PNG files are checked before OpenCV decodes them: libpng never writes to the terminal.

libpng reports bad chunks on the process's stderr (file descriptor 2), so the
checks run the decoder in a child process and read what it wrote there.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import png
from edge.errors import ImageError

from .conftest import FACES, PEOPLE


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode(rgb: np.ndarray, interlace: bool = False, palette: bool = False) -> bytes:
    """A PNG written by hand: 8-bit RGB (optionally Adam7-interlaced) or a palette image."""
    h, w = rgb.shape[:2]
    if palette:
        colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        pixels = index.reshape(h, w, 1).astype(np.uint8)
        extra = chunk(b"PLTE", colours.astype(np.uint8).tobytes())
    else:
        pixels, extra = rgb, b""
    passes = png._ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b"".join(
        b"\x00" + row.tobytes() for x0, y0, dx, dy in passes for row in pixels[y0::dy, x0::dx]
        if pixels[y0::dy, x0::dx].size
    )
    header = struct.pack(">IIBBBBB", w, h, 8, 3 if palette else 2, 0, 0, int(interlace))
    return (png.SIGNATURE + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("palette", [False, True])
def test_clean_keeps_every_pixel(interlace: bool, palette: bool):
    rgb = np.random.default_rng(1).integers(0, 4, (29, 43, 3), dtype=np.uint8) * 60
    data = encode(rgb, interlace, palette)
    assert np.array_equal(decoded(png.clean(data)), decoded(data))
    assert np.array_equal(decoded(data)[:, :, ::-1], rgb)


@pytest.mark.parametrize("photo", [FACES / "odd/32bit.png", PEOPLE / "alex_lacamoire/alex2.png",
                                   PEOPLE / "lin_manuel_miranda/lin1.png"])
def test_clean_keeps_real_photos_as_they_were(photo: Path):
    data = photo.read_bytes()
    assert np.array_equal(decoded(png.clean(data)), decoded(data))


def _spoiled(tmp_path: Path) -> dict[str, tuple[Path, str | None]]:
    """Broken PNGs libpng complains about: file, and the error we give (None: decodes)."""
    good = cv2.imencode(".png", np.full((32, 32, 3), 100, np.uint8))[1].tobytes()
    n = struct.unpack(">I", good[8:12])[0]
    ihdr, rest = good[8 : 8 + 12 + n], good[8 + 12 + n :]
    idat_at = rest.index(b"IDAT") - 4
    (idat_len,) = struct.unpack(">I", rest[idat_at : idat_at + 4])
    idat = rest[idat_at + 8 : idat_at + 8 + idat_len]
    tail = rest[idat_at + 12 + idat_len :]

    def with_idat(body: bytes, crc: int | None = None) -> bytes:
        return png.SIGNATURE + ihdr + chunk(b"IDAT", body, crc) + tail

    def with_extra(extra: bytes) -> bytes:
        return png.SIGNATURE + ihdr + extra + rest

    cases = {
        "idat_crc": (with_idat(idat, 0), "CRC error in its IDAT chunk"),
        "text_crc": (with_extra(chunk(b"tEXt", b"a\x00b", 5)), None),
        "iccp": (with_extra(chunk(b"iCCP", b"x\x00\x00" + zlib.compress(b"junk"))), None),
        "srgb": (with_extra(chunk(b"sRGB", b"\x09")), None),
        "garbage": (with_idat(b"\x78\x9c" + bytes(range(200))), "corrupt PNG image data"),
        "short": (with_idat(zlib.compress(b"\x00" * 50)), "truncated PNG image data"),
        "filter": (with_idat(zlib.compress(b"\x07" * (32 * 97))), "bad row filter"),
    }
    out = {}
    for name, (data, why) in cases.items():
        (tmp_path / f"{name}.png").write_bytes(data)
        out[name] = (tmp_path / f"{name}.png", why)
    return out


def test_broken_pngs_give_one_clear_error_and_no_libpng_lines(tmp_path: Path):
    cases = _spoiled(tmp_path)
    script = (
        "import sys\n"
        "from edge.errors import ImageError\n"
        "from edge.image import read_image\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        print(path, 'decoded', read_image(path).bgr.shape, flush=True)\n"
        "    except ImageError as e:\n"
        "        print(path, 'refused', e, flush=True)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, *(str(p) for p, _ in cases.values())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "libpng" not in r.stderr and r.stderr == ""
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    for path, why in cases.values():
        if why is None:
            assert lines[str(path)] == "decoded (32, 32, 3)"
        else:
            assert lines[str(path)].startswith(f"refused {path}: "), lines[str(path)]
            assert why in lines[str(path)]


def test_an_unknown_critical_chunk_is_refused():
    data = encode(np.zeros((4, 4, 3), np.uint8))
    spoiled = data[:33] + chunk(b"ABCD", b"") + data[33:]
    with pytest.raises(ImageError, match="unknown ABCD chunk"):
        png.clean(spoiled)
