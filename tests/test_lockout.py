"""Lockout as pure logic: what counts as a failure, when grants stop, when they resume."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

from edge.camera import FolderSource
from edge.config import DecisionConfig, LivenessConfig, SecurityConfig
from edge.daemon import Daemon
from edge.decision import Decider, Lockout, Tracker, Vote
from edge.gallery import Gallery

from .conftest import FACES
from .test_daemon import config, enroll_photos, relay_states
from .test_decision import BOX, feed, match

UNKNOWN = [None] * 4


def make(mode="off", failures=3, window=60.0, seconds=30.0, **dc):
    lc = LivenessConfig(mode=mode)
    sec = SecurityConfig(
        lockout_failures=failures, lockout_window_seconds=window, lockout_seconds=seconds
    )
    dc.setdefault("agree_matches", 2)
    return Tracker(10, lc), Decider(DecisionConfig(**dc), lc, sec)


def visits(tracker, decider, names_per_visit, t0=0.0, gap=2.0, **kw):
    """One new track per visit, each ``gap`` seconds after the last (longer than a track lives)."""
    out = []
    for k, names in enumerate(names_per_visit):
        start = 1000 * (k + int(t0))  # frame numbers keep rising, as a camera's do
        out += feed(tracker, decider, names, start=start, t0=t0 + k * gap - start / 30, **kw)
    return out


def test_lockout_starts_after_n_failures_in_the_window_and_ends_after_its_time():
    lock = Lockout(SecurityConfig(lockout_failures=3, lockout_window_seconds=10,
                                  lockout_seconds=30))
    lock.fail(0.0, "unknown face")
    lock.fail(4.0, "liveness")
    assert not lock.active(5.0) and lock.pop_alarms(5.0) == []
    lock.fail(9.0, "unknown face")
    assert lock.active(9.0)
    (start,) = lock.pop_alarms(9.0)
    assert (start.state, start.t, start.failures) == ("started", 9.0, 3)
    assert "3 failed attempts within 10 s (1 liveness, 2 unknown face)" in start.reason
    assert lock.active(38.9) and lock.pop_alarms(38.9) == []
    assert not lock.active(39.0)
    assert [(a.state, a.t) for a in lock.pop_alarms(40.0)] == [("ended", 39.0)]
    assert lock.pop_alarms(41.0) == []


def test_failures_spread_wider_than_the_window_never_lock():
    lock = Lockout(SecurityConfig(lockout_failures=3, lockout_window_seconds=10))
    for t in range(0, 100, 6):
        lock.fail(float(t), "unknown face")
        assert not lock.active(float(t))
    assert lock.pop_alarms(100.0) == []


def test_an_attacker_who_carries_on_is_locked_out_again_at_once():
    lock = Lockout(SecurityConfig(lockout_failures=2, lockout_window_seconds=60,
                                  lockout_seconds=5))
    lock.fail(0.0, "liveness")
    lock.fail(1.0, "liveness")
    lock.fail(3.0, "liveness")  # during the lockout: still counted
    assert not lock.active(6.0)
    lock.fail(7.0, "liveness")
    assert lock.active(7.0)
    assert [a.state for a in lock.pop_alarms(7.0)] == ["started", "ended", "started"]


def test_a_clock_stepping_back_neither_ends_nor_stretches_the_lockout():
    lock = Lockout(SecurityConfig(lockout_failures=1, lockout_seconds=10))
    lock.fail(100.0, "unknown face")
    assert lock.active(104.0)
    assert lock.active(0.0)  # a video reopened: its clock starts again at 0 …
    assert lock.active(5.9)  # … 4 + 5.9 s elapsed
    assert not lock.active(6.0)  # 4 + 6 = 10 s


def test_a_zero_second_lockout_only_raises_the_alarm():
    lock = Lockout(SecurityConfig(lockout_failures=1, lockout_seconds=0))
    lock.fail(1.0, "unknown face")
    assert not lock.active(1.0)
    assert [a.state for a in lock.pop_alarms(1.0)] == ["started", "ended"]


def test_a_photo_held_up_for_a_minute_is_one_failure():
    tracker, decider = make(failures=2)
    feed(tracker, decider, [None] * 1800)  # 60 s at 30 fps, one track
    assert not decider.lockout.active(60.0)
    assert decider.pop_alarms(60.0) == []


def test_photo_after_photo_trips_the_lockout_and_refuses_the_next_grant():
    tracker, decider = make(failures=3, unknown_log_seconds=60)
    ds = visits(tracker, decider, [UNKNOWN, UNKNOWN, UNKNOWN, ["ann"] * 6])
    # Unknown faces are logged at most once a minute, but every one counts.
    assert [(d.decision, d.name, d.reason) for d in ds] == [
        ("denied", None, "unknown face (nearest x)"),
        ("denied", "ann", "lockout"),  # once for the track, not every frame
    ]
    (alarm,) = decider.pop_alarms(6.2)
    assert alarm.state == "started" and "3 unknown face" in alarm.reason


def test_liveness_failures_count_once_per_track():
    tracker, decider = make("passive", failures=2)
    ds = visits(tracker, decider, [["ann"] * 60], passive=0.01)
    assert [d.reason.split(":")[0] for d in ds] == ["liveness"]
    assert not decider.lockout.active(2.0)
    visits(tracker, decider, [["ann"] * 6], t0=10.0, passive=0.01)
    assert decider.lockout.active(10.5)
    ds = visits(tracker, decider, [["ann"] * 6], t0=20.0, passive=0.97)
    assert [(d.decision, d.reason) for d in ds] == [("denied", "lockout")]


def test_the_waiting_track_is_let_in_when_the_lockout_ends():
    tracker, decider = make(failures=1, seconds=3.0)
    visits(tracker, decider, [UNKNOWN])
    ds = visits(tracker, decider, [["ann"] * 90], t0=2.0)  # 3 s at the door
    assert [(d.decision, d.reason) for d in ds] == [
        ("denied", "lockout"),
        ("granted", "recognised; liveness off"),
    ]
    assert [a.state for a in decider.pop_alarms(5.0)] == ["started", "ended"]


def test_a_face_recognised_after_turning_is_not_a_failure():
    tracker, decider = make(failures=2)
    turned = [None, None, "ann", "ann"]
    # The second visit falls in ann's cooldown: no second grant, and no failure either.
    ds = visits(tracker, decider, [turned, turned, UNKNOWN])
    assert [d.decision for d in ds] == ["denied", "granted"]
    assert not decider.lockout.active(6.1)


def test_disabled_people_do_not_count_as_failures():
    tracker, decider = make(failures=1)
    for k in range(3):
        (track,) = tracker.update([BOX], k * 2.0, k * 100)
        m = match("ann", active=False)
        track.votes.extend([Vote(k * 100, "ann", 0.7, m)] * 2)
        decider.consider(track, k * 2.0, k * 100)
    assert not decider.lockout.active(10.0)


def test_the_default_decider_locks_after_five_and_keeps_its_lockout_across_a_reload():
    lc = LivenessConfig(mode="off")
    tracker, decider = Tracker(10, lc), Decider(DecisionConfig(agree_matches=2), lc)
    visits(tracker, decider, [UNKNOWN] * 4)
    assert not decider.lockout.active(8.0)
    visits(tracker, decider, [UNKNOWN], t0=8.0)
    assert decider.lockout.active(8.5)
    assert decider.lockout.locked
    longer = SecurityConfig(lockout_seconds=600)
    reloaded = Decider(DecisionConfig(agree_matches=2), lc, longer, lockout=decider.lockout)
    assert reloaded.lockout is decider.lockout and reloaded.lockout.cfg is longer
    ds = visits(Tracker(10, lc), reloaded, [["ann"] * 3], t0=10.0)
    assert [d.reason for d in ds] == ["lockout"]


# --------------------------------------------------------------- end to end, in the daemon


def scene(folder: Path, *shots: tuple[Path | None, int]) -> FolderSource:
    """A folder source at 5 fps: each shot is a photo (None: an empty grey frame) held n frames."""
    folder.mkdir()
    blank = np.full((640, 480, 3), 128, np.uint8)
    i = 0
    for photo, n in shots:
        for _ in range(n):
            if photo is None:
                cv2.imwrite(str(folder / f"{i:04d}.png"), blank)
            else:
                shutil.copyfile(photo, folder / f"{i:04d}.jpg")
            i += 1
    return FolderSource(folder, fps=5.0)


def ends_once_unlocked(source: FolderSource, relay) -> None:
    """Hold ``source``'s end until the relay has opened (60 s at most).

    The grant is in the last frames and the relay opens on the outputs' thread:
    ended at once, the daemon would close first and rightly drop the pending
    unlock (fail-secure), which says nothing about the lockout under test.
    """
    read = source.read

    def read_then_wait():
        frame = read()
        if frame is None:
            deadline = time.monotonic() + 60.0
            while not any(s.state for s in relay.states) and time.monotonic() < deadline:
                time.sleep(0.02)
        return frame

    source.read = read_then_wait  # type: ignore[method-assign]


def test_photo_after_photo_locks_the_door_then_the_live_face_is_refused(site, tmp_path, engine):
    poster, tablet, live = (FACES / f"spoof/image_{n}.jpg" for n in ("F1", "F2", "T1"))
    cfg = config(site, liveness={"mode": "passive"}, voice={"enabled": False},
                 security={"lockout_failures": 3, "lockout_seconds": 4.0})
    enroll_photos(cfg, "her", live, engine=engine)
    gap = (None, 6)  # 1.2 s of nobody: the track ends
    source = scene(tmp_path / "attack", (poster, 5), gap, (tablet, 5), gap, (poster, 5), gap,
                   (live, 5), (None, 25), (live, 5))
    factory = MockFactory()
    ends_once_unlocked(source, factory.pin(cfg.door.pin))
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db), source=source, voice=None,
                    pin_factory=factory, handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        daemon.run()
    finally:
        daemon.close()

    with Gallery(cfg.path(cfg.gallery.db)) as g:
        access = [(e.name, e.decision, e.reason.split(":")[0]) for e in g.events(kind="access")]
        alarms = [(e.detail["lockout"], e.reason) for e in g.events(kind="alarm")]
    assert access == [
        (None, "denied", "unknown face (nearest her)"),  # the poster is nobody enrolled
        ("her", "denied", "liveness"),  # the tablet shows her, but is not alive
        # the poster again: counted, not logged (unknown faces are logged every 10 s)
        ("her", "denied", "lockout"),  # her live face, during the lockout
        ("her", "granted", "recognised; passive check passed"),  # after it
    ]
    assert [a[0] for a in alarms] == ["started", "ended"]
    assert "3 failed attempts" in alarms[0][1] and "1 liveness, 2 unknown face" in alarms[0][1]
    assert relay_states(factory, cfg.door.pin) == [False, True, False]
