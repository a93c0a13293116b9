"""Camera sources and the frame grabber, on the real test clip and real photos."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.camera import (
    FolderSource,
    Frame,
    FrameGrabber,
    OpenCVSource,
    Picamera2Source,
    backoff_seconds,
    open_source,
)
from edge.config import CameraConfig
from edge.errors import CameraError
from edge.image import read_image

from .conftest import FACES

CLIP = FACES / "video" / "short_hamilton_clip.mp4"
CLIP_FRAMES = 275
CLIP_FPS = 29.97
PHOTOS = [
    FACES / "people" / "barack_obama" / "obama.jpg",
    FACES / "people" / "joe_biden" / "biden.jpg",
    FACES / "people" / "alex_lacamoire" / "alex2.png",
]



@pytest.fixture(autouse=True, scope="module")
def _media_present() -> None:
    """The clip and photos are ../shared's (or $EDGE_FACES'): missing is a failure, never a skip."""
    missing = [str(p) for p in (CLIP, *PHOTOS) if not p.is_file()]
    assert not missing, f"the shared test media are missing: {', '.join(missing)}"


def drain(grabber: FrameGrabber, timeout: float = 5.0) -> list[Frame]:
    frames = []
    while (frame := grabber.get(timeout)) is not None:
        frames.append(frame)
    return frames


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """b.jpg, a.png, c.jpg copied from the photos, plus x.jpg holding random bytes."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, src in zip(["b.jpg", "a.png", "c.jpg"], PHOTOS, strict=True):
        shutil.copy(src, folder / name)
    (folder / "x.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_video_file_gives_every_frame_with_media_timestamps() -> None:
    with OpenCVSource(str(CLIP), "file") as src:
        assert src.finite
        assert src.fps == pytest.approx(CLIP_FPS)
        frames = []
        while (frame := src.read()) is not None:
            frames.append((frame.index, frame.source_ts, frame.image.shape, frame.image.dtype))
            assert abs(frame.t_wall - time.time()) < 5
    assert len(frames) == CLIP_FRAMES
    assert [f[0] for f in frames] == list(range(CLIP_FRAMES))
    assert {f[2] for f in frames} == {(360, 640, 3)}
    assert {f[3] for f in frames} == {np.dtype(np.uint8)}
    ts = np.array([f[1] for f in frames])
    assert ts[0] == pytest.approx(0.0)
    assert np.diff(ts) == pytest.approx(1 / CLIP_FPS, abs=1e-3)


def test_folder_gives_images_in_name_order_and_skips_garbage(
    photo_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = [read_image(photo_dir / n).bgr for n in ("a.png", "b.jpg", "c.jpg")]
    with FolderSource(photo_dir, fps=10.0) as src:
        frames = []
        while (frame := src.read()) is not None:
            frames.append(frame)
    assert len(frames) == 3
    for frame, image in zip(frames, expected, strict=True):
        assert np.array_equal(frame.image, image)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.source_ts for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert "x.jpg" in caplog.text


def test_folder_skips_a_decompression_bomb_without_decoding_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    png = PHOTOS[2].read_bytes()
    assert png[12:16] == b"IHDR"
    # The same small file, its header claiming 100000 x 100000 pixels.
    (tmp_path / "a_bomb.png").write_bytes(png[:16] + (100_000).to_bytes(4, "big") * 2 + png[24:])
    shutil.copy(PHOTOS[0], tmp_path / "b.jpg")
    with FolderSource(tmp_path) as src:
        frame = src.read()
        assert frame is not None and frame.index == 0
        assert src.read() is None
    assert "a_bomb.png" in caplog.text and "too large" in caplog.text


def test_grabber_replay_delivers_every_frame_in_order_then_ends() -> None:
    grabber = FrameGrabber(OpenCVSource(str(CLIP), "file"), realtime=False)
    with grabber:
        frames = drain(grabber)
        assert grabber.ended
        assert grabber.get(0.01) is None
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert grabber.dropped == 0
    assert grabber.state == "ended"
    assert grabber.last_frame_mono == frames[-1].t_mono


def test_grabber_realtime_drops_stale_frames_for_a_slow_consumer() -> None:
    grabber = FrameGrabber(OpenCVSource(str(CLIP), "file"), realtime=True)
    indices: list[int] = []
    with grabber:
        for _ in range(5):
            frame = grabber.get(60.0)
            assert frame is not None
            indices.append(frame.index)
            time.sleep(0.4)  # a consumer far slower than 30 fps (or a slow CPU's decoding)
    assert all(b - a > 1 for a, b in itertools.pairwise(indices))
    # No queue: every frame read between two taken ones was dropped, not kept
    # (counted, not timed: a frame's age says more about the CPU than the grabber).
    assert grabber.dropped >= (indices[-1] - indices[0] + 1) - len(indices)
    assert not grabber.ended


def test_grabber_reopens_a_missing_file_with_backoff_until_it_appears(tmp_path: Path) -> None:
    target = tmp_path / "later.mp4"

    def appear() -> None:
        time.sleep(0.3)
        shutil.copy(CLIP, tmp_path / "partial.tmp")
        os.replace(tmp_path / "partial.tmp", target)

    grabber = FrameGrabber(
        open_source(str(target), CameraConfig()), realtime=False, reopen_max_seconds=0.4
    )
    writer = threading.Thread(target=appear)
    with grabber:
        writer.start()
        assert grabber.get(0.2) is None
        assert grabber.state == "reconnecting"
        frames = drain(grabber)
        writer.join()
    assert len(frames) == CLIP_FRAMES
    assert grabber.reopen_attempts >= 1
    assert grabber.ended


def test_grabber_waits_for_an_empty_folder_to_be_filled(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    grabber = FrameGrabber(FolderSource(folder), realtime=False, reopen_max_seconds=0.2)
    with grabber:
        time.sleep(0.3)
        assert grabber.state == "reconnecting"
        assert grabber.reopen_attempts >= 1
        shutil.copy(PHOTOS[0], folder / "tmp.part")
        os.replace(folder / "tmp.part", folder / "a.jpg")
        frame = grabber.get(2.0)
        assert frame is not None
        assert frame.image.shape[2] == 3
        assert grabber.get(2.0) is None
        assert grabber.ended
    grabber.close()  # a second close is harmless


def test_backoff_doubles_from_half_a_second_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_seconds(10_000, 30.0) == 30.0


@pytest.mark.parametrize(
    ("spec", "cls", "kind"),
    [
        ("0", OpenCVSource, "device"),
        ("/dev/video2", OpenCVSource, "device"),
        ("rtsp://user:secret@10.0.0.5:554/stream1", OpenCVSource, "url"),
        ("http://cam.local/video.mjpg", OpenCVSource, "url"),
        (str(CLIP), OpenCVSource, "file"),
        (str(FACES / "people" / "joe_biden"), FolderSource, None),
        ("picamera2", Picamera2Source, None),
        (
            "v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink",
            OpenCVSource,
            "pipeline",
        ),
    ],
)
def test_open_source_picks_by_spec(spec: str, cls: type, kind: str | None) -> None:
    src = open_source(spec, CameraConfig())
    assert type(src) is cls
    assert getattr(src, "kind", None) == kind
    assert src.finite == (kind == "file" or cls is FolderSource)
    assert "secret" not in src.name


def test_picamera2_missing_is_a_clear_camera_error() -> None:
    try:
        import picamera2  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        Picamera2Source().open()
