"""Speech engine faults in the running daemon: a crash on every line, a hang, a killed worker.

The door must open and frames must flow whatever the speaker does. The engines
here are test doubles that fail on purpose; the rest (models, clip, gallery,
MockFactory relay, the WAV engine that takes over) is real.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.camera import LoopSource, OpenCVSource
from edge.config import Config, VoiceConfig, load_config
from edge.daemon import Daemon
from edge.enroll import enroll, templates_from_images
from edge.gallery import Gallery
from edge.voice import SpeechEngine, Voice, WavEngine

from .conftest import FACES, PEOPLE

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

CLIP = FACES / "video/short_hamilton_clip.mp4"


class CrashingEngine:
    """Raises on every line, like a driver that lost its sound card."""

    def speak(self, text: str) -> None:
        raise RuntimeError("ALSA: device disconnected")


class HangingEngine:
    """Never returns from ``speak`` until released."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.threads: list[threading.Thread] = []

    def speak(self, text: str) -> None:
        self.threads.append(threading.current_thread())
        self.release.wait()


class ThreadKillingEngine:
    """Raises SystemExit, which is no Exception: the worker thread dies of it."""

    def speak(self, text: str) -> None:
        raise SystemExit("engine pulled the plug")


def site_config(site: Path) -> Config:
    cfg = load_config(site / "config.yaml")
    return cfg.model_copy(update={
        "liveness": cfg.liveness.model_copy(update={"mode": "off"}),
        "decision": cfg.decision.model_copy(update={"cooldown_seconds": 0.0}),
        "door": cfg.door.model_copy(update={"unlock_seconds": 0.05}),
        "voice": cfg.voice.model_copy(update={"min_interval_seconds": 0.0}),
    })


def run_twice(site: Path, engine, voice: Voice) -> tuple[Daemon, list[bool]]:
    """Lin walks up twice (the clip played twice); the daemon greets with ``voice``.

    How long ``daemon.close()`` took is left in ``daemon.close_seconds``."""
    cfg = site_config(site)
    db = cfg.path(cfg.gallery.db)
    good, _ = templates_from_images(engine, [PEOPLE / "lin_manuel_miranda/lin1.png"])
    with Gallery(db) as g:
        enroll(g, "lin_manuel_miranda", good)
    factory = MockFactory()
    daemon = Daemon(cfg, db, source=LoopSource(OpenCVSource(str(CLIP), "file"), loops=2),
                    voice=voice, pin_factory=factory, handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        assert daemon.run() == 0
    finally:
        t0 = time.monotonic()
        daemon.close()
        daemon.close_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return daemon, [bool(s.state) for s in factory.pin(cfg.door.pin).states]


def counting(
    make: Callable[[], SpeechEngine],
) -> tuple[list[SpeechEngine], Callable[[], SpeechEngine]]:
    built: list[SpeechEngine] = []

    def factory() -> SpeechEngine:
        built.append(make())
        return built[-1]

    return built, factory


def test_an_engine_that_crashes_on_every_line_never_stops_the_door(site, engine, caplog) -> None:
    built, factory = counting(CrashingEngine)
    voice = Voice(VoiceConfig(min_interval_seconds=0), engine_factory=factory)
    with caplog.at_level(logging.DEBUG, logger="edge.voice"):
        daemon, relay = run_twice(site, engine, voice)
    assert daemon.frames == 550 and daemon.failed_frames == 0
    assert relay == [False, True, False, True, False]  # both visits let in
    assert [d.decision for d in daemon.decisions if d.name] == ["granted", "granted"]
    assert len(built) == 2  # the engine was rebuilt after its crash
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "device disconnected" in warnings[0].getMessage()


def test_an_engine_that_hangs_never_holds_up_a_frame(site, engine) -> None:
    """Counted, not timed (a frame's milliseconds say more about the CPU than
    the voice): every frame is processed while the engine hangs, the engine is
    only ever called off the frame loop's thread, and shutdown does not wait
    for the hung call (Voice.close's join would take its whole 2 s)."""
    release = threading.Event()
    engines: list[HangingEngine] = []

    def factory() -> HangingEngine:
        engines.append(HangingEngine(release))
        return engines[-1]

    voice = Voice(VoiceConfig(min_interval_seconds=0), engine_factory=factory, speak_timeout=0.2)
    closes: list[float] = []
    real_close = voice.close

    def timed_close(timeout: float = 2.0) -> None:
        t0 = time.monotonic()
        real_close(timeout)
        closes.append(time.monotonic() - t0)

    voice.close = timed_close  # type: ignore[method-assign]
    try:
        daemon, relay = run_twice(site, engine, voice)
        hung = [t for e in engines for t in e.threads]
        assert all(t.is_alive() for t in hung)  # still inside speak(): never released
    finally:
        release.set()
    assert relay == [False, True, False, True, False]
    assert daemon.frames == 550 and daemon.failed_frames == 0
    assert len(hung) == 2 and all(t.name == "voice" for t in hung)
    assert threading.main_thread() not in hung  # the frames ran here, never in the engine
    assert voice.restarts == 1  # the stuck worker was abandoned at the second greeting
    assert closes and max(closes) < 1.0  # shutdown abandoned the hung worker, no 2 s join


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_killed_by_its_engine_is_replaced_at_once(tmp_path: Path) -> None:
    good = WavEngine(tmp_path)
    engines: Iterator[SpeechEngine] = iter([ThreadKillingEngine(), good])
    voice = Voice(VoiceConfig(min_interval_seconds=0), engine_factory=lambda: next(engines),
                  speak_timeout=60)
    try:
        assert voice.say("first")
        worker = voice._worker
        assert worker is not None and worker.thread is not None
        worker.thread.join(5)
        assert not worker.thread.is_alive()
        assert voice.say("second")  # not 60 s of silence: a new worker right away
        assert voice.flush(10)
        assert [t for t, _ in good.spoken] == ["second"]
        assert voice.restarts == 1
    finally:
        voice.close()
