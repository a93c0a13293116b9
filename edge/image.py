"""Safe image decoding: check the file, read its header, only then decode.

A hostile or broken file must give a clear :class:`ImageError`, never a
traceback and never gigabytes of memory: the pixel count is read from the
header and refused before any decoder allocates the image.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import png
from .errors import ImageError

MAX_PIXELS = 40_000_000
MAX_BYTES = 50_000_000


@dataclass(frozen=True)
class Image:
    """A decoded photo: BGR pixels, where it came from and the sha256 of its bytes."""

    bgr: np.ndarray
    path: str
    sha256: str


def header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the first bytes of a PNG, JPEG, BMP, GIF, WebP or PGM/PPM.

    Raises :class:`ImageError` for anything else or a header that makes no sense.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG header")
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data[:3] == b"\xff\xd8\xff":
        return ("jpeg", *_jpeg_size(data))
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "bmp", abs(w), abs(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return "gif", w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return ("webp", *_webp_size(data))
    if data[:1] == b"P" and data[1:2] in (b"2", b"3", b"5", b"6"):
        return ("pnm", *_pnm_size(data))
    raise ImageError("not an image (unknown format)")


def _pnm_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, maxval, where the pixels start) of a PGM/PPM: "P5 92 112 255\\n"."""
    fields: list[int] = []
    i, n = 2, min(len(data), 1024)
    while len(fields) < 3 and i < n:
        c = data[i : i + 1]
        if c == b"#":  # a comment runs to the end of its line
            while i < n and data[i : i + 1] != b"\n":
                i += 1
        elif c.isdigit():
            j = i
            while j < n and data[j : j + 1].isdigit():
                j += 1
            fields.append(int(data[i:j]))
            i = j
            continue
        elif not c.isspace():
            break
        i += 1
    if len(fields) < 3:
        raise ImageError("corrupt PGM/PPM header")
    return fields[0], fields[1], fields[2], i + 1  # one whitespace byte ends the header


def _pnm_size(data: bytes) -> tuple[int, int]:
    w, h, _, _ = _pnm_header(data)
    return w, h


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            raise ImageError("corrupt JPEG header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise ImageError("truncated JPEG header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    raise ImageError("corrupt WebP header")


def _complete(fmt: str, data: bytes) -> bool:
    """Whether the file ends where its format says it should (catches truncation)."""
    if fmt == "jpeg":
        # Markers cannot occur inside entropy-coded data (0xFF is stuffed), so
        # the last end-of-image marker must come after the last start-of-scan.
        return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") > 0
    if fmt == "png":
        return _png_chunks_fit(data)
    if fmt == "pnm" and data[1:2] in (b"5", b"6"):  # binary: the pixels follow the header
        w, h, maxval, start = _pnm_header(data)
        channels = 1 if data[1:2] == b"5" else 3
        return len(data) - start >= w * h * channels * (1 if maxval < 256 else 2)
    return True


def _png_chunks_fit(data: bytes) -> bool:
    """Whether every PNG chunk up to IEND lies within ``data``.

    OpenCV 5 allocates each chunk's declared length before reading it, so
    one flipped length byte in an 8 KB file made it allocate gigabytes.
    """
    i = 8
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        if length > len(data) - i - 12:
            return False
        if data[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + length
    return False


def decode(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode image bytes to BGR uint8 (alpha dropped, greyscale expanded).

    Raises :class:`ImageError` naming ``name`` and the reason.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        fmt, w, h = header_size(data)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    except struct.error:
        raise ImageError(f"{name}: corrupt image header") from None
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{name}: image too large to decode safely ({w}x{h} pixels)")
    if not _complete(fmt, data):
        raise ImageError(f"{name}: truncated {fmt.upper()} file")
    if fmt == "png":  # checked and stripped to what OpenCV uses: libpng stays silent
        try:
            data = png.clean(data)
        except ImageError as e:
            raise ImageError(f"{name}: {e}") from None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. a BMP 2.5 million pixels wide and 1 high: OpenCV asserts
        bgr = None
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{name}: cannot decode {fmt.upper()} data")
    return bgr


def read_image(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES
) -> Image:
    """Read and decode an image file safely; see :func:`decode`.

    Only regular files are read, and never more than ``max_bytes``: a FIFO
    would block forever and ``/dev/zero`` would fill the memory.
    """
    p = Path(path)
    try:
        data = _read_file(p, max_bytes)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    except ValueError:  # a NUL in the path
        raise ImageError(f"{str(p)!r}: not a usable file name") from None
    return Image(decode(data, max_pixels, str(p)), str(p), hashlib.sha256(data).hexdigest())


def _read_file(p: Path, max_bytes: int) -> bytes:
    """The bytes of regular file ``p``, at most ``max_bytes`` (else ImageError)."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang the open
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{p}: is a folder, not an image")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{p}: not a regular file")
        if st.st_size > max_bytes:
            raise ImageError(f"{p}: file too large ({st.st_size} bytes)")
        data = bytearray()
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - len(data))):
            data += chunk
            if len(data) > max_bytes:  # it grew while we read
                raise ImageError(f"{p}: file too large (over {max_bytes} bytes)")
        return bytes(data)
    finally:
        os.close(fd)
