"""Camera faults: garbage frames, a camera that disappears and returns, the watchdog meanwhile.

The faults are injected by test-double sources that wrap the real test clip
(:class:`FaultyCamera`, :class:`SwitchedCamera`); everything else is real: the
grabber thread, the models, a real daemon process talking to a real notify
socket. Run as ``python -m tests.test_faults_camera SITE SWITCH`` this module is
that daemon process, its camera behind the switch file ``SWITCH``.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.camera import Frame, FrameGrabber, LoopSource, OpenCVSource, Source, frame_problem
from edge.config import Config, load_config
from edge.daemon import Daemon, configure_logging
from edge.errors import CameraError
from edge.gallery import Gallery

from .conftest import FACES, PEOPLE, ROOT, wait_for
from .helpers import notify_lines, receive_until

CLIP = FACES / "video/short_hamilton_clip.mp4"
CLIP_FRAMES = 275


# -- test doubles: a real source with a fault injected ---------------------------------------

Garbage = Callable[[Frame], Frame]

GARBAGE: dict[str, Garbage] = {
    "no image": lambda f: replace(f, image=None),  # type: ignore[arg-type]
    "float pixels": lambda f: replace(f, image=f.image.astype(np.float32)),
    "grey plane": lambda f: replace(f, image=f.image[:, :, 0]),
    "zero size": lambda f: replace(f, image=f.image[:0]),
    "truncated rows": lambda f: replace(f, image=f.image[: f.image.shape[0] // 3]),
    "flat buffer": lambda f: replace(f, image=f.image.reshape(-1)[:1000]),
    "nan timestamp": lambda f: replace(f, source_ts=float("nan")),
}


class FaultyCamera(Source):
    """The frames of ``inner``, with the frame at each index in ``garbage`` spoiled."""

    def __init__(self, inner: Source, garbage: dict[int, Garbage]) -> None:
        self.inner, self.garbage = inner, garbage
        self.name, self.finite, self.fps = f"faulty:{inner.name}", inner.finite, inner.fps

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None or frame.index not in self.garbage:
            return frame
        return self.garbage[frame.index](frame)

    def close(self) -> None:
        self.inner.close()


class SwitchedCamera(Source):
    """``inner`` behind a switch file: "unplugged" fails open and read, "garbage" spoils
    frames, "hang" blocks inside ``read`` (a driver that never returns) until switched back."""

    def __init__(self, inner: Source, switch: Path) -> None:
        self.inner, self.switch = inner, switch
        self.name, self.finite, self.fps = f"switched:{inner.name}", inner.finite, inner.fps

    def mode(self) -> str:
        try:
            return self.switch.read_text().strip()
        except FileNotFoundError:
            return ""

    def open(self) -> None:
        if self.mode() == "unplugged":
            raise CameraError(f"{self.name}: no such device")
        self.inner.open()

    def read(self) -> Frame | None:
        while (mode := self.mode()) == "hang":
            time.sleep(0.05)
        if mode == "unplugged":
            raise CameraError(f"{self.name}: camera unplugged")
        frame = self.inner.read()
        if frame is not None and mode == "garbage":
            return replace(frame, image=frame.image[:0])
        return frame

    def close(self) -> None:
        self.inner.close()


def drain(grabber: FrameGrabber, timeout: float = 5.0) -> list[Frame]:
    frames = []
    while (frame := grabber.get(timeout)) is not None:
        frames.append(frame)
    return frames



def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# -- the grabber ------------------------------------------------------------------------------


def test_a_looped_clip_keeps_counting_frames_and_media_time() -> None:
    source = LoopSource(OpenCVSource(str(CLIP), "file"), loops=2)
    with FrameGrabber(source, realtime=False) as grabber:
        frames = drain(grabber)
        assert grabber.ended
    assert [f.index for f in frames] == list(range(2 * CLIP_FRAMES))
    ts = [f.source_ts or 0.0 for f in frames]
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert ts[-1] == pytest.approx((2 * CLIP_FRAMES - 1) / source.fps, abs=0.05)


def test_frame_problem_names_each_kind_of_garbage() -> None:
    with OpenCVSource(str(CLIP), "file") as src:
        good = src.read()
    assert good is not None and frame_problem(good, good.image.shape) is None
    for kind, spoil in GARBAGE.items():
        assert frame_problem(spoil(good), good.image.shape) is not None, kind
    assert frame_problem(None) is not None


def test_garbage_frames_are_dropped_with_one_log_line_per_run_of_them(caplog) -> None:
    kinds = list(GARBAGE.values())
    garbage = {10 + i: spoil for i, spoil in enumerate(kinds)} | {100: kinds[0]}
    source = FaultyCamera(OpenCVSource(str(CLIP), "file"), garbage)
    with caplog.at_level(logging.INFO, logger="edge.camera"), FrameGrabber(
        source, realtime=False
    ) as grabber:
        frames = drain(grabber)
        assert grabber.ended
    assert [f.index for f in frames] == [i for i in range(CLIP_FRAMES) if i not in garbage]
    assert grabber.bad_frames == len(garbage)
    assert grabber.reopen_attempts == 0  # dropped, not a reason to reopen
    assert len(messages(caplog, "dropping bad frames")) == 2
    assert len(messages(caplog, "good frames again")) == 2


def test_a_camera_that_disappears_is_reopened_with_backoff_and_logged_once(
    tmp_path: Path, caplog
) -> None:
    switch = tmp_path / "switch"
    source = SwitchedCamera(LoopSource(OpenCVSource(str(CLIP), "file")), switch)
    grabber = FrameGrabber(source, realtime=True, reopen_max_seconds=0.2,
                           reopen_first_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="edge.camera"), grabber:
        assert grabber.get(5.0) is not None
        switch.write_text("unplugged")
        assert wait_for(lambda: grabber.state == "reconnecting")
        time.sleep(0.8)  # several failed reopens: 0.05, 0.1, 0.2, 0.2 ...
        assert grabber.reopen_attempts >= 4
        assert grabber.get(0.1) is None
        switch.unlink()
        assert grabber.get(5.0) is not None
        assert grabber.state == "streaming"
        last = grabber.get(1.0)
        assert last is not None and last.source_ts is not None
    assert len(messages(caplog, "reopening with backoff")) == 1
    assert len(messages(caplog, ": streaming")) == 2  # at start, and once back


def test_only_garbage_for_too_long_counts_as_a_failed_camera(tmp_path: Path, caplog) -> None:
    switch = tmp_path / "switch"
    switch.write_text("garbage")
    source = SwitchedCamera(LoopSource(OpenCVSource(str(CLIP), "file")), switch)
    grabber = FrameGrabber(source, realtime=True, reopen_first_seconds=0.05,
                           bad_frames_reopen_seconds=0.3)
    with caplog.at_level(logging.INFO, logger="edge.camera"), grabber:
        assert wait_for(lambda: grabber.state == "reconnecting", 5.0)
        assert grabber.get(0.1) is None
        switch.unlink()
        assert grabber.get(5.0) is not None
    assert "only bad frames for 0.3 s" in caplog.text
    assert len(messages(caplog, "dropping bad frames")) == 1


# -- the daemon, in-process -------------------------------------------------------------------


def site_config(site: Path, **sections: dict) -> Config:
    cfg = load_config(site / "config.yaml")
    return cfg.model_copy(update={
        k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()
    })


def enroll_lin(cfg: Config, engine) -> None:
    from edge.enroll import enroll, templates_from_images

    good, bad = templates_from_images(engine, [PEOPLE / "lin_manuel_miranda/lin1.png"])
    assert not bad
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        enroll(g, "lin_manuel_miranda", good)


def test_the_daemon_survives_garbage_frames_and_still_lets_lin_in(site, engine) -> None:
    cfg = site_config(site, liveness={"mode": "off"}, voice={"enabled": False})
    enroll_lin(cfg, engine)
    kinds = list(GARBAGE.values())
    # Garbage before the face, and again while the face is in view.
    garbage = {30 + i: kinds[i % len(kinds)] for i in range(10)}
    garbage |= {120 + i: kinds[i % len(kinds)] for i in range(10)}
    factory = MockFactory()
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db),
                    source=FaultyCamera(OpenCVSource(str(CLIP), "file"), garbage),
                    pin_factory=factory, handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        assert daemon.run() == 0
    finally:
        daemon.close()
    assert daemon.frames == CLIP_FRAMES - len(garbage) and daemon.failed_frames == 0
    assert daemon.grabber is not None and daemon.grabber.bad_frames == len(garbage)
    assert [(d.decision, d.name) for d in daemon.decisions if d.name] == [
        ("granted", "lin_manuel_miranda")
    ]
    assert [bool(s.state) for s in factory.pin(cfg.door.pin).states] == [False, True, False]


# -- the daemon as systemd runs it: the watchdog follows the frames ---------------------------


def child(site: Path, switch: Path) -> None:
    """The daemon process: the clip looped in real time behind ``switch``, MockFactory pins."""
    cfg = site_config(site, liveness={"mode": "off"}, voice={"enabled": False},
                      camera={"reopen_max_seconds": 0.3})
    configure_logging("info")
    source = SwitchedCamera(LoopSource(OpenCVSource(str(CLIP), "file")), switch)
    daemon = Daemon(cfg, site / "gallery.db", source=source, realtime=True,
                    pin_factory=MockFactory())
    try:
        daemon.start()
        code = daemon.run()
    finally:
        daemon.close()
    sys.exit(code)


def test_watchdog_stops_while_the_camera_delivers_nothing_and_resumes(site, tmp_path) -> None:
    path, switch = tmp_path / "notify.sock", tmp_path / "switch"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "300000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_faults_camera", str(site), str(switch)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        receive_until(sock, "READY=1")
        receive_until(sock, "WATCHDOG=1", 5)
        faults = [("unplugged", "STATUS=camera reconnecting"), ("garbage", None), ("hang", None)]
        for fault, status in faults:
            switch.write_text(fault)
            grace = notify_lines(sock, 0.5)  # a frame already in flight may still be pinged for
            quiet = notify_lines(sock, 1.5)
            assert "WATCHDOG=1" not in quiet, (fault, quiet)  # nothing processed: no ping
            assert status is None or status in grace + quiet, (fault, grace + quiet)
            assert proc.poll() is None  # and the daemon is still there, waiting
            switch.unlink()
            receive_until(sock, "WATCHDOG=1", 5)  # frames again: pings again
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.count("reopening with backoff") == 1, out
    assert out.count("dropping bad frames") == 1 and out.count("good frames again") == 1, out


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]))
