"""Spoken greetings that never hold up the camera loop.

:class:`Voice` hands each line to its own worker thread through a small
bounded queue, so :meth:`Voice.say` returns at once whatever the speaker is
doing. The speech engine is passed in as a factory and built lazily on the
worker thread (pyttsx3 engines belong to the thread that made them); the
default is pyttsx3's espeak-ng driver. A missing sound card or a broken engine
is logged once and otherwise ignored: a door that opens silently is fine, a
door that stops opening because the speaker failed is not. An engine that
hangs is abandoned with its thread and a fresh worker takes over.

:func:`render_wav` renders speech to a WAV file with the ``espeak-ng`` program;
:class:`WavEngine` uses it as an engine, for tests and for sites without a
speaker that still want to hear what would have been said.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Protocol

from .config import VoiceConfig
from .errors import HardwareError

__all__ = ["Pyttsx3Engine", "SpeechEngine", "Voice", "WavEngine", "render_wav"]

log = logging.getLogger(__name__)


class SpeechEngine(Protocol):
    """Anything that can say a line, blocking until it has been said."""

    def speak(self, text: str) -> None: ...


EngineFactory = Callable[[], SpeechEngine]


def render_wav(
    text: str,
    path: str | os.PathLike[str],
    voice: str | None = None,
    rate: int = 160,
    volume: float = 1.0,
    timeout: float = 30.0,
) -> Path:
    """Render ``text`` to a 16-bit mono WAV file at ``path`` with ``espeak-ng -w``.

    ``rate`` is in words per minute, ``volume`` 0..1, ``voice`` an espeak-ng
    voice name (None for its default). The file appears complete or not at all.
    Raises :class:`HardwareError` if espeak-ng is missing, fails or times out.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise HardwareError("espeak-ng is not installed (apt-get install espeak-ng)")
    path = Path(path)
    part = path.with_name(path.name + ".part")
    cmd = [exe, "-b", "1", "--stdin", "-w", str(part), "-s", str(int(rate))]
    cmd += ["-a", str(round(max(0.0, min(volume, 1.0)) * 100))]
    if voice:
        cmd += ["-v", voice]
    try:
        done = subprocess.run(
            cmd, input=text, text=True, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        part.unlink(missing_ok=True)
        raise HardwareError(f"espeak-ng took longer than {timeout:g} s") from None
    if done.returncode != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        why = done.stderr.strip() or f"exit status {done.returncode}"
        raise HardwareError(f"espeak-ng failed: {why}")
    os.replace(part, path)
    return path


class WavEngine:
    """An engine that writes each line to ``0001.wav``, ``0002.wav``… in ``directory``.

    ``spoken`` lists ``(text, path)`` for every line rendered.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        voice: str | None = None,
        rate: int = 160,
        volume: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.voice, self.rate, self.volume = voice, rate, volume
        self.spoken: list[tuple[str, Path]] = []

    def speak(self, text: str) -> None:
        path = self.directory / f"{len(self.spoken) + 1:04d}.wav"
        render_wav(text, path, voice=self.voice, rate=self.rate, volume=self.volume)
        self.spoken.append((text, path))


class Pyttsx3Engine:
    """pyttsx3 with its espeak-ng driver, playing through ALSA.

    Raises :class:`HardwareError` when there is no playback device or no
    ``aplay`` (pyttsx3 would otherwise "speak" into the void without error).
    """

    def __init__(self, voice: str | None = None, rate: int = 160, volume: float = 1.0) -> None:
        if not glob.glob("/dev/snd/pcmC*D*p"):
            raise HardwareError("no audio output device (/dev/snd has no playback PCM)")
        if shutil.which("aplay") is None:
            raise HardwareError("aplay is not installed (apt-get install alsa-utils)")
        try:
            import pyttsx3.engine

            # A new Engine, not pyttsx3.init(): init() hands back a cached engine,
            # which after a hang would be the very engine that hung.
            self._engine = pyttsx3.engine.Engine("espeak")
            self._engine.setProperty("rate", rate)
            self._engine.setProperty("volume", volume)
            if voice:
                self._engine.setProperty("voice", voice)
        except Exception as e:
            raise HardwareError(f"pyttsx3/espeak-ng cannot start: {e}") from e

    def speak(self, text: str) -> None:
        self._engine.say(text)
        self._engine.runAndWait()


class _Worker:
    """One worker thread and when its current engine call began (None while idle)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.busy_since: float | None = None


class Voice:
    """Greetings and refusals spoken on a worker thread; every call returns at once.

    :param config: templates (``welcome`` with ``{name}``, ``denied``), voice,
        rate, volume, ``min_interval_seconds`` and ``enabled``.
    :param engine_factory: builds the speech engine on the worker thread;
        default :class:`Pyttsx3Engine` with the configured voice, rate and volume.
    :param speak_timeout: an engine call (including building the engine) that
        takes longer than this is abandoned, with its thread, at the next
        :meth:`say`, and a fresh worker with a fresh engine takes over.
    :param queue_size: lines waiting to be spoken; when full the oldest is dropped.
    :param max_restarts: abandoned workers allowed per hour; past that speech
        pauses rather than leaking one stuck thread per line.
    """

    def __init__(
        self,
        config: VoiceConfig | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        speak_timeout: float = 15.0,
        queue_size: int = 4,
        max_restarts: int = 3,
    ) -> None:
        self.config = config if config is not None else VoiceConfig()
        cfg = self.config
        self._factory: EngineFactory = engine_factory or (
            lambda: Pyttsx3Engine(voice=cfg.voice, rate=cfg.rate, volume=cfg.volume)
        )
        self.speak_timeout = speak_timeout
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: _Worker | None = None
        self._last_said: dict[str, float] = {}
        self._warned = False
        self.max_restarts = max_restarts
        self._restarted_at: list[float] = []
        self.restarts = 0

    # -- the verbs ------------------------------------------------------------------

    def greet(self, display_name: str) -> bool:
        """Say the welcome template with ``{name}`` replaced by ``display_name``."""
        return self.say(self.config.welcome.replace("{name}", display_name))

    def deny(self) -> bool:
        """Say the access-denied line."""
        return self.say(self.config.denied)

    def say(self, text: str) -> bool:
        """Queue ``text`` to be spoken and return at once.

        Returns False when it will not be spoken: voice disabled or closed, empty
        text, or the same text was queued less than ``min_interval_seconds`` ago.
        """
        text = " ".join(text.split())
        if not text or not self.config.enabled:
            return False
        with self._lock:
            if self._stop.is_set():
                return False
            now = monotonic()
            interval = self.config.min_interval_seconds
            self._last_said = {t: at for t, at in self._last_said.items() if now - at < interval}
            if text in self._last_said:
                return False
            self._last_said[text] = now
            if not self._ensure_worker(now):
                return False
            while True:
                try:
                    self._queue.put_nowait(text)
                    return True
                except queue.Full:
                    try:
                        dropped = self._queue.get_nowait()
                        log.debug("voice queue full; dropped %r", dropped)
                    except queue.Empty:
                        pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s until every queued line has been spoken; True if so.

        Returns False at once when the engine is stuck: nothing more will be said.
        """
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            w = self._worker
            if self._queue.empty() and (w is None or w.busy_since is None):
                return True
            if w is not None and self._stuck(w, monotonic()):
                return False
            time.sleep(0.01)
        return False

    def _stuck(self, w: _Worker, now: float) -> bool:
        """The worker has been inside one engine call longer than ``speak_timeout``."""
        busy = w.busy_since
        return busy is not None and now - busy > self.speak_timeout

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker, waiting up to ``timeout`` s for the line being spoken. Idempotent."""
        with self._lock:
            self._stop.set()
            worker, self._worker = self._worker, None
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put_nowait(None)
        thread = worker.thread if worker is not None else None
        if worker is not None and self._stuck(worker, monotonic()):
            return  # a hung engine would only make shutdown wait as well
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> Voice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the worker -----------------------------------------------------------------

    def _ensure_worker(self, now: float) -> bool:
        """Have a worker that is not stuck in its engine (lock held); False if none can be had.

        A worker whose engine call has lasted longer than ``speak_timeout`` is
        abandoned (its thread cannot be killed; it exits if the call ever returns).
        A worker whose thread died (an engine raising something that is not an
        Exception, such as SystemExit) is replaced at once: it holds no thread.
        """
        w = self._worker
        if w is not None and w.thread is not None and not w.thread.is_alive():
            log.warning("speech worker died; starting a new one")
            self.restarts += 1
            w = None
        if w is not None and w.busy_since is not None and self._stuck(w, now):
            self._restarted_at = [t for t in self._restarted_at if now - t < 3600.0]
            if len(self._restarted_at) >= self.max_restarts:
                log.debug("speech engine stuck and restart budget spent; line dropped")
                return False
            log.warning(
                "speech engine stuck for %.0f s; abandoning it and starting a new one",
                now - w.busy_since,
            )
            self._restarted_at.append(now)
            self.restarts += 1
            w = None
        if w is None:
            w = self._worker = _Worker()
            w.thread = threading.Thread(target=self._run, args=(w,), name="voice", daemon=True)
            w.thread.start()
        return True

    def _run(self, me: _Worker) -> None:
        engine: SpeechEngine | None = None
        while True:
            text = self._queue.get()
            if text is None or self._stop.is_set():
                return
            with self._lock:
                if self._worker is not me:  # replaced meanwhile: hand the line on
                    self._requeue(text)
                    return
                me.busy_since = monotonic()
            try:
                if engine is None:
                    engine = self._factory()
                engine.speak(text)
            except Exception as e:
                self._failed(e)
                engine = None  # rebuilt for the next line
            with self._lock:
                me.busy_since = None
                if self._worker is not me:  # abandoned while speaking
                    return

    def _requeue(self, text: str) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(text)

    def _failed(self, e: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("speech unavailable, carrying on without it: %s", e)
        else:
            log.debug("speech failed again: %s", e)
