"""From faces in frames to access decisions: tracking, voting, liveness, cooldowns, lockout.

Pure logic on values, no models and no hardware, so every rule is tested on
its own. Time is a monotonic clock in seconds (the frames' own timestamps),
never the wall clock: a Pi that boots in 1970 and is corrected by NTP must
not open a cooldown early or hold one for decades.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .config import DecisionConfig, LivenessConfig, SecurityConfig
from .detect import iou
from .liveness import BlinkDetector, LivenessResult, passive_verdict
from .match import Match

#: A track not seen for this long is dropped.
TRACK_TIMEOUT_SECONDS = 1.0
#: A face joins a track when its box overlaps the track's last box this much.
TRACK_IOU = 0.3


@dataclass
class Vote:
    """One frame's recognition of a track: who (None = nobody) and how sure."""

    frame: int
    name: str | None
    similarity: float
    match: Match


@dataclass
class Track:
    """One face followed across frames, and everything the decision needs of it."""

    id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    first_frame: int
    votes: deque[Vote]
    passive: list[float] = field(default_factory=list)
    blink: BlinkDetector | None = None
    decided: bool = False
    reported_unknown: bool = False
    failure: int | None = None  # this track's count in the lockout, if it failed
    refused_lockout: bool = False


@dataclass(frozen=True)
class Decision:
    """What to do about a track: grant or deny, whom, and why."""

    decision: Literal["granted", "denied"]
    name: str | None
    display_name: str | None
    similarity: float | None
    liveness: float | None
    reason: str
    track: int
    latency: float  # seconds from the track's first frame to this decision (frame time)
    # The gallery's id of ``name``: snapshots follow it, and a grant is re-checked by it.
    person_id: int | None = None


@dataclass(frozen=True)
class Alarm:
    """A lockout starting or ending: the daemon writes each as one ``alarm`` event."""

    state: Literal["started", "ended"]
    t: float  # frame time at which it was noticed
    reason: str
    failures: int  # failures within the window when it started (0 when it ended)


class Lockout:
    """Too many failed attempts in a short time stop every grant for a while.

    The :class:`Decider` reports one failure per track that showed an
    unknown face or failed liveness, however long the face stays: a photo
    held up for a minute is one failure, photo after photo (new tracks) add
    up. ``lockout_failures`` of them within ``lockout_window_seconds`` start
    a lockout of ``lockout_seconds``; failures during a lockout keep counting,
    so an attacker who carries on is locked out again as soon as it ends.

    Time is the frames' monotonic clock. A clock that steps backwards (a
    video file reopened) counts as no time passing, so a lockout is neither
    cut short nor stretched by it.
    """

    def __init__(self, cfg: SecurityConfig) -> None:
        self.cfg = cfg
        self._failures: dict[int, tuple[float, str]] = {}  # number -> (elapsed, why)
        self._count = 0
        self._until: float | None = None  # elapsed time the lockout ends at
        self._alarms: list[Alarm] = []
        self._elapsed = 0.0
        self._last_t: float | None = None

    def _tick(self, t: float) -> float:
        """Frame time ``t`` as seconds elapsed on a clock that never runs backwards."""
        if self._last_t is not None and t > self._last_t:
            self._elapsed += t - self._last_t
        self._last_t = t
        return self._elapsed

    def fail(self, t: float, why: str) -> int:
        """Count one failed attempt at frame time ``t``; returns its number for :meth:`forgive`."""
        now = self._tick(t)
        self.active(t)
        self._count += 1
        self._failures[self._count] = (now, why)
        window = self.cfg.lockout_window_seconds
        self._failures = {k: v for k, v in self._failures.items() if now - v[0] < window}
        n = len(self._failures)
        if self._until is None and n >= self.cfg.lockout_failures:
            self._until = now + self.cfg.lockout_seconds
            whys = [w for _, w in self._failures.values()]
            kinds = ", ".join(f"{whys.count(w)} {w}" for w in sorted(set(whys)))
            self._alarms.append(Alarm(
                "started", t,
                f"lockout: {n} failed attempts within {window:g} s ({kinds}); "
                f"no grants for {self.cfg.lockout_seconds:g} s",
                n,
            ))
        return self._count

    def forgive(self, failure: int) -> None:
        """Take back a failure: its track turned out to be someone let in (or due to be)."""
        self._failures.pop(failure, None)

    @property
    def locked(self) -> bool:
        """Whether a lockout holds as of the last frame seen (for status; does not tick)."""
        return self._until is not None

    def active(self, t: float) -> bool:
        """Whether grants are refused at frame time ``t`` (noticing the end of a lockout)."""
        now = self._tick(t)
        if self._until is not None and now >= self._until:
            self._until = None
            self._alarms.append(Alarm("ended", t, "lockout ended", 0))
        return self._until is not None

    def pop_alarms(self, t: float) -> list[Alarm]:
        """The lockout starts and ends since the last call, oldest first, as of time ``t``."""
        self.active(t)
        alarms, self._alarms = self._alarms, []
        return alarms


class Tracker:
    """Greedy IoU association of each frame's faces to live tracks."""

    def __init__(self, window_frames: int, liveness: LivenessConfig) -> None:
        self.window_frames = window_frames
        self.liveness = liveness
        self.tracks: dict[int, Track] = {}
        self._next = 1

    def update(
        self, boxes: list[tuple[float, float, float, float]], t: float, frame: int
    ) -> list[Track]:
        """The track of each box (same order), creating and expiring tracks as needed."""
        for tid in [k for k, tr in self.tracks.items() if t - tr.last_seen > TRACK_TIMEOUT_SECONDS]:
            del self.tracks[tid]
        free = dict(self.tracks)
        out = []
        for box in boxes:
            best, best_iou = None, TRACK_IOU
            if free:
                ids = list(free)
                overlaps = iou(np.array(box), np.array([free[i].box for i in ids]))
                k = int(np.argmax(overlaps))
                if overlaps[k] >= best_iou:
                    best = free.pop(ids[k])
            if best is None:
                best = self._new(box, t, frame)
            best.box, best.last_seen = box, t
            out.append(best)
        return out

    def _new(self, box: tuple[float, float, float, float], t: float, frame: int) -> Track:
        blink = None
        if self.liveness.mode in ("active", "both"):
            blink = BlinkDetector(
                self.liveness.blink_ear_threshold, self.liveness.blink_window_seconds
            )
        tr = Track(self._next, box, t, t, frame, deque(maxlen=self.window_frames), blink=blink)
        self.tracks[tr.id] = tr
        self._next += 1
        return tr


def liveness_verdict(track: Track, cfg: LivenessConfig, t: float) -> LivenessResult | None:
    """The track's liveness: a pass, a final failure, or None while still undecided."""
    if cfg.mode == "off":
        return LivenessResult(True, None, "liveness off")
    passive = blink = None
    if cfg.mode in ("passive", "both"):
        passive = passive_verdict(track.passive, cfg.passive_threshold, cfg.passive_frames)
        if passive.score is None:
            return None  # not enough frames yet
        if not passive.live:
            return LivenessResult(False, passive.score, f"liveness: {passive.reason}")
    if cfg.mode in ("active", "both"):
        assert track.blink is not None
        if not track.blink.blinked:
            if t - track.first_seen > cfg.blink_window_seconds:
                return LivenessResult(
                    False, None, f"liveness: no blink within {cfg.blink_window_seconds:g} s"
                )
            return None
        blink = track.blink.result()
    score = passive.score if passive else None
    reason = " and ".join(r.reason for r in (passive, blink) if r is not None)
    return LivenessResult(True, score, reason)


class Decider:
    """Turns a track's votes and liveness into at most one decision per track.

    Grants need ``agree_matches`` votes for the same person within the last
    ``window_frames`` frames, a liveness pass, a person who is active and
    within their validity window, and no grant to them in the last
    ``cooldown_seconds``. Unknown faces are reported at most every
    ``unknown_log_seconds``.

    Unknown faces and liveness failures are counted by a :class:`Lockout`
    (``security``, default :class:`SecurityConfig`); while it holds, a grant
    is refused with reason "lockout", once per track (the same track is let
    in if it is still there when the lockout ends). Pass ``lockout`` to keep
    one across a config reload (it takes the new ``security`` settings). The
    daemon drains :meth:`pop_alarms` every frame and writes each as an
    ``alarm`` event.
    """

    def __init__(
        self,
        cfg: DecisionConfig,
        liveness: LivenessConfig,
        security: SecurityConfig | None = None,
        lockout: Lockout | None = None,
    ) -> None:
        self.cfg = cfg
        self.liveness = liveness
        self.lockout = lockout or Lockout(security or SecurityConfig())
        if security is not None:
            self.lockout.cfg = security
        self._last_grant: dict[str, float] = {}
        self._last_denial: dict[str, float] = {}
        self._last_unknown = -float("inf")

    def consider(self, track: Track, t: float, frame: int) -> Decision | None:
        """A decision for ``track`` at frame time ``t`` (frame number ``frame``), or None."""
        if track.decided or not track.votes:
            return None
        need = self.cfg.agree_matches
        recent = [v for v in track.votes if v.frame > frame - self.cfg.window_frames]
        if not recent:
            return None
        names = [v.name for v in recent]
        latest = recent[-1]
        if latest.name is not None and names.count(latest.name) >= need:
            return self._known(track, latest, recent, t)
        if names.count(None) >= need:
            return self._unknown(track, latest, t)
        return None

    def pop_alarms(self, t: float) -> list[Alarm]:
        """Lockout starts and ends since the last call (see :meth:`Lockout.pop_alarms`)."""
        return self.lockout.pop_alarms(t)

    def _fail(self, track: Track, t: float, why: str) -> None:
        """Count ``track`` as a failed attempt, once however often it fails."""
        if track.failure is None:
            track.failure = self.lockout.fail(t, why)

    def _known(self, track: Track, vote: Vote, recent: list[Vote], t: float) -> Decision | None:
        name = vote.name
        assert name is not None
        live = liveness_verdict(track, self.liveness, t)
        if live is None:
            return None
        refusal = vote.match.refusal()
        if not live.live:
            self._fail(track, t, "liveness")
        elif refusal is None and track.failure is not None:
            self.lockout.forgive(track.failure)  # an unknown first, recognised once it turned
        if t - self._last_grant.get(name, -float("inf")) < self.cfg.cooldown_seconds:
            track.decided = True  # same visit: already let in
            return None
        sim = float(np.mean([v.similarity for v in recent if v.name == name]))
        if not live.live or refusal is not None:
            track.decided = True
            if t - self._last_denial.get(name, -float("inf")) < self.cfg.cooldown_seconds:
                return None
            self._last_denial[name] = t
            return Decision(
                "denied",
                name,
                vote.match.display_name,
                sim,
                live.score,
                live.reason if not live.live else str(refusal),
                track.id,
                t - track.first_seen,
                vote.match.person_id,
            )
        if self.lockout.active(t):
            if track.refused_lockout:
                return None
            track.refused_lockout = True
            return Decision("denied", name, vote.match.display_name, sim, live.score, "lockout",
                            track.id, t - track.first_seen, vote.match.person_id)
        track.decided = True
        self._last_grant[name] = t
        return Decision(
            "granted",
            name,
            vote.match.display_name,
            sim,
            live.score,
            f"recognised; {live.reason}",
            track.id,
            t - track.first_seen,
            vote.match.person_id,
        )

    def _unknown(self, track: Track, vote: Vote, t: float) -> Decision | None:
        # Reported once per track, but the track keeps voting: a face often
        # matches only once it turns to the camera.
        if track.reported_unknown:
            return None
        track.reported_unknown = True
        self._fail(track, t, "unknown face")
        if t - self._last_unknown < self.cfg.unknown_log_seconds:
            return None
        self._last_unknown = t
        nearest = f" (nearest {vote.match.nearest})" if vote.match.nearest else ""
        return Decision("denied", None, None, vote.similarity, None, "unknown face" + nearest,
                        track.id, t - track.first_seen)
