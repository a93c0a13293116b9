"""Start-up and the end of a replay, as a site admin meets them: real `edge run` processes,
a real notify socket, CPU use read from /proc.

Run as ``python -m tests.test_daemon_start SITE SWITCH`` this module is a daemon whose
camera is missing while the file SWITCH exists (and the clip, looped, once it is gone),
with the hint repeated every 0.2 s instead of every minute.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge import daemon as daemon_module
from edge.camera import Frame, LoopSource, OpenCVSource, Source
from edge.config import load_config
from edge.daemon import Daemon, configure_logging
from edge.errors import CameraError

from .conftest import FACES, ROOT, wait_for
from .helpers import edge_run, notify_lines, stop

CLIP = FACES / "video/short_hamilton_clip.mp4"
HINT = "no frame from camera"


def logged(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def start(site: Path, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`edge run` with its output in the file ``log``, to be read while it runs."""
    with open(log, "w") as out:
        return edge_run(site, *args, env=env, stdout=out)


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -------------------------------------------------------------- a replay that cannot start


@pytest.mark.parametrize("kind", ["missing file", "not a video", "empty folder",
                                  "missing folder"])
@pytest.mark.parametrize("exit_at_end", [True, False], ids=["exit-at-end", "keep-running"])
def test_a_file_or_folder_that_cannot_be_read_is_one_line_and_exit_1(
    site: Path, tmp_path: Path, kind: str, exit_at_end: bool
) -> None:
    source = {
        "missing file": Path("/nonexistent.mp4"),
        "not a video": tmp_path / "notes.mp4",
        "empty folder": tmp_path / "empty",
        "missing folder": tmp_path / "no-such-folder",
    }[kind]
    if kind == "not a video":
        source.write_text("these are not frames\n")
    elif kind == "empty folder":
        source.mkdir()
    proc = edge_run(site, "--source", str(source), *(["--exit-at-end"] if exit_at_end else []))
    try:
        out, _ = proc.communicate(timeout=120)  # it retried forever before
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    (line,) = out.strip().splitlines()
    assert line.startswith(f"edge: {source}: "), line
    assert not (site / "gallery.db").exists()  # refused before anything was opened


# -------------------------------------------------------------- a replay that has ended


def test_an_ended_replay_idles_without_spinning_and_status_says_running(
    site: Path, tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    log, status_file = tmp_path / "run.log", site / "status.json"
    proc = start(site, log, "--source", str(FACES / "spoof"), "--liveness", "off",
                 env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "600000"})
    try:

        def status() -> dict:
            try:
                return json.loads(status_file.read_text())
            except (OSError, ValueError):
                return {}

        assert wait_for(lambda: status().get("camera") == "ended", 120), logged(log)
        assert status()["frames"] == 3 and status()["stopped"] is False
        notify_lines(sock)
        # Idle: over a few seconds it uses a sliver of a core (a spinning loop used all of
        # one), and it still feeds the watchdog: idle on purpose is not stuck.
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        pings = [ln for ln in notify_lines(sock, 4.0) if ln == "WATCHDOG=1"]
        used = (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0)
        assert used < 0.25, f"{used:.0%} of a core while idle"
        assert len(pings) >= 2
        shown = subprocess.run(
            [sys.executable, "-m", "edge.cli", "status", "--config", str(site / "config.yaml")],
            capture_output=True, text=True, timeout=60,
        )
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"daemon: running (pid {proc.pid})" in shown.stdout
        assert "camera: ended" in shown.stdout
        assert proc.poll() is None
    finally:
        code = stop(proc)
    out = logged(log)
    assert code == 0, out
    assert "ended after 3 frames; idle with the door locked" in out and "Traceback" not in out
    assert status()["stopped"] is True


# -------------------------------------------------------------- no camera


def test_without_a_camera_it_says_what_to_do_and_not_ready(
    site: Path, tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    log = tmp_path / "run.log"
    proc = start(site, log, "--source", "/dev/video97", env={"NOTIFY_SOCKET": str(path)})
    try:
        assert wait_for(lambda: HINT in logged(log), 120), logged(log)
        lines = notify_lines(sock)
        assert proc.poll() is None
    finally:
        code = stop(proc)
    lines += notify_lines(sock)
    out = logged(log)
    assert code == 0, out
    assert "READY=1" not in lines, lines  # no frame was ever delivered
    assert "STATUS=waiting for camera /dev/video97: no frame yet (edge doctor)" in lines, lines
    assert "STOPPING=1" in lines
    (hint,) = [ln for ln in out.splitlines() if HINT in ln]
    assert "edge doctor" in hint and "edge run --source FILE_OR_FOLDER" in hint, hint
    assert "ready: liveness" not in out and "Traceback" not in out


class LateCamera(Source):
    """A live camera that cannot be opened while ``switch`` exists, then streams the clip."""

    finite = False

    def __init__(self, switch: Path) -> None:
        self.switch = switch
        self.inner = LoopSource(OpenCVSource(str(CLIP), "file"))
        self.name, self.fps = "late-camera", self.inner.fps

    def open(self) -> None:
        if self.switch.exists():
            raise CameraError(f"{self.name}: cannot open device")
        self.inner.open()

    def read(self) -> Frame | None:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def child(site: Path, switch: Path) -> None:
    """The daemon of the next test: hints every 0.2 s, the camera behind ``switch``."""
    daemon_module.HINT_SECONDS = 0.2
    cfg = load_config(site / "config.yaml")
    cfg = cfg.model_copy(update={
        "liveness": cfg.liveness.model_copy(update={"mode": "off"}),
        "voice": cfg.voice.model_copy(update={"enabled": False}),
        "camera": cfg.camera.model_copy(update={"reopen_max_seconds": 0.2}),
    })
    configure_logging("info")
    d = Daemon(cfg, site / "gallery.db", source=LateCamera(switch), realtime=True,
               pin_factory=MockFactory())
    try:
        d.start()
        code = d.run()
    finally:
        d.close()
    sys.exit(code)


def test_the_hint_repeats_until_the_first_frame_and_only_then_ready(
    site: Path, tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    log, switch = tmp_path / "child.log", tmp_path / "unplugged"
    switch.touch()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_daemon_start", str(site), str(switch)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "NOTIFY_SOCKET": str(path)},
        )
    try:
        assert wait_for(lambda: logged(log).count(HINT) >= 3, 120), logged(log)
        before = notify_lines(sock)
        assert "READY=1" not in before and proc.poll() is None
        switch.unlink()  # the camera is plugged in
        assert wait_for(lambda: "READY=1" in notify_lines(sock), 60)
        hints = logged(log).count(HINT)
        assert wait_for(lambda: "ready: liveness off" in logged(log), 30)
    finally:
        code = stop(proc)
    out = logged(log)
    assert code == 0, out
    assert out.count(HINT) == hints  # no hint once frames flow
    assert out.index(HINT) < out.index("ready: liveness off")
    assert "Traceback" not in out


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]))
