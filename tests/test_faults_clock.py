"""The wall clock jumps: a Pi with no RTC boots in 1970, then NTP sets it right (or wrong).

``time.time`` is replaced by a clock the test moves 50 years back and forth in
the middle of a run; ``time.monotonic`` is left alone. Cooldowns, track
timeouts, the door's unlock time and the camera's reopen backoff must not
notice; events must carry both clocks, the wall one as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.camera import Frame, FrameGrabber, LoopSource, OpenCVSource, Source
from edge.config import load_config
from edge.daemon import Daemon
from edge.enroll import enroll, templates_from_images
from edge.errors import CameraError
from edge.gallery import Gallery

from .conftest import FACES, PEOPLE

CLIP = FACES / "video/short_hamilton_clip.mp4"
FIFTY_YEARS = 50 * 365.25 * 86400
REAL_TIME = time.time
#: Long enough for frames to be read while the door is open, even on a slow CPU.
UNLOCK_SECONDS = 2.0


class WallClock:
    """A stand-in for ``time.time``: the real clock plus an offset the test sets."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return REAL_TIME() + self.offset


class LiveCamera(Source):
    """The clip as a USB camera gives it: no media clock (frames are timed by the monotonic
    clock), a pause at ``pause_at`` (the person walks off, once ``locked()`` says the door
    has closed behind them), the wall clock moved at the
    frames in ``jumps`` (index: offset), and by ``jump_while_unlocked`` at the first frame
    read while ``unlocked()`` says the door is open (an event, not a frame number: on a
    slow CPU the door may lock again before any given frame is read)."""

    def __init__(self, inner: Source, clock: WallClock, jumps: dict[int, float],
                 pause_at: int, pause: float,
                 unlocked: Callable[[], bool] = lambda: False,
                 jump_while_unlocked: float = 0.0,
                 locked: Callable[[], bool] = lambda: True) -> None:
        self.inner, self.clock, self.jumps = inner, clock, jumps
        self.pause_at, self.pause = pause_at, pause
        self.unlocked, self.jump_while_unlocked = unlocked, jump_while_unlocked
        self.jumped_while_unlocked = False
        self.locked = locked
        self.name, self.finite, self.fps = inner.name, inner.finite, inner.fps

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            return None
        if frame.index == self.pause_at:
            # The person walks off once the door has closed behind them: on a
            # fast CPU the frames up to here take less than the unlock time, and
            # the next jump would land while the door is still open.
            deadline = time.monotonic() + 60.0
            while not self.locked() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(self.pause)
        if frame.index in self.jumps:
            self.clock.offset = self.jumps[frame.index]
        if self.jump_while_unlocked and not self.jumped_while_unlocked and self.unlocked():
            self.jumped_while_unlocked = True
            self.clock.offset = self.jump_while_unlocked
        return replace(frame, source_ts=None, t_mono=time.monotonic(), t_wall=time.time())

    def close(self) -> None:
        self.inner.close()


def run(site: Path, engine, monkeypatch, cooldown: float) -> tuple[Daemon, MockFactory, list]:
    """Lin walks up, leaves for 1.2 s and comes back; the wall clock jumps 50 years back
    while the door is unlocked for the first visit, and 50 years forward before the second."""
    clock = WallClock()
    monkeypatch.setattr(time, "time", clock)
    cfg = load_config(site / "config.yaml")
    cfg = cfg.model_copy(update={
        "liveness": cfg.liveness.model_copy(update={"mode": "off"}),
        "voice": cfg.voice.model_copy(update={"enabled": False}),
        "decision": cfg.decision.model_copy(update={"cooldown_seconds": cooldown,
                                                    "unknown_log_seconds": 0.0}),
        "door": cfg.door.model_copy(update={"unlock_seconds": UNLOCK_SECONDS}),
    })
    db = cfg.path(cfg.gallery.db)
    good, _ = templates_from_images(engine, [PEOPLE / "lin_manuel_miranda/lin1.png"])
    with Gallery(db) as g:
        enroll(g, "lin_manuel_miranda", good)
    factory = MockFactory()
    relay = factory.pin(cfg.door.pin)

    def unlocked_and_logged() -> bool:
        """The door is open and the grant's event written (the relay opens on the
        outputs' thread, the event is written after: the jump must come after both)."""
        if not relay.state:
            return False
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            row = c.execute("SELECT count(*) FROM events WHERE kind = 'access'").fetchone()
        return bool(row[0])

    camera = LiveCamera(LoopSource(OpenCVSource(str(CLIP), "file"), loops=2), clock,
                        jumps={330: +FIFTY_YEARS}, pause_at=275, pause=1.2,
                        unlocked=unlocked_and_logged, jump_while_unlocked=-FIFTY_YEARS,
                        locked=lambda: not relay.state)
    daemon = Daemon(cfg, db, source=camera, realtime=False, pin_factory=factory,
                    handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        assert daemon.run() == 0
    finally:
        daemon.close()
    with Gallery(db) as g:
        events = sorted((e for e in g.events() if e.kind in ("access", "door")),
                        key=lambda e: e.id)
    return daemon, factory, events


def year(ts: str) -> int:
    return datetime.fromisoformat(ts).astimezone(UTC).year


def test_a_wall_clock_jump_neither_opens_a_cooldown_early_nor_confuses_the_events(
    site, engine, monkeypatch
) -> None:
    # An hour's cooldown: the two visits are seconds apart here, minutes on a
    # slow CPU (under emulation 5 s ran out between them), never an hour;
    # a cooldown on the wall clock would open at once after its +50 years jump.
    daemon, factory, events = run(site, engine, monkeypatch, cooldown=3600.0)
    now = datetime.fromtimestamp(REAL_TIME(), UTC).year
    grants = [e for e in events if e.decision == "granted"]
    assert len(grants) == 1  # the second visit, 50 years "later", is within the cooldown
    # The relay: one pulse, as long as configured, though the clock jumped while it was open.
    states = factory.pin(daemon.cfg.door.pin).states
    assert [bool(s.state) for s in states] == [False, True, False]
    # Time spent unlocked: as configured, not 0 nor 50 years; the upper bound
    # leaves room for a slow CPU's late timer thread.
    assert UNLOCK_SECONDS * 0.9 <= states[2].timestamp < UNLOCK_SECONDS + 10
    # Both clocks on every event: the wall one as it read, the monotonic one in order.
    assert all(e.ts and e.mono is not None for e in events)
    assert [e.mono for e in events] == sorted(e.mono for e in events)
    years = [(e.kind, e.decision or e.reason, year(e.ts)) for e in events]
    # SFace recognises Lin on both visits (MobileFaceNet refused some of his frames,
    # which logged denials here): the second visit, 50 years "later" by the wall
    # clock, is inside the monotonic cooldown, so it is the same visit and logs nothing.
    assert years[:2] == [("access", "granted", now), ("door", "unlocked", now)]
    assert years[2][:2] == ("door", "locked") and abs(years[2][2] - (now - 50)) <= 1
    assert len(events) == 3


def test_the_same_run_with_a_short_cooldown_lets_lin_in_twice(site, engine, monkeypatch) -> None:
    """The control: the second visit is a real one, only the cooldown held it back above."""
    _, _, events = run(site, engine, monkeypatch, cooldown=0.5)
    grants = [e for e in events if e.decision == "granted"]
    assert len(grants) == 2
    assert abs(year(grants[1].ts) - (datetime.now(UTC).year + 50)) <= 1


class DeadCamera(Source):
    """A camera that never opens; every attempt throws the wall clock 50 years the other way."""

    name, finite, fps = "dead", False, 30.0

    def __init__(self, clock: WallClock) -> None:
        self.clock = clock
        self.attempts: list[float] = []

    def open(self) -> None:
        self.attempts.append(time.monotonic())
        self.clock.offset = -FIFTY_YEARS if self.clock.offset >= 0 else FIFTY_YEARS
        raise CameraError("dead: no such device")

    def read(self) -> Frame | None:
        raise CameraError("dead: not open")

    def close(self) -> None:
        pass


def test_camera_reopen_backoff_ignores_the_wall_clock(monkeypatch) -> None:
    clock = WallClock()
    monkeypatch.setattr(time, "time", clock)
    camera = DeadCamera(clock)
    with FrameGrabber(camera, reopen_first_seconds=0.05, reopen_max_seconds=0.2):
        deadline = time.monotonic() + 60
        while len(camera.attempts) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(camera.attempts)]
    assert len(gaps) >= 5
    # Never shorter than the backoff (a wall-clock wait would be 0 or 50 years);
    # the upper bound leaves a slow CPU room to be late.
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=False):
        assert expected * 0.9 <= gap <= expected + 0.5, gaps
