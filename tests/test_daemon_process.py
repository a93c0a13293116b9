"""The daemon as systemd runs it: a real process, a real notify socket, real signals."""

from __future__ import annotations

import shutil
import signal

import pytest

from edge.gallery import Gallery

from .conftest import FACES
from .helpers import edge_run, receive_until


def test_ready_watchdog_reload_and_clean_stop(site, tmp_path, notify_socket):
    sock, path = notify_socket
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(20):
        shutil.copyfile(FACES / "spoof/image_T1.jpg", frames / f"{i:03d}.jpg")
    proc = edge_run(site, "--source", str(frames), "--realtime", "--liveness", "off",
                    env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "300000"})
    try:
        receive_until(sock, "READY=1")
        receive_until(sock, "WATCHDOG=1")
        proc.send_signal(signal.SIGHUP)
        receive_until(sock, "RELOADING=1")
        receive_until(sock, "READY=1")
        receive_until(sock, "WATCHDOG=1")  # the camera and loop kept going
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "reloaded config and gallery" in out and "stopping on SIGTERM" in out
    assert "Traceback" not in out
    with Gallery(site / "gallery.db") as g:
        assert [e.reason for e in g.events(kind="door")] in ([], ["unlocked", "locked"])


def test_bad_config_stops_before_any_hardware(site):
    cfg = site / "config.yaml"
    cfg.write_text(cfg.read_text() + "\ndoor_typo:\n  pin: 4\n")
    proc = edge_run(site, "--source", str(FACES / "video/short_hamilton_clip.mp4"))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "door_typo: unknown key" in lines[0]


def test_out_of_range_value_is_one_line(site):
    cfg = site / "config.yaml"
    cfg.write_text(cfg.read_text().replace("unlock_seconds: 3", "unlock_seconds: -1"))
    proc = edge_run(site, "--validate-config")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "door.unlock_seconds" in out and len(out.splitlines()) == 1


@pytest.mark.parametrize("fault", ["missing", "altered"])
def test_a_bad_model_file_stops_the_daemon_naming_it(site, tmp_path, fault):
    from edge.models import PROJECT_ROOT

    models = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", models, ignore=shutil.ignore_patterns(".*"))
    victim = models / "sface.tflite"  # the default embedder
    if fault == "missing":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[1000] ^= 0xFF
        victim.write_bytes(bytes(data))
    cfg = site / "config.yaml"
    text = cfg.read_text().replace(f"  dir: {PROJECT_ROOT / 'models'} ", f"  dir: {models} ")
    cfg.write_text(text)
    proc = edge_run(site, "--source", str(FACES / "video/short_hamilton_clip.mp4"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    lines = [ln for ln in out.splitlines() if ln.startswith("edge:")]
    assert len(lines) == 1 and "sface.tflite" in lines[0]
    assert ("missing" if fault == "missing" else "sha256 mismatch") in lines[0]
    assert "edge models fetch" in lines[0] and "Traceback" not in out
    assert "door" not in out.lower()  # refused before any pin was touched
