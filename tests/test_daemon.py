"""End to end: real models, real photos and video, a real SQLite file, MockFactory pins.

The daemon is run in-process on file and folder sources, frame by frame
(no pacing), so each test is deterministic.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.camera import FolderSource, open_source
from edge.config import Config, load_config
from edge.daemon import Daemon
from edge.enroll import enroll, templates_from_images
from edge.gallery import Gallery
from edge.voice import Voice, WavEngine

from .conftest import FACES, PEOPLE

CLIP = FACES / "video/short_hamilton_clip.mp4"


def config(site: Path, **sections: dict) -> Config:
    cfg = load_config(site / "config.yaml")
    return cfg.model_copy(update={
        k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()
    })


def enroll_photos(cfg: Config, name: str, *photos: Path, engine) -> None:
    good, bad = templates_from_images(engine, photos)
    assert not bad, bad
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        enroll(g, name, good)


def run_daemon(cfg: Config, source, tmp_path: Path) -> tuple[Daemon, MockFactory, WavEngine]:
    factory = MockFactory()
    engine = WavEngine(tmp_path / "speech")
    voice = Voice(cfg.voice, engine_factory=lambda: engine)
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db), source=source, voice=voice,
                    pin_factory=factory, handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        assert daemon.run() == 0
        assert voice.flush(10)
    finally:
        daemon.close()
    return daemon, factory, engine


def folder_of(tmp_path: Path, name: str, photo: Path, copies: int) -> FolderSource:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(copies):
        shutil.copyfile(photo, folder / f"{i:04d}{photo.suffix}")
    return FolderSource(folder, fps=30.0)


def access_events(cfg: Config) -> list:
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        return g.events(kind="access")


def relay_states(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(pin).states]


@pytest.mark.pi  # the one daemon replay on the emulated Pi
def test_hamilton_clip_grants_lin_manuel_miranda_once(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "lin_manuel_miranda", PEOPLE / "lin_manuel_miranda/lin1.png", engine=engine)
    daemon, factory, speech = run_daemon(cfg, open_source(str(CLIP), cfg.camera), tmp_path)

    grants = [e for e in access_events(cfg) if e.decision == "granted"]
    assert [g.name for g in grants] == ["lin_manuel_miranda"]
    assert grants[0].similarity >= cfg.match.threshold
    # Latency in frame timestamps from the track's first frame to the decision.
    assert grants[0].detail["latency_ms"] <= 400
    # One relay pulse: locked, unlocked, locked.
    assert relay_states(factory, cfg.door.pin) == [False, True, False]
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        doors = [e.reason for e in g.events(kind="door")]
    assert doors == ["unlocked", "locked"]
    # A greeting was rendered and is real speech.
    texts = [t for t, _ in speech.spoken]
    assert texts == ["Welcome, lin_manuel_miranda"]
    with wave.open(str(speech.spoken[0][1])) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        seconds = w.getnframes() / w.getframerate()
    assert 0.5 < seconds < 5 and np.sqrt(np.mean(pcm.astype(float) ** 2)) > 300
    assert daemon.frames == 275


def test_hamilton_clip_with_nobody_enrolled_grants_nothing(site, tmp_path):
    cfg = config(site, liveness={"mode": "off"})
    _, factory, speech = run_daemon(cfg, open_source(str(CLIP), cfg.camera), tmp_path)
    assert not [e for e in access_events(cfg) if e.decision == "granted"]
    assert relay_states(factory, cfg.door.pin) == [False]
    assert speech.spoken == []


def test_a_still_photo_never_passes_the_blink_challenge(site, tmp_path, engine):
    photo = PEOPLE / "barack_obama/obama.jpg"
    cfg = config(site, liveness={"mode": "active", "blink_window_seconds": 1.5})
    enroll_photos(cfg, "barack_obama", photo, engine=engine)
    # Two seconds of the same photo at 30 fps.
    run_daemon(cfg, folder_of(tmp_path, "still", photo, 60), tmp_path)
    events = access_events(cfg)
    assert not [e for e in events if e.decision == "granted"]
    denials = [e for e in events if e.name == "barack_obama"]
    assert denials and all(e.decision == "denied" for e in denials)
    assert "liveness" in denials[0].reason and "blink" in denials[0].reason


def test_a_face_on_a_tablet_is_refused_and_the_live_face_let_in(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "passive"})
    enroll_photos(cfg, "her", FACES / "spoof/image_T1.jpg", engine=engine)
    run_daemon(cfg, folder_of(tmp_path, "tablet", FACES / "spoof/image_F2.jpg", 30), tmp_path)
    events = access_events(cfg)
    assert not [e for e in events if e.decision == "granted"]
    denied = [e for e in events if e.name == "her"]
    assert denied and "liveness" in denied[0].reason and denied[0].liveness < 0.05

    _, factory, _ = run_daemon(
        cfg, folder_of(tmp_path, "live", FACES / "spoof/image_T1.jpg", 30), tmp_path / "b")
    grants = [e for e in access_events(cfg) if e.decision == "granted"]
    assert [g.name for g in grants] == ["her"] and grants[0].liveness > 0.9
    assert relay_states(factory, cfg.door.pin) == [False, True, False]


def test_disabled_people_are_recognised_and_denied(site, tmp_path, engine):
    photo = FACES / "spoof/image_T1.jpg"
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "her", photo, engine=engine)
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        g.set_active("her", False)
    _, factory, _ = run_daemon(cfg, folder_of(tmp_path, "f", photo, 10), tmp_path)
    events = access_events(cfg)
    assert [(e.name, e.decision, e.reason) for e in events] == [("her", "denied", "inactive")]
    assert relay_states(factory, cfg.door.pin) == [False]


def test_outside_the_validity_window_is_denied(site, tmp_path, engine):
    photo = FACES / "spoof/image_T1.jpg"
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "her", photo, engine=engine)
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        g.set_validity("her", "2020-01-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00")
    run_daemon(cfg, folder_of(tmp_path, "f", photo, 10), tmp_path)
    assert [e.reason for e in access_events(cfg)] == ["outside validity window"]


@pytest.mark.parametrize("mode", ["off", "passive"])
def test_status_reports_frames_and_last_decision(site, tmp_path, engine, mode):
    photo = FACES / "spoof/image_T1.jpg"
    cfg = config(site, liveness={"mode": mode})
    enroll_photos(cfg, "her", photo, engine=engine)
    daemon, _, _ = run_daemon(cfg, folder_of(tmp_path, "f", photo, 12), tmp_path)
    status = daemon.status()
    assert status["frames"] == 12 and status["people"] == 1 and status["stopped"]
    assert status["last_decision"]["decision"] == "granted"
    assert status["door_simulated"] is True  # MockFactory: no real relay here


def test_replay_bench_times_every_face_frame(site, engine):
    from edge.bench import replay

    cfg = config(site, liveness={"mode": "passive"})
    enroll_photos(cfg, "lin_manuel_miranda", PEOPLE / "lin_manuel_miranda/lin1.png", engine=engine)
    r = replay(cfg, CLIP, cfg.path(cfg.gallery.db))
    assert r["frames"] == 275 and 100 < r["frames_with_face"] < 275
    assert r["median_ms_with_face"] > 0 and r["p99_ms"] >= r["median_ms"]
