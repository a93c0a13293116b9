"""Hostile input, fuzzed with hypothesis for a bounded time.

Mutated real photos (bit flips, truncation, splices, header fields set to huge
sizes, chunk lengths lied about), random bytes, special files, and fuzzed YAML
go through every door by which a file enters edge-access: image decoding,
``edge enroll`` and ``edge identify``, the folder camera source, and config
loading. The promise each keeps: a result or the package's own error, never
another exception, never a hang, never a memory blow-up.

Examples are few enough for CI (the file runs in well under a minute); set
``EDGE_FUZZ=50`` to run fifty times as many. Nothing is stored between runs
(``database=None``): each run explores afresh. Hypothesis's own caches go to
the temporary folder, not into the repository. Found bugs are kept below as
plain regression tests.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from edge.camera import FolderSource
from edge.cli import main
from edge.config import Config, load_config
from edge.errors import ConfigError, ImageError
from edge.gallery import Gallery
from edge.image import MAX_PIXELS, decode, read_image

from .conftest import FACES, MODELS, PEOPLE, ROOT

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "edge-access-hypothesis")

SCALE = float(os.environ.get("EDGE_FUZZ", "1"))
#: The pixel limit the in-process fuzzing decodes under. Within the default
#: (40 M pixels) one image legitimately costs up to ~500 MB (a GIF canvas),
#: which would hide a leak; at 4 M any growth past a few tens of MB is a bug.
LIMIT = 4_000_000


#: Bounds on wall time here only catch a hang or a decompression bomb, never a
#: slow machine: a loaded CI host or an emulated Pi gets this much slack.
SLACK = float(os.environ.get("EDGE_TIME_SLACK", "10"))


def fuzz(examples: int, deadline_s: float | None = None) -> settings:
    """Bounded hypothesis settings: ``examples`` (times $EDGE_FUZZ), a per-example deadline."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,  # timing is not what these prove (a loaded machine, a slow Pi)
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def allowance_mb(examples: int) -> float:
    """What hypothesis itself keeps per example (measured: ~14 KB), so long runs stay fair."""
    return 0.02 * examples * SCALE


# --------------------------------------------------------------- seeds and mutations


def _seeds() -> list[bytes]:
    """Real photos, small, in every format the decoder accepts."""
    photo = cv2.imread(str(PEOPLE / "barack_obama/obama_small.jpg"))
    crop = photo[40:136, 100:196]  # a 96x96 face
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA)
    encoded = [
        (".jpg", crop, []),
        (".jpg", crop, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".png", crop, []),
        (".png", grey, []),
        (".png", rgba, []),
        (".png", crop.astype(np.uint16) * 257, []),  # 16 bits a channel
        (".bmp", crop, []),
        (".webp", crop, []),
        (".webp", crop, [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
        (".gif", crop, []),
    ]
    out = [(PEOPLE / "barack_obama/obama_small.jpg").read_bytes()]
    for ext, img, params in encoded:
        if not cv2.haveImageWriter(ext):  # GIF: OpenCV >= 4.12 (the Pi's numpy<2 path has 4.11)
            continue
        ok, buf = cv2.imencode(ext, img, params)
        assert ok, ext
        out.append(buf.tobytes())
    return out


SEEDS = _seeds()
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8X"]
#: Sizes a header may claim: none, tiny, at the limit, past it, absurd.
SIZES = st.sampled_from([0, 1, 2, 255, 2000, 4096, 6324, 6325, 16383, 65535, 2**24 - 1,
                         2**31 - 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)


def set_size(data: bytearray, w: int, h: int) -> None:
    """Write ``w``x``h`` into the header field the format keeps its size in."""
    if data[:8] == MAGICS[0] and len(data) >= 24:
        data[16:24] = struct.pack(">II", w, h)
    elif data[:3] == MAGICS[1]:
        for sof in (b"\xff\xc0", b"\xff\xc2"):
            i = data.find(sof)
            if i > 0 and i + 9 <= len(data):
                data[i + 5 : i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
                break
    elif data[:2] == b"BM" and len(data) >= 26:
        data[18:26] = struct.pack("<II", w, h)
    elif data[:3] == b"GIF" and len(data) >= 10:
        data[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    elif data[:4] == b"RIFF" and len(data) >= 30:
        if data[12:16] == b"VP8X":
            data[24:30] = ((w - 1) % 2**24).to_bytes(3, "little") + (
                (h - 1) % 2**24).to_bytes(3, "little")
        elif data[12:16] == b"VP8L":
            bits = ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)
            data[21:25] = bits.to_bytes(4, "little")
        else:
            data[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)


def length_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every PNG chunk length / JPEG segment length in ``data``."""
    out = []
    if data[:8] == MAGICS[0]:
        i = 8
        while i + 8 <= len(data):
            out.append((i, 4))
            i += 12 + struct.unpack(">I", data[i : i + 4])[0]
    elif data[:3] == MAGICS[1]:
        i = 2
        while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:
            out.append((i + 2, 2))
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return out


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """A mutated real photo, or random bytes behind a real magic number, or just noise."""
    kind = draw(st.sampled_from(["mutate"] * 8 + ["magic", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=4096))
    if kind == "magic":
        return draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "header", "truncate", "splice", "overwrite", "cut",
                                   "size", "size", "length", "length"]))
        n = len(data)
        if op == "flip" and n:
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "header" and n:
            data[draw(st.integers(0, min(n, 64) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[: draw(st.integers(0, n))]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            a = draw(st.integers(0, len(other)))
            at = draw(st.integers(0, n))
            data[at:at] = other[a : a + draw(st.integers(1, 600))]
        elif op == "overwrite":
            at = draw(st.integers(0, n))
            data[at : at + 8] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut" and n:
            a = draw(st.integers(0, n - 1))
            del data[a : a + draw(st.integers(1, 600))]
        elif op == "size":
            set_size(data, draw(SIZES), draw(SIZES))
        elif op == "length" and (fields := length_fields(bytes(data))):
            at, width = draw(st.sampled_from(fields))
            old, top = int.from_bytes(data[at : at + width], "big"), 2 ** (width * 8 - 1)
            flipped = [old ^ (1 << bit) for bit in range(width * 8)]
            new = draw(st.sampled_from(flipped) | st.integers(min(old, top), top)
                       | st.integers(0, 256**width - 1))
            data[at : at + width] = new.to_bytes(width, "big")
    return bytes(data)


def image_or_refused(read: Callable[[], np.ndarray], limit: int = MAX_PIXELS) -> np.ndarray | None:
    """What ``read`` returns, which must be a BGR uint8 image, or None if it refused."""
    try:
        out = read()
    except ImageError:
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8, type(out)
    assert out.ndim == 3 and out.shape[2] == 3 and out.size > 0, out.shape
    assert out.shape[0] * out.shape[1] <= limit
    return out


# --------------------------------------------------------------- (a) image decoding


def test_every_seed_decodes():
    for data in SEEDS:
        assert image_or_refused(lambda d=data: decode(d)) is not None


def test_decode_gives_an_image_or_image_error_for_hostile_bytes():
    before = maxrss_mb()

    @fuzz(1200)
    @given(hostile_bytes())
    def run(data: bytes) -> None:
        image_or_refused(lambda: decode(data, LIMIT), LIMIT)

    run()
    # Sizes past the limit are refused before decoding, lengths past the end of
    # the file too: the worst one example may cost is an image within LIMIT.
    assert maxrss_mb() - before < 150 + allowance_mb(1200)


def test_read_image_gives_an_image_or_image_error_for_hostile_files():
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "photo.jpg"

        @fuzz(200)
        @given(hostile_bytes())
        def run(data: bytes) -> None:
            path.write_bytes(data)
            img = image_or_refused(lambda: read_image(path, LIMIT, 1_000_000).bgr, LIMIT)
            assert img is None or len(data) <= 1_000_000

        run()


def special_files(folder: Path) -> list[Path]:
    """Files that are not photos at all: devices, a FIFO, loops, folders, a sparse giant."""
    folder.mkdir(exist_ok=True)
    made = []

    def link(name: str, target: str) -> None:
        (folder / name).symlink_to(target)
        made.append(folder / name)

    link("zero.jpg", "/dev/zero")  # endless: was read until memory ran out
    link("random.png", "/dev/urandom")
    link("null.jpg", "/dev/null")
    link("dangling.jpg", str(folder / "nothing-here"))
    link("loop.jpg", str(folder / "loop.jpg"))
    os.mkfifo(folder / "fifo.jpg")  # no writer: opening it used to block forever
    (folder / "folder.jpg").mkdir()
    with open(folder / "sparse.jpg", "wb") as f:
        f.truncate(60_000_000)  # bigger than max_image_bytes, costs no disk
    (folder / "empty.png").write_bytes(b"")
    made += [folder / n for n in ("fifo.jpg", "folder.jpg", "sparse.jpg", "empty.png")]
    return made


def test_read_image_refuses_special_files_quickly(tmp_path):
    before = maxrss_mb()
    for path in [*special_files(tmp_path / "special"), Path("nul\0byte.jpg")]:
        t0 = time.monotonic()
        with pytest.raises(ImageError):
            read_image(path)
        assert time.monotonic() - t0 < 1.0 * SLACK, path
    assert maxrss_mb() - before < 100


BOMBS = """
import resource, struct, sys, zlib
import numpy as np
from edge.errors import ImageError
from edge.image import decode

def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

def png(w, h, idat, depth=8, colour=2):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")

zeros = zlib.compress(b"\\0" * 50_000_000, 9)  # ~50 KB that inflate to 50 MB
bombs = {
    "png 100000x100000": png(100_000, 100_000, chunk(b"IDAT", zeros)),
    "png chunk length 2 GB": png(64, 64, struct.pack(">I", 0x95001EC9) + b"IDAT" + zeros[:64]),
    "png iccp 50 MB": png(64, 64, chunk(b"iCCP", b"x\\0\\0" + zeros) + chunk(b"IDAT", zeros[:64])),
    "jpeg 65535x65535": b"\\xff\\xd8\\xff\\xc0\\x00\\x11\\x08\\xff\\xff\\xff\\xff\\x03" + bytes(200)
        + b"\\xff\\xda" + bytes(20) + b"\\xff\\xd9",
    "bmp 2^31 wide": b"BM" + bytes(16) + struct.pack("<ii", 2**31 - 1, 2**31 - 1) + bytes(100),
    "gif 65535x65535": b"GIF89a" + struct.pack("<HH", 65535, 65535) + bytes(100),
    "webp 16384x16384": b"RIFF\\0\\0\\0\\0WEBPVP8X" + bytes(8) + b"\\xff\\x3f\\x00\\xff\\x3f\\x00"
        + bytes(100),
}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name, data in bombs.items():
    try:
        out = decode(data)
        print(name, "decoded", out.shape)
    except ImageError as e:
        print(name, "refused:", e)
print("growth_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_decompression_bombs_cost_no_memory():
    """In a fresh process, so the peak memory measured is the bombs' alone."""
    out = subprocess.run([sys.executable, "-c", BOMBS], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    growth = float(lines[-1].split()[1])
    for line in lines[:-1]:
        assert "refused:" in line or line.startswith("png iccp"), line
    assert "png 100000x100000 refused: image: image too large" in out.stdout
    assert growth < 100, out.stdout


def test_regression_a_flipped_png_chunk_length_is_refused_at_once():
    """Found by the fuzzer: OpenCV 5 allocated the declared length (3.4 GB from 8 KB, 6 s)."""
    data = bytearray(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    (at, _), *_ = [f for f in length_fields(bytes(data)) if data[f[0] + 4 : f[0] + 8] == b"IDAT"]
    data[at] = 0x95
    t0, before = time.monotonic(), maxrss_mb()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode(bytes(data))
    assert time.monotonic() - t0 < 0.5 * SLACK and maxrss_mb() - before < 50


# --------------------------------------------------------------- (b) edge enroll / identify


@pytest.fixture(scope="module")
def cli_site(tmp_path_factory):
    """A site with her enrolled, and the environment that points ``edge`` at it."""
    site = tmp_path_factory.mktemp("cli-site")
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {MODELS} ")
    text = text.replace("  db: data/gallery.db", f"  db: {site / 'gallery.db'}")
    (site / "config.yaml").write_text(text)
    env = {"EDGE_CONFIG": str(site / "config.yaml"), "EDGE_DB": str(site / "gallery.db")}
    result = CliRunner().invoke(main, ["enroll", "her", str(FACES / "spoof/image_T1.jpg")],
                                env=env)
    assert result.exit_code == 0, result.output
    return site, env


def gallery_state(db: Path) -> tuple:
    with Gallery(db) as g:
        return g.generation(), [(p.name, p.templates, p.active) for p in g.people()]


def clean_exit(result) -> None:
    """Exit 0, 1 or 2 through the CLI's own handling: no exception escaped, no traceback."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in result.output


def test_enroll_and_identify_on_hostile_files(cli_site):
    site, env = cli_site
    db = site / "gallery.db"
    runner = CliRunner()
    folder = Path(tempfile.mkdtemp(dir=site))
    count = iter(range(10**6))

    @fuzz(80)
    @given(st.lists(hostile_bytes(), min_size=1, max_size=3), st.booleans())
    def run(files: list[bytes], with_good: bool) -> None:
        paths = []
        for data in files:
            paths.append(folder / f"{next(count)}.jpg")
            paths[-1].write_bytes(data)
        if with_good:  # all or nothing: one good photo must not sneak the rest in
            paths.append(FACES / "spoof/image_T1.jpg")
        before = gallery_state(db)
        result = runner.invoke(main, ["enroll", "fuzz", *map(str, paths)], env=env)
        clean_exit(result)
        if result.exit_code != 0:
            assert gallery_state(db) == before, result.output
        else:  # every file still held a usable face: undo, for the next example
            with Gallery(db) as g:
                assert g.person("fuzz").templates >= 1
                g.remove("fuzz")
        clean_exit(runner.invoke(main, ["identify", str(paths[0])], env=env))
        clean_exit(runner.invoke(main, ["identify", "--json", str(paths[0])], env=env))

    run()


def test_enroll_and_identify_refuse_special_files(cli_site, tmp_path):
    site, env = cli_site
    db = site / "gallery.db"
    runner = CliRunner()
    before = gallery_state(db)
    for path in special_files(tmp_path / "special"):
        t0 = time.monotonic()
        for args in (["enroll", "fuzz", str(path)], ["identify", str(path)]):
            result = runner.invoke(main, args, env=env)
            clean_exit(result)
            assert result.exit_code in (1, 2), (args, result.output)
        assert time.monotonic() - t0 < 5 * SLACK, path
    assert gallery_state(db) == before


# --------------------------------------------------------------- (c) the folder camera source


def test_folder_source_skips_bad_files_and_never_raises(tmp_path):
    special_files(tmp_path / "special")
    shutil.copyfile(FACES / "spoof/image_T1.jpg", tmp_path / "special" / "real.jpg")
    with FolderSource(tmp_path / "special") as src:
        frames = list(iter(src.read, None))
    assert len(frames) == 1 and frames[0].image.shape == (640, 480, 3)

    folder = tmp_path / "fuzzed"
    suffixes = st.sampled_from([".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".JPG"])

    @fuzz(80)
    @given(st.lists(st.tuples(suffixes, hostile_bytes()), min_size=1, max_size=6))
    def run(files: list[tuple[str, bytes]]) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for i, (suffix, data) in enumerate(files):
            (folder / f"{i:03d}{suffix}").write_bytes(data)
        src = FolderSource(folder, fps=30.0)
        with src:
            frames = list(iter(src.read, None))
        assert len(frames) <= len(files)
        assert [f.index for f in frames] == list(range(len(frames)))
        for f in frames:
            image_or_refused(lambda f=f: f.image)

    run()


# --------------------------------------------------------------- (d) config loading


REAL_CONFIG = (ROOT / "config.yaml").read_text()
SECTIONS = {name: sorted(type(getattr(Config(), name)).model_fields) for name in
            Config.model_fields if name != "base_dir"}


def config_or_config_error(text: str | bytes, path: Path) -> Config | None:
    """load_config on ``text``: a Config, or None for a ConfigError; quick either way."""
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    t0 = time.monotonic()
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 600, str(e)[:1000]
        cfg = None
    else:
        assert isinstance(cfg, Config)
    assert time.monotonic() - t0 < 3.0 * SLACK
    return cfg


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["nan", "inf", "-1", "0", "1e308", "/dev/zero", "~", ""]))


def containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


structures = st.recursive(scalars, containers, max_leaves=20)


@st.composite
def config_shaped(draw: st.DrawFn) -> dict:
    """Real section and key names (and some made up) with values of any type."""
    out: dict = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=4)):
        keys = SECTIONS.get(section, ["x"])
        out[section] = draw(st.dictionaries(st.sampled_from([*keys, "nope"]), structures,
                                            max_size=4))
    return out


@st.composite
def mutated_config(draw: st.DrawFn) -> bytes:
    """The shipped config.yaml with lines and characters changed."""
    lines = REAL_CONFIG.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "insert", "chars"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = " " * draw(st.integers(0, 9)) + lines[i].lstrip(" ")
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=40)) + "\n")
        else:
            at = draw(st.integers(0, len(lines[i])))
            junk = draw(st.text(alphabet=":-[]{}&*!|>'\"#%@`,?\t\\ 0123456789abc\x00\x85\ufeff",
                                max_size=6))
            lines[i] = lines[i][:at] + junk + lines[i][at:]
        if not lines:
            lines = ["\n"]
    data = bytearray("".join(lines).encode("utf-8", "surrogatepass"))
    if draw(st.booleans()):  # and a few raw bytes flipped (not always UTF-8 any more)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def test_config_fuzz_gives_a_config_or_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    before = maxrss_mb()

    @fuzz(250, deadline_s=3.0)
    @given(structures | config_shaped())
    def structured(data: object) -> None:
        config_or_config_error(yaml.safe_dump(data, allow_unicode=True), path)

    @fuzz(250, deadline_s=3.0)
    @given(mutated_config() | st.binary(max_size=2000) | st.text(max_size=500))
    def textual(data: bytes | str) -> None:
        config_or_config_error(data, path)

    structured()
    textual()
    assert maxrss_mb() - before < 200 + allowance_mb(500)


def laughs(levels: int, width: int = 10) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\ncamera:\n  source: *l{levels - 1}\n"


def merges(levels: int) -> str:
    lines = ["m0: &m0 {a: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


NASTY = {
    "billion laughs": laughs(9),  # took 112 s and a 10^9-element message before
    "merge chain": merges(30),  # doubles per line: 2 s at 21 lines, hours at 30
    "deep lists": "models: " + "[" * 50_000 + "]" * 50_000,
    "deep maps": "".join(" " * i + f"k{i}:\n" for i in range(400)) + " " * 400 + "v\n",
    "deep flow maps": "a: " + "{a: " * 5000 + "1" + "}" * 5000,
    "long list value": "camera:\n  source: [" + ", ".join(["1"] * 20_000) + "]\n",
    "too big": "# " + "x" * 2_000_000 + "\n",
    "impossible date": "models:\n  dir: 2001-13-45\n",  # ValueError from PyYAML
    "huge int": "models:\n  threads: 1" + "0" * 5000 + "\n",  # ValueError: int digits limit
    "bad timestamp tag": "a: !!timestamp nope\n",  # AttributeError
    "bad bool tag": "voice:\n  enabled: !!bool maybe\n",  # KeyError
    "bad offset": "a: 2001-01-01 00:00:00 +99:00\n",  # ValueError
    "python tag": "a: !!python/object/apply:os.system ['true']\n",
    "nul": "models:\n  dir: \x00\n",
    "not utf-8": b"models:\n  dir: \xff\xfe\x80\n",
    "utf-16": "models:\n  threads: 2\n".encode("utf-16"),
    "top-level list": "- 1\n- 2\n",
    "non-string keys": "1: 2\n? [a]\n: b\n",
    "base_dir": "base_dir: /etc\n",
    "nan threshold": "match:\n  threshold: .nan\n",
}


@pytest.mark.parametrize("name", list(NASTY))
def test_nasty_configs_are_refused_quickly(name, tmp_path):
    before = maxrss_mb()
    assert config_or_config_error(NASTY[name], tmp_path / "config.yaml") is None
    assert maxrss_mb() - before < 100


def test_config_paths_that_are_not_files(tmp_path):
    for path in ["/dev/zero", "/dev/urandom", str(tmp_path), str(tmp_path / "none.yaml")]:
        t0 = time.monotonic()
        with pytest.raises(ConfigError):
            load_config(path)
        assert time.monotonic() - t0 < 2.0 * SLACK


def test_the_shipped_config_and_an_anchor_free_config_still_load(tmp_path):
    assert load_config(ROOT / "config.yaml").liveness.mode == "passive"
    text = textwrap.dedent("""
        decision:
          <<: {agree_matches: 4}
          window_frames: 12
    """)
    cfg = config_or_config_error(text, tmp_path / "config.yaml")
    assert cfg is not None and cfg.decision.agree_matches == 4
