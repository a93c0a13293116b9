"""The config means what the site admin wrote, refuses what cannot work, and a reload says
what it could not apply. Real files, real `edge run` processes, real signals."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from edge.config import Config, load_config
from edge.errors import ConfigError
from edge.reload import plan_reload

from .conftest import FACES, wait_for
from .helpers import edge_run, receive_until

CLIP = FACES / "video/short_hamilton_clip.mp4"


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    message = str(e.value)
    assert "\n" not in message
    return message


# -------------------------------------------------------------- what the admin meant


def test_unquoted_off_and_0_are_taken_as_meant(tmp_path: Path) -> None:
    cfg = load(tmp_path, "liveness:\n  mode: off\ncamera:\n  source: 0\n")
    assert cfg.liveness.mode == "off" and cfg.camera.source == "0"


@pytest.mark.parametrize(("word", "value"), [("no", False), ("off", False), ("yes", True),
                                             ("on", True), ("false", False), ("true", True)])
def test_switches_still_take_yes_no_on_off(tmp_path: Path, word: str, value: bool) -> None:
    cfg = load(tmp_path, f"voice:\n  enabled: {word}\nembed:\n  flip_average: {word}\n")
    assert cfg.voice.enabled is value and cfg.embed.flip_average is value


@pytest.mark.parametrize("text, key", [
    ("match:\n  threshold: true\n", "match.threshold"),
    ("door:\n  pin: true\n", "door.pin"),  # was quietly pin 1
    ("door:\n  contact_pin: false\n", "door.contact_pin"),  # was quietly pin 0
    ("decision:\n  window_frames: true\n", "decision.window_frames"),
])
def test_a_boolean_is_not_a_number(tmp_path: Path, text: str, key: str) -> None:
    message = refused(tmp_path, text)
    assert f"{key}: must be a number, not true/false" in message, message


@pytest.mark.parametrize("text, line, first", [
    ("door:\n  pin: 4\n  unlock_seconds: 3\n  pin: 5\n", 4, 2),
    ("match:\n  threshold: 0.4\ndoor:\n  pin: 4\nmatch:\n  margin: 0.1\n", 5, 1),
    ("door: {pin: 4, pin: 5}\n", 1, 1),
])
def test_a_duplicate_key_is_refused_naming_both_lines(
    tmp_path: Path, text: str, line: int, first: int
) -> None:
    message = refused(tmp_path, text)
    assert f"at line {line}" in message and f"first on line {first}" in message, message
    assert "duplicate key" in message


def test_agree_matches_above_the_window_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "decision:\n  agree_matches: 11\n  window_frames: 10\n")
    assert "decision: agree_matches 11 is more than window_frames 10" in message, message
    cfg = load(tmp_path, "decision:\n  agree_matches: 10\n  window_frames: 10\n")
    assert cfg.decision.agree_matches == cfg.decision.window_frames == 10


@pytest.mark.parametrize("door, words", [
    ("contact_pin: 17", ("door: contact_pin 17", "door.pin")),
    ("exit_button_pin: 17", ("door: exit_button_pin 17", "door.pin")),
    ("pin: 5\n  contact_pin: 6\n  exit_button_pin: 6", ("exit_button_pin 6", "door.contact_pin")),
])
def test_one_pin_one_job(tmp_path: Path, door: str, words: tuple[str, ...]) -> None:
    message = refused(tmp_path, f"door:\n  {door}\n")
    assert all(w in message for w in words) and "distinct" in message, message


def test_the_relay_pin_as_door_contact_stops_the_daemon_before_any_hardware(site: Path) -> None:
    config = site / "config.yaml"
    config.write_text(config.read_text().replace("contact_pin: null", "contact_pin: 17"))
    for args in (["--validate-config"], ["--source", str(CLIP), "--exit-at-end"]):
        proc = edge_run(site, *args)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, out
        assert out.splitlines() == [
            f"edge: {config}: door: contact_pin 17 is already the relay's pin (door.pin): "
            "pins must be distinct"
        ]
    assert not (site / "gallery.db").exists()  # nothing opened, nothing created


# -------------------------------------------------------------- what a reload applies


def test_plan_keeps_restart_only_values_and_applies_the_rest() -> None:
    running = Config()
    new = Config(door={"pin": 22}, match={"threshold": 0.5}, voice={"rate": 200,
                 "welcome": "Hello {name}"}, gallery={"db": "elsewhere.db"})
    plan = plan_reload(running, new)
    assert plan.config.door == running.door and plan.config.gallery == running.gallery
    assert plan.config.voice.rate == running.voice.rate
    assert plan.config.match.threshold == 0.5 and plan.config.voice.welcome == "Hello {name}"
    assert plan.held_back == ("gallery.db data/gallery.db -> elsewhere.db",
                              "door.pin 17 -> 22", "voice.rate 160 -> 200")
    assert plan_reload(running, Config(match={"margin": 0.1})).held_back == ()


def test_sighup_with_a_restart_only_change_says_so_and_keeps_running_as_before(
    site: Path, tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    config = site / "config.yaml"
    old_status = site / "status.json"
    new_status = tmp_path / "moved" / "status.json"
    proc = edge_run(site, "--source", str(FACES / "spoof"), "--liveness", "off",
                    env={"NOTIFY_SOCKET": str(path)})
    try:
        receive_until(sock, "READY=1", timeout=120)
        assert wait_for(old_status.exists, 30)
        text = config.read_text()
        text = text.replace("  pin: 17 ", "  pin: 22 ")
        text = text.replace(f"status_file: {old_status}", f"status_file: {new_status}")
        text = text.replace("threshold: 0.40", "threshold: 0.45")
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        receive_until(sock, "RELOADING=1")
        receive_until(sock, "READY=1")
        stamp = json.loads(old_status.read_text())["updated_mono"]
        # The old status file is still the one written: the old values are in force.
        assert wait_for(lambda: json.loads(old_status.read_text())["updated_mono"] > stamp, 30)
        assert proc.poll() is None and not new_status.exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    (warning,) = [ln for ln in out.splitlines() if "restart needed" in ln]
    assert "door.pin 17 -> 22" in warning and "daemon.status_file" in warning, warning
    assert "match.threshold" not in warning and "reloaded config and gallery" in out
    assert "Traceback" not in out
