"""PNG files checked and cleaned before OpenCV sees them, so libpng has nothing to say.

libpng reports a bad chunk by writing "libpng error: ..." or "libpng
warning: ..." straight to the process's stderr, below Python, where no
logging setting reaches it: an admin's terminal fills with lines that name
no file. Silencing it would mean redirecting file descriptor 2, which is
process-wide and would swallow the daemon's own log lines from other
threads. Instead :func:`clean` gives libpng nothing to complain about: it
checks every chunk's CRC, the header's fields and the compressed image
data (a streamed zlib pass, bounded memory, that also checks each row's
filter byte and that there is exactly as much data as the size says), and
keeps only the chunks OpenCV uses (IHDR, PLTE, IDAT, IEND). Colour profiles,
gamma, text and the like are dropped: OpenCV applies none of them to the
pixels, so the decoded image is the same. Anything wrong is an
:class:`ImageError` naming the fault.
"""

from __future__ import annotations

import struct
import zlib

from .errors import ImageError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bit depths allowed for each colour type (PNG spec, table 11.1) and samples per pixel.
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: The seven Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_STEP = 1 << 20  # decompressed bytes looked at per step


def clean(data: bytes) -> bytes:
    """``data`` (a whole PNG file) rebuilt from its checked IHDR, PLTE and IDAT chunks.

    Raises :class:`ImageError` (without a file name; the caller adds it).
    """
    chunks: list[tuple[bytes, bytes, bytes]] = []  # (type, body, whole chunk)
    i = len(SIGNATURE)
    while True:
        if i + 12 > len(data):
            raise ImageError("truncated PNG file")
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise ImageError("truncated PNG file")
        body = data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        critical = not kind[0] & 0x20
        if zlib.crc32(kind + body) != crc:
            if critical:
                raise ImageError(f"corrupt PNG file (CRC error in its {_name(kind)} chunk)")
        elif kind in _KEEP:
            chunks.append((kind, body, data[i:end]))
        elif critical:
            raise ImageError(f"unsupported PNG file (unknown {_name(kind)} chunk)")
        i = end
        if kind == b"IEND":
            break
    kinds = [k for k, _, _ in chunks]
    if not kinds or kinds[0] != b"IHDR" or kinds.count(b"IHDR") != 1 or kinds[-1] != b"IEND":
        raise ImageError("corrupt PNG file (chunks out of order)")
    width, height, depth, colour, interlace = _header(chunks[0][1])
    idat = [n for n, k in enumerate(kinds) if k == b"IDAT"]
    if not idat or idat != list(range(idat[0], idat[-1] + 1)):
        raise ImageError("corrupt PNG file (no image data, or it is split)")
    plte = [body for k, body, _ in chunks if k == b"PLTE"]
    if colour == 3 and not plte:
        raise ImageError("corrupt PNG file (a palette image without a palette)")
    if plte and (len(plte) > 1 or len(plte[0]) % 3 or not 3 <= len(plte[0]) <= 768
                 or kinds.index(b"PLTE") > idat[0]):
        raise ImageError("corrupt PNG file (bad palette)")
    _check_image_data(b"".join(chunks[n][1] for n in idat), width, height, depth, colour, interlace)
    return SIGNATURE + b"".join(whole for _, _, whole in chunks)


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)


def _header(body: bytes) -> tuple[int, int, int, int, int]:
    if len(body) != 13:
        raise ImageError("corrupt PNG header")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    if (
        colour not in _DEPTHS
        or depth not in _DEPTHS[colour]
        or compression != 0
        or filtering != 0
        or interlace not in (0, 1)
    ):
        raise ImageError("corrupt PNG header (unknown colour type, depth or method)")
    return width, height, depth, colour, interlace


def _rows(
    width: int, height: int, depth: int, colour: int, interlace: int
) -> list[tuple[int, int]]:
    """(rows, bytes per row including the filter byte) of each pass of the image data."""
    bits = depth * _SAMPLES[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        w = (width - x0 + dx - 1) // dx if width > x0 else 0
        h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if w and h:
            out.append((h, 1 + (w * bits + 7) // 8))
    return out


def _check_image_data(
    stream: bytes, width: int, height: int, depth: int, colour: int, interlace: int
) -> None:
    """Inflate the image data in steps, checking filter bytes and the exact length."""
    starts: list[int] = []  # offsets of each row's filter byte, pass after pass
    expected = 0
    for rows, size in _rows(width, height, depth, colour, interlace):
        starts.extend(range(expected, expected + rows * size, size))
        expected += rows * size
    z = zlib.decompressobj()
    got, row, pending = 0, 0, stream
    try:
        while True:
            out = z.decompress(pending, _STEP)
            pending = z.unconsumed_tail
            while row < len(starts) and starts[row] < got + len(out):
                if out[starts[row] - got] > 4:
                    raise ImageError("corrupt PNG image data (bad row filter)")
                row += 1
            got += len(out)
            if got > expected:
                raise ImageError("corrupt PNG image data (more than its size)")
            if z.eof or (not out and not pending):
                break
    except zlib.error:
        raise ImageError("corrupt PNG image data") from None
    if not z.eof or got != expected:
        raise ImageError("truncated PNG image data")
    if z.unused_data:
        raise ImageError("corrupt PNG file (data after the image data)")
