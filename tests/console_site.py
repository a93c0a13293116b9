"""A real daemon with its console on, for the console's tests: one `edge run --console` process.

The camera is a folder of real photos fitted into 640x480 frames and played
in a loop (each photo for a few frames, so a face stays one track and is
decided): Barack Obama (enrolled) and Rose Leslie (a stranger, refused, her
snapshot kept). :meth:`ConsoleDaemon.show` swaps what the camera shows: the
folder is listed again each time the loop starts over.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import cv2

from edge.bench import camera_frame
from edge.image import read_image

from .conftest import PEOPLE, ROOT, wait_for

#: Frames each photo is shown for, in a row (the decision needs 3 agreeing votes).
REPEAT = 6


def write_frames(folder: Path, photos: list[Path]) -> None:
    """Each photo as REPEAT 640x480 JPEG frames in ``folder``, replacing what it held.

    Each file is written beside and renamed into place, so the camera never
    reads half a frame.
    """
    keep = set()
    n = 0
    for photo in photos:
        frame = camera_frame(read_image(photo).bgr)
        ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        for _ in range(REPEAT):
            path = folder / f"{n:04d}.jpg"
            tmp = folder / f".{n:04d}.tmp"
            tmp.write_bytes(jpg.tobytes())
            os.replace(tmp, path)
            keep.add(path)
            n += 1
    for old in folder.glob("*.jpg"):
        if old not in keep:
            old.unlink()


def edge(site: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args, "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


class Http:
    """A small HTTP client for one console: cookies kept, Bearer optional."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.cookie: str | None = None

    def request(self, method: str, path: str, *, bearer: str | None = None,
                form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if bearer:
            h["Authorization"] = f"Bearer {bearer}"
        if self.cookie:
            h["Cookie"] = self.cookie
        body = None
        if form is not None:
            body = urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        kw.setdefault("headers", {})["Accept"] = "application/json"
        status, _, data = self.request(method, path, **kw)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")


class ConsoleDaemon:
    """``edge run --console 127.0.0.1:0`` on a looped folder, in its own site folder."""

    def __init__(self, site: Path, liveness: str = "passive") -> None:
        self.site = site
        self.frames = site / "frames"
        self.frames.mkdir()
        self.snapshots = site / "snapshots"
        text = (site / "config.yaml").read_text()
        text = text.replace("  fps: 30", "  fps: 10")  # the camera: light on a shared machine
        text = text.replace("  snapshot_dir: null", f"  snapshot_dir: {self.snapshots}")
        text = text.replace("  enabled: true", "  enabled: false", 1)  # no speech
        (site / "config.yaml").write_text(text)
        self.obama = PEOPLE / "barack_obama" / "obama.jpg"
        self.rose = PEOPLE / "rose_leslie" / "rose1.jpg"
        self.showing: list[Path] = []
        self.show([self.obama, self.rose])
        edge(site, "enroll", "barack_obama", str(self.obama),
             str(PEOPLE / "barack_obama/obama2.jpg"), "--create")
        self.log = open(site / "daemon.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(site / "config.yaml"),
             "--db", str(site / "gallery.db"), "--source", str(self.frames), "--loop",
             "--realtime", "--liveness", liveness, "--console", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
        )
        status = site / "status.json"

        def url() -> str | None:
            assert self.proc.poll() is None, self.output()
            try:
                return json.loads(status.read_text()).get("console")
            except (OSError, ValueError):
                return None

        assert wait_for(url, 120), self.output()
        self.url: str = url()  # type: ignore[assignment]
        self.token = edge(site, "console", "token").stdout.strip()

    def show(self, photos: list[Path]) -> None:
        """What the camera shows from its next loop on."""
        write_frames(self.frames, photos)
        self.showing = list(photos)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.site / "daemon.log").read_text()

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        out = self.output()
        assert self.proc.returncode == 0, out
        return out


def artifacts() -> Path:
    """Where the console tests keep their screenshots (gitignored build/)."""
    d = ROOT / "build" / "test-artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def start(tmp_path_factory: Any, liveness: str = "passive") -> ConsoleDaemon:
    site = tmp_path_factory.mktemp("console")
    text = (ROOT / "config.yaml").read_text()
    models = ROOT / "models"
    text = text.replace("  dir: models ", f"  dir: {models} ")
    text = text.replace("  db: data/gallery.db", f"  db: {site / 'gallery.db'}")
    text = text.replace("  key_file: data/gallery.key", f"  key_file: {site / 'gallery.key'}")
    text = text.replace("  status_file: data/status.json", f"  status_file: {site / 'status.json'}")
    (site / "config.yaml").write_text(text)
    return ConsoleDaemon(site, liveness)


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "",
               ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or an assertion naming ``what``.

    ``ignoring``: exceptions that mean "not yet" (a browser page being replaced
    while it is read), retried like a falsy value.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = predicate()
        except ignoring:
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


__all__ = ["ConsoleDaemon", "Http", "artifacts", "edge", "start", "wait_until"]
