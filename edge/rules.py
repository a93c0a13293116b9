"""Access rules: which doors a person may use, and when (a weekly schedule).

A rule sits on top of the validity window (:mod:`edge.records`): someone
active and inside their window is still refused at a door not in their
list (``not_this_door``) or outside their schedule (``outside_schedule``).

A schedule is written the way a site manager says it::

    mon-fri 07:00-19:00, sat 09:00-13:00
    daily 06:00-22:00; sun 10:00-12:00
    mon-fri 22:00-06:00          (overnight: Monday 22:00 to Tuesday 06:00)

Ranges are separated by commas or semicolons. Each is a day part (``mon``,
``mon-fri``, ``fri-mon``, ``daily``, ``weekdays``, ``weekends``) and a time
part (``HH:MM-HH:MM``, end ``24:00`` allowed); either may be left out (a
day alone is all of that day, a time alone is every day). A range whose end
is before its start runs past midnight into the next day, and belongs to the
day it starts on. Times are wall-clock times in the door's time zone
(``door.timezone``, default the system's), so 07:00 stays 07:00 across a
daylight-saving change; :func:`parse_schedule` gives one clear error naming
the bad part, and the canonical text (:meth:`Schedule.text`) is what is
stored and shown.

The gallery stores a rule as two columns: ``doors`` (canonical comma list,
NULL = every door) and ``schedule`` (canonical text, NULL = always).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import EdgeError

__all__ = [
    "NOT_THIS_DOOR",
    "OPEN",
    "OUTSIDE_SCHEDULE",
    "Place",
    "Rule",
    "RuleError",
    "Schedule",
    "TimeRange",
    "door_place",
    "parse_doors",
    "parse_schedule",
    "zone",
]

#: The refusal reasons a rule gives (in events, logs and the decision).
NOT_THIS_DOOR = "not_this_door"
OUTSIDE_SCHEDULE = "outside_schedule"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = {
    "daily": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
}
_DOOR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
MINUTES_PER_DAY = 24 * 60


class RuleError(EdgeError, ValueError):
    """An access rule (doors or schedule) that cannot be understood."""


@dataclass(frozen=True)
class TimeRange:
    """One weekly range: on ``days`` (0 = Monday), from ``start`` to ``end`` minutes.

    ``end <= start`` (other than the whole day) runs past midnight: the range
    starts on a day in ``days`` and ends the next morning.
    """

    days: frozenset[int]
    start: int
    end: int

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def covers(self, weekday: int, minute: int) -> bool:
        """Whether the local time (``weekday`` 0-6, ``minute`` of the day) is inside."""
        if not self.overnight:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )

    def text(self) -> str:
        return f"{_days_text(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class Schedule:
    """A weekly schedule: the union of its :class:`TimeRange` s; no ranges is "always"."""

    ranges: tuple[TimeRange, ...] = ()

    @property
    def always(self) -> bool:
        return not self.ranges

    def allows(self, local: datetime) -> bool:
        """Whether the wall-clock time ``local`` (already in the door's zone) is inside."""
        if self.always:
            return True
        minute = local.hour * 60 + local.minute
        return any(r.covers(local.weekday(), minute) for r in self.ranges)

    def text(self) -> str:
        """The canonical form: what ``edge list`` shows and :func:`parse_schedule` reads back."""
        return ", ".join(r.text() for r in self.ranges) if self.ranges else "always"

    def column(self) -> str | None:
        """The gallery's ``schedule`` column: the canonical text, NULL for always."""
        return None if self.always else self.text()

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class Place:
    """Where a decision is made: the door's name and its time zone (None = the system's)."""

    door: str
    tz: tzinfo | None = None

    def local(self, now: datetime) -> datetime:
        """``now`` (aware) as wall-clock time at the door."""
        return now.astimezone(self.tz) if self.tz is not None else now.astimezone()


@dataclass(frozen=True)
class Rule:
    """A person's rule: ``doors`` (None = every door) and ``schedule`` (None = always)."""

    doors: frozenset[str] | None = None
    schedule: Schedule | None = None

    @classmethod
    def from_columns(cls, doors: str | None, schedule: str | None) -> Rule:
        """The rule of a gallery row (its ``doors`` and ``schedule`` columns)."""
        return cls(
            None if doors is None else frozenset(doors.split(",")),
            None if schedule is None else parse_schedule(schedule),
        ).normal()

    def normal(self) -> Rule:
        """The same rule with an "always" schedule written as no schedule."""
        if self.schedule is not None and self.schedule.always:
            return Rule(self.doors, None)
        return self

    @property
    def open(self) -> bool:
        """No restriction at all: every door, always."""
        return self.doors is None and self.schedule is None

    def refusal(self, place: Place | None, now: datetime | None = None) -> str | None:
        """Why the rule refuses entry at ``place`` at ``now`` (UTC default), or None.

        Without a place (a tool that is not a door) the rule is not checked.
        """
        if place is None or self.open:
            return None
        if self.doors is not None and place.door not in self.doors:
            return NOT_THIS_DOOR
        if self.schedule is not None:
            t = now if now is not None else datetime.now(UTC)
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            if not self.schedule.allows(place.local(t)):
                return OUTSIDE_SCHEDULE
        return None


#: The rule of someone with no restriction: every door, always.
OPEN = Rule()


def doors_column(doors: frozenset[str] | None) -> str | None:
    """The ``doors`` column for ``doors``: sorted names joined by commas, None for all."""
    return None if doors is None else ",".join(sorted(doors))


def parse_doors(text: str) -> frozenset[str] | None:
    """``"front,lab"`` as a set of door names; ``"all"`` (or ``"*"``) is every door (None)."""
    words = [w.strip() for w in text.replace(";", ",").split(",")]
    if [w.lower() for w in words] in (["all"], ["*"]):
        return None
    names = set()
    for w in words:
        if not _DOOR.match(w):
            shown = "an empty name" if not w else repr(w)
            raise RuleError(
                f"doors {text!r}: {shown} is not a door name (letters, digits, - and _),"
                " or give 'all'"
            )
        names.add(w)
    return frozenset(names)


def parse_schedule(text: str) -> Schedule:
    """Parse a weekly schedule; ``"always"`` (or empty) is the schedule that always allows.

    Raises :class:`RuleError` naming the range that is wrong and why.
    """
    if text.strip().lower() in ("", "always"):
        return Schedule()
    ranges = []
    parts = re.split(r"[,;]", text)
    for part in parts:
        words = part.split()
        if not words:
            raise RuleError(f"schedule {text!r}: an empty range (two separators in a row?)")
        try:
            ranges.append(_parse_range(words))
        except RuleError as e:
            where = f" {part.strip()!r}:" if len(parts) > 1 else ""
            raise RuleError(f"schedule {text!r}:{where} {e}") from None
    return Schedule(tuple(ranges))


def door_place(cfg: Any) -> Place:
    """This door's :class:`Place`: ``door.name`` (else the host name) and ``door.timezone``."""
    from .mqtt import door_name  # the one rule for a door's name, shared with MQTT

    return Place(door_name(cfg), zone(cfg.door.timezone))


def zone(name: str | None) -> tzinfo | None:
    """The time zone called ``name`` (IANA, e.g. Europe/Berlin); None = the system's own."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(f"time zone {name!r}: not a known IANA zone (e.g. Europe/Berlin)") from None


# --------------------------------------------------------------------------- parsing


def _parse_range(words: list[str]) -> TimeRange:
    day_part = time_part = None
    for w in words:
        if w[0].isdigit():
            if time_part is not None:
                raise RuleError("two time ranges; separate ranges with a comma")
            time_part = w
        else:
            if day_part is not None:
                raise RuleError("two day parts; write days as one word, e.g. 'mon-fri'")
            if time_part is not None:
                raise RuleError("the days come before the time, e.g. 'mon-fri 07:00-19:00'")
            day_part = w
    days = _parse_days(day_part) if day_part is not None else frozenset(range(7))
    if time_part is None:
        return TimeRange(days, 0, MINUTES_PER_DAY)
    start_text, sep, end_text = time_part.partition("-")
    if not sep:
        raise RuleError(f"{time_part!r} is not a time range (HH:MM-HH:MM)")
    start, end = _parse_time(start_text), _parse_time(end_text)
    if start == end:
        raise RuleError(f"{time_part!r} starts and ends at the same time (an empty range)")
    if start == MINUTES_PER_DAY:
        raise RuleError("a range cannot start at 24:00 (write 00:00 of the next day)")
    return TimeRange(days, start, end)


def _parse_days(word: str) -> frozenset[int]:
    w = word.lower()
    if w in _DAY_WORDS:
        return _DAY_WORDS[w]
    first, sep, last = w.partition("-")
    a = _day(first, word)
    if not sep:
        return frozenset({a})
    b = _day(last, word)
    if a == b:
        raise RuleError(f"{word!r}: a day range from a day to itself; write just {first!r}")
    return frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))  # fri-mon wraps


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str, word: str) -> int:
    if text in DAYS:
        return DAYS.index(text)
    if text in _FULL_DAYS:
        return _FULL_DAYS.index(text)
    where = f"{word!r}: " if word.lower() != text else ""
    raise RuleError(
        f"{where}{text!r} is not a day (mon tue wed thu fri sat sun, daily,"
        " weekdays, weekends)"
    )


def _parse_time(text: str) -> int:
    m = _TIME.match(text)
    if not m:
        raise RuleError(f"{text!r} is not a time (HH:MM, 24-hour)")
    h, mins = int(m.group(1)), int(m.group(2))
    if (h, mins) == (24, 0):
        return MINUTES_PER_DAY
    if h > 23 or mins > 59:
        raise RuleError(f"{text!r} is not a time of day (00:00-23:59, or 24:00 as an end)")
    return h * 60 + mins


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    """Days as the parser reads them: ``daily``, ``sat`` or ``mon-fri`` (the parser only
    makes one run of consecutive days per range, wrapping over Sunday)."""
    if days == _DAY_WORDS["daily"]:
        return "daily"
    start = next(d for d in range(7) if d in days and (d - 1) % 7 not in days)
    run = [d % 7 for d in range(start, start + 7) if d % 7 in days]
    if len(run) == 1:
        return DAYS[run[0]]
    return f"{DAYS[run[0]]}-{DAYS[run[-1]]}"
