"""Prometheus metrics, scraped over HTTP from a real daemon process while a replay runs."""

from __future__ import annotations

import shutil
import signal
import time
import urllib.request

import pytest

from edge.metrics import parse_listen, reason_label

from .conftest import FACES
from .helpers import edge_run, free_port
from .test_daemon import config, enroll_photos

PHOTO = FACES / "spoof/image_T1.jpg"


def scrape(port: int) -> dict[str, float]:
    """The samples of one scrape, by their full name with labels."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.parametrize("reason,word", [
    ("recognised; liveness off", "recognised"), ("liveness: score 0.03 < 0.80", "liveness"),
    ("lockout", "lockout"), ("inactive", "inactive"), (None, "none"), ("", "none")])
def test_reasons_become_one_bounded_word(reason, word):
    assert reason_label(reason) == word


def test_listen_is_host_and_port():
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen(":9108") == ("0.0.0.0", 9108)


def test_metrics_scraped_while_a_replay_runs(site, tmp_path, engine):
    cfg = config(site)
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(150):  # five seconds at 30 fps, paced: the scrape happens mid-replay
        shutil.copyfile(PHOTO, frames / f"{i:03d}.jpg")
    port = free_port()
    path = site / "config.yaml"
    path.write_text(path.read_text().replace("listen: null", f"listen: 127.0.0.1:{port}"))
    proc = edge_run(site, "--source", str(frames), "--realtime", "--liveness", "off")
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            seen = scrape(port)
            if seen.get('edge_decisions_total{decision="granted",reason="recognised"}') == 1:
                break
            time.sleep(0.2)
        mid = scrape(port)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert seen.get('edge_decisions_total{decision="granted",reason="recognised"}') == 1, seen
    assert mid["edge_frames_total"] >= seen["edge_frames_total"] > 0
    assert mid["edge_frame_processing_seconds_count"] >= mid["edge_frames_total"] - 1
    assert mid["edge_capture_to_decision_seconds_count"] > 0
    assert mid["edge_people_enrolled"] == 1
    assert mid["edge_camera_up"] == 1
    assert mid["edge_lockout_active"] == 0
    assert "edge_events_waiting" in mid
    assert mid["edge_door_unlocks_total"] == 1
    assert mid['edge_output_delivery_seconds_count{output="relay"}'] == 1
    assert not [k for k in mid if "her" in k.split("{", 1)[-1]]  # no per-person labels
