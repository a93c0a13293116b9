"""Decision rules as pure logic: tracking, K-of-N votes, liveness gating, cooldowns."""

from __future__ import annotations

from edge.config import DecisionConfig, LivenessConfig
from edge.decision import Decider, Tracker, Vote, liveness_verdict
from edge.match import Match

BOX = (100.0, 100.0, 200.0, 200.0)


def match(name: str | None, sim: float = 0.7, active: bool = True) -> Match:
    if name is None:
        return Match(None, None, 0.1, -1.0, False, None, nearest="x")
    return Match(name, name.title(), sim, -1.0, True, 1, nearest=name, active=active)


def feed(tracker, decider, names, start=0, t0=0.0, passive=None, fps=30.0):
    """Run one face through frames voting ``names``; returns the decisions made."""
    out = []
    for i, name in enumerate(names):
        t = t0 + (start + i) / fps
        (track,) = tracker.update([BOX], t, start + i)
        m = match(name)
        track.votes.append(Vote(start + i, m.name, m.similarity, m))
        if passive is not None:
            track.passive.append(passive)
        d = decider.consider(track, t, start + i)
        if d:
            out.append(d)
    return out


def make(mode="off", **dc):
    lc = LivenessConfig(mode=mode)
    return Tracker(10, lc), Decider(DecisionConfig(**dc), lc)


def test_grant_needs_k_agreeing_votes():
    tracker, decider = make(agree_matches=3)
    ds = feed(tracker, decider, ["ann", "ann", "ann", "ann"])
    assert [(d.decision, d.name, d.track) for d in ds] == [("granted", "ann", 1)]
    assert abs(ds[0].latency - 2 / 30) < 1e-9


def test_votes_must_fall_within_the_window():
    tracker, decider = make(agree_matches=3, window_frames=4)
    ds = feed(tracker, decider, ["ann", None, None, None, None, "ann", None, None, None, "ann"])
    assert not [d for d in ds if d.decision == "granted"]


def test_cooldown_lets_one_visit_open_once_on_the_frame_clock():
    tracker, decider = make(agree_matches=2, cooldown_seconds=10)
    assert len(feed(tracker, decider, ["ann"] * 5)) == 1
    # The track is lost (2 s gap) and found again: still the same visit.
    assert feed(tracker, decider, ["ann"] * 5, start=60, t0=0.0) == []
    # 12 s later: a new visit.
    assert len(feed(tracker, decider, ["ann"] * 5, start=400)) == 1


def test_unknown_is_reported_once_per_track_and_rate_limited():
    tracker, decider = make(agree_matches=2, unknown_log_seconds=60)
    ds = feed(tracker, decider, [None] * 10)
    assert [(d.decision, d.name) for d in ds] == [("denied", None)]
    assert "unknown face" in ds[0].reason
    # A new track soon after: not logged again.
    assert feed(tracker, decider, [None] * 5, start=100) == []


def test_unknown_track_can_still_be_granted_when_the_face_turns():
    tracker, decider = make(agree_matches=3)
    ds = feed(tracker, decider, [None, None, None, "ann", "ann", "ann"])
    assert [d.decision for d in ds] == ["denied", "granted"]


def test_passive_liveness_gates_the_grant():
    tracker, decider = make("passive", agree_matches=2)
    ds = feed(tracker, decider, ["ann"] * 6, passive=0.01)
    assert [(d.decision, d.reason.split(":")[0]) for d in ds] == [("denied", "liveness")]
    tracker, decider = make("passive", agree_matches=2)
    ds = feed(tracker, decider, ["ann"] * 6, passive=0.97)
    assert [d.decision for d in ds] == ["granted"] and ds[0].liveness > 0.9


def test_passive_waits_for_enough_frames():
    tracker, _ = make("passive")
    (track,) = tracker.update([BOX], 0.0, 0)
    track.passive = [0.99, 0.99]
    assert liveness_verdict(track, LivenessConfig(mode="passive", passive_frames=3), 0.0) is None
    track.passive.append(0.99)
    assert liveness_verdict(track, LivenessConfig(mode="passive", passive_frames=3), 0.0).live


def test_active_needs_a_blink_within_the_window():
    lc = LivenessConfig(mode="active", blink_window_seconds=2.0, blink_ear_threshold=0.2)
    tracker = Tracker(10, lc)
    (track,) = tracker.update([BOX], 0.0, 0)
    for i, ear in enumerate([0.3, 0.3, 0.3]):
        track.blink.feed(ear, i / 30)
    assert liveness_verdict(track, lc, 1.0) is None
    no = liveness_verdict(track, lc, 2.5)
    assert no is not None and not no.live and "no blink" in no.reason
    for i, ear in enumerate([0.1, 0.3]):
        track.blink.feed(ear, 0.2 + i / 30)
    assert liveness_verdict(track, lc, 2.5).live


def test_inactive_people_are_denied_with_that_reason():
    tracker, decider = make(agree_matches=2)
    out = []
    for i in range(3):
        (track,) = tracker.update([BOX], i / 30, i)
        m = match("ann", active=False)
        track.votes.append(Vote(i, "ann", 0.7, m))
        d = decider.consider(track, i / 30, i)
        out += [d] if d else []
    assert [(d.decision, d.reason) for d in out] == [("denied", "inactive")]


def test_tracker_keeps_two_faces_apart_and_expires_lost_tracks():
    tracker = Tracker(10, LivenessConfig(mode="off"))
    a, b = tracker.update([BOX, (400.0, 100.0, 500.0, 200.0)], 0.0, 0)
    assert a.id != b.id
    a2, b2 = tracker.update([(402.0, 101.0, 502.0, 201.0), (101.0, 99.0, 201.0, 199.0)], 0.03, 1)
    assert (a2.id, b2.id) == (b.id, a.id)
    (c,) = tracker.update([BOX], 5.0, 150)
    assert c.id not in (a.id, b.id) and len(tracker.tracks) == 1
