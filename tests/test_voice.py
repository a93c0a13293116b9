"""Speech: real espeak-ng renderings checked as audio, and the worker's promises.

The engines handed to :class:`Voice` here are real ones (they write WAV files
with espeak-ng); the only special engine is one that hangs on purpose, which
is the failure the worker restart exists for.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from edge.config import VoiceConfig
from edge.errors import HardwareError
from edge.voice import Pyttsx3Engine, Voice, WavEngine, render_wav

from .conftest import wait_for

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float64), w.getframerate()


def assert_speech(path: Path) -> float:
    """The file is plausible speech: 0.5-5 s long and clearly not silent; returns seconds."""
    samples, rate = read_wav(path)
    seconds = len(samples) / rate
    assert 0.5 < seconds < 5.0, seconds
    assert np.sqrt(np.mean(samples**2)) > 300.0  # of 32768; silence is ~0
    return seconds



def test_render_wav_is_speech(tmp_path: Path) -> None:
    out = render_wav("Welcome, Lin-Manuel", tmp_path / "welcome.wav")
    assert out == tmp_path / "welcome.wav"
    assert_speech(out)
    assert not list(tmp_path.glob("*.part"))


def test_render_wav_rate_changes_length(tmp_path: Path) -> None:
    slow = assert_speech(render_wav("Welcome, Lin-Manuel", tmp_path / "slow.wav", rate=100))
    fast = assert_speech(render_wav("Welcome, Lin-Manuel", tmp_path / "fast.wav", rate=300))
    assert slow > 1.5 * fast


def test_render_wav_unknown_voice_is_a_hardware_error(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="espeak-ng failed"):
        render_wav("hello", tmp_path / "x.wav", voice="nonexistentvoice")
    assert not list(tmp_path.iterdir())


def test_greet_returns_at_once_and_speech_appears(tmp_path: Path) -> None:
    engine_threads: list[str] = []
    engines: list[WavEngine] = []

    def factory() -> WavEngine:
        engine_threads.append(threading.current_thread().name)
        engines.append(WavEngine(tmp_path, rate=160))
        return engines[-1]

    cfg = VoiceConfig(welcome="Welcome, {name}")
    with Voice(cfg, engine_factory=factory) as voice:
        t0 = time.monotonic()
        assert voice.greet("Lin-Manuel") is True
        assert time.monotonic() - t0 < 0.05
        assert wait_for(lambda: (tmp_path / "0001.wav").exists())
    assert_speech(tmp_path / "0001.wav")
    assert engines[0].spoken[0][0] == "Welcome, Lin-Manuel"
    assert engine_threads == ["voice"]  # built lazily, on the worker


def test_deny_uses_the_template(tmp_path: Path) -> None:
    engine = WavEngine(tmp_path)
    with Voice(VoiceConfig(denied="Not today"), engine_factory=lambda: engine) as voice:
        assert voice.deny()
        assert wait_for(lambda: engine.spoken)
    assert engine.spoken[0][0] == "Not today"


def test_rate_limit(tmp_path: Path) -> None:
    engine = WavEngine(tmp_path)
    cfg = VoiceConfig(min_interval_seconds=0.4)
    with Voice(cfg, engine_factory=lambda: engine) as voice:
        assert voice.say("Welcome, Ana") is True
        assert voice.say("Welcome,   Ana") is False  # same words, same line
        assert voice.say("Welcome, Bo") is True
        time.sleep(0.5)
        assert voice.say("Welcome, Ana") is True
        assert wait_for(lambda: len(engine.spoken) == 3)
    assert [t for t, _ in engine.spoken] == ["Welcome, Ana", "Welcome, Bo", "Welcome, Ana"]


def test_disabled_and_closed_voice_say_nothing(tmp_path: Path) -> None:
    made: list[WavEngine] = []

    def factory() -> WavEngine:
        made.append(WavEngine(tmp_path))
        return made[-1]

    off = Voice(VoiceConfig(enabled=False), engine_factory=factory)
    assert off.greet("Ana") is False
    off.close()
    voice = Voice(engine_factory=factory)
    voice.close()
    voice.close()
    assert voice.say("hello") is False
    assert made == []


class HangingEngine:
    """Hangs in ``speak`` until released, like an audio device that never returns."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.started = threading.Event()

    def speak(self, text: str) -> None:
        self.started.set()
        self.release.wait()


def test_hanging_engine_is_abandoned_and_replaced(tmp_path: Path) -> None:
    release = threading.Event()
    hanging = HangingEngine(release)
    good = WavEngine(tmp_path)
    engines = iter([hanging, good])
    voice = Voice(
        VoiceConfig(min_interval_seconds=0), engine_factory=lambda: next(engines), speak_timeout=0.2
    )
    try:
        assert voice.say("first")
        assert hanging.started.wait(5)
        t0 = time.monotonic()
        assert voice.say("queued behind the hang")  # still within the timeout
        assert time.monotonic() - t0 < 0.05
        time.sleep(0.3)
        t0 = time.monotonic()
        assert voice.say("second")  # now the worker is stuck: replaced
        assert time.monotonic() - t0 < 0.05
        assert voice.restarts == 1
        assert wait_for(lambda: len(good.spoken) == 2)
        assert [t for t, _ in good.spoken] == ["queued behind the hang", "second"]
        assert_speech(good.spoken[1][1])
    finally:
        release.set()
        voice.close()


def test_restarts_are_budgeted(tmp_path: Path) -> None:
    release = threading.Event()
    voice = Voice(
        VoiceConfig(min_interval_seconds=0),
        engine_factory=lambda: HangingEngine(release),
        speak_timeout=0.05,
        max_restarts=2,
    )
    try:
        said = []
        for i in range(6):
            said.append(voice.say(f"line {i}"))
            time.sleep(0.1)
        assert voice.restarts == 2
        assert said.count(False) >= 2  # later lines are dropped, not given new threads
    finally:
        release.set()
        voice.close()


def test_full_queue_never_blocks_and_drops_oldest(tmp_path: Path) -> None:
    release = threading.Event()
    hanging = HangingEngine(release)
    voice = Voice(
        VoiceConfig(min_interval_seconds=0),
        engine_factory=lambda: hanging,
        speak_timeout=60,
        queue_size=2,
    )
    try:
        voice.say("busy")
        assert hanging.started.wait(5)
        t0 = time.monotonic()
        for i in range(50):
            assert voice.say(f"line {i}")
        assert time.monotonic() - t0 < 0.5
        assert voice._queue.qsize() == 2
        assert list(voice._queue.queue) == ["line 48", "line 49"]
    finally:
        release.set()
        voice.close()


def test_broken_engine_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_speaker() -> WavEngine:
        raise HardwareError("no audio output device")

    with caplog.at_level(logging.DEBUG, logger="edge.voice"):
        voice = Voice(VoiceConfig(min_interval_seconds=0), engine_factory=no_speaker)
        for i in range(3):
            assert voice.say(f"hello {i}") is True
        assert wait_for(lambda: caplog.text.count("failed again") == 2)
        voice.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no audio output device" in warnings[0].getMessage()


def test_default_engine_without_sound_card_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card")
    with pytest.raises(HardwareError, match="no audio output device"):
        Pyttsx3Engine()
    with caplog.at_level(logging.WARNING, logger="edge.voice"), Voice() as voice:
        assert voice.greet("Ana") is True
        assert wait_for(lambda: "speech unavailable" in caplog.text)
