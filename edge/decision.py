"""From faces in frames to access decisions: tracking, voting, liveness, cooldowns.

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

from .config import DecisionConfig, LivenessConfig
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
    frames: int = 0


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
            best.frames += 1
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
    """

    def __init__(self, cfg: DecisionConfig, liveness: LivenessConfig) -> None:
        self.cfg = cfg
        self.liveness = liveness
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

    def _known(self, track: Track, vote: Vote, recent: list[Vote], t: float) -> Decision | None:
        name = vote.name
        assert name is not None
        sims = [v.similarity for v in recent if v.name == name]
        sim = float(np.mean(sims))
        live = liveness_verdict(track, self.liveness, t)
        if live is None:
            return None
        if t - self._last_grant.get(name, -float("inf")) < self.cfg.cooldown_seconds:
            track.decided = True  # same visit: already let in
            return None
        refusal = vote.match.refusal()
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
            )
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
        )

    def _unknown(self, track: Track, vote: Vote, t: float) -> Decision | None:
        # Reported once per track, but the track keeps voting: a face often
        # matches only once it turns to the camera.
        if track.reported_unknown:
            return None
        track.reported_unknown = True
        if t - self._last_unknown < self.cfg.unknown_log_seconds:
            return None
        self._last_unknown = t
        nearest = f" (nearest {vote.match.nearest})" if vote.match.nearest else ""
        return Decision("denied", None, None, vote.similarity, None, "unknown face" + nearest,
                        track.id, t - track.first_seen)
