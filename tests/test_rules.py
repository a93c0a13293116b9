"""Access rules (edge/rules.py): the schedule parser and its evaluation, DST and overnight."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from edge.rules import (
    NOT_THIS_DOOR,
    OUTSIDE_SCHEDULE,
    Place,
    Rule,
    RuleError,
    parse_doors,
    parse_schedule,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: ZoneInfo = BERLIN) -> datetime:
    """A wall-clock time at the door, as the aware UTC instant the daemon would see."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("mon-fri 07:00-19:00", "mon-fri 07:00-19:00"),
        ("mon-fri 07:00-19:00, sat 09:00-13:00", "mon-fri 07:00-19:00, sat 09:00-13:00"),
        ("Mon-Fri 7:00-19:00; SAT 09:00-13:00", "mon-fri 07:00-19:00, sat 09:00-13:00"),
        ("22:00-06:00", "daily 22:00-06:00"),
        ("fri-mon 20:00-24:00", "fri-mon 20:00-24:00"),
        ("weekends", "sat-sun 00:00-24:00"),
        ("monday 08:00-09:00", "mon 08:00-09:00"),
        ("always", "always"),
        ("", "always"),
    ],
)
def test_parse_round_trips_through_the_canonical_text(text: str, canonical: str) -> None:
    s = parse_schedule(text)
    assert s.text() == canonical
    assert parse_schedule(s.text()) == s


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("mon-fri 7-19", "'7' is not a time"),
        ("mon-fri 07:00-19:00, xyz 09:00-10:00", "'xyz 09:00-10:00': 'xyz' is not a day"),
        ("mon-fri 25:00-26:00", "'25:00' is not a time of day"),
        ("mon 07:61-08:00", "'07:61' is not a time of day"),
        ("mon 07:00-07:00", "starts and ends at the same time"),
        ("mon 24:00-06:00", "cannot start at 24:00"),
        ("mon-fri 07:00-19:00,, sat", "an empty range"),
        ("mon 07:00-19:00 08:00-09:00", "two time ranges"),
        ("mon tue 07:00-19:00", "two day parts"),
        ("07:00-19:00 mon", "the days come before the time"),
        ("mon 07:00", "'07:00' is not a time range"),
        ("mon-mon 07:00-08:00", "from a day to itself"),
        ("mon 07:00-19:00 x", "two day parts"),
    ],
)
def test_bad_schedules_are_one_clear_error_naming_the_part(text: str, names: str) -> None:
    with pytest.raises(RuleError) as e:
        parse_schedule(text)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"schedule {text!r}")
    assert names in msg


def test_weekday_range_in_the_doors_zone() -> None:
    s = parse_schedule("mon-fri 07:00-19:00, sat 09:00-13:00")
    place = Place("front", BERLIN)
    # 2026-03-02 is a Monday.
    assert s.allows(place.local(at("2026-03-02 07:00")))
    assert s.allows(place.local(at("2026-03-06 18:59")))
    assert not s.allows(place.local(at("2026-03-06 19:00")))  # the end is exclusive
    assert not s.allows(place.local(at("2026-03-02 06:59")))
    assert s.allows(place.local(at("2026-03-07 12:00")))  # Saturday morning
    assert not s.allows(place.local(at("2026-03-07 13:30")))
    assert not s.allows(place.local(at("2026-03-08 10:00")))  # Sunday


def test_overnight_range_belongs_to_the_day_it_starts() -> None:
    s = parse_schedule("fri 22:00-06:00")
    place = Place("front", BERLIN)
    assert s.allows(place.local(at("2026-03-06 23:30")))  # Friday night
    assert s.allows(place.local(at("2026-03-07 05:59")))  # Saturday early: still Friday's
    assert not s.allows(place.local(at("2026-03-07 06:00")))
    assert not s.allows(place.local(at("2026-03-06 05:00")))  # Friday early is Thursday's
    assert not s.allows(place.local(at("2026-03-07 23:00")))  # Saturday night
    # Sunday night runs into Monday morning across the week's end.
    sun = parse_schedule("sun 22:00-06:00")
    assert sun.allows(place.local(at("2026-03-09 03:00")))  # Monday 03:00


def test_wall_clock_times_hold_across_daylight_saving() -> None:
    """07:00 is 07:00 local in winter (06:00 UTC) and summer (05:00 UTC)."""
    rule = Rule(None, parse_schedule("daily 07:00-19:00"))
    place = Place("front", BERLIN)
    winter_0630_utc = datetime(2026, 1, 15, 6, 30, tzinfo=UTC)  # 07:30 CET
    summer_0530_utc = datetime(2026, 7, 15, 5, 30, tzinfo=UTC)  # 07:30 CEST
    summer_0430_utc = datetime(2026, 7, 15, 4, 30, tzinfo=UTC)  # 06:30 CEST
    assert rule.refusal(place, winter_0630_utc) is None
    assert rule.refusal(place, summer_0530_utc) is None
    assert rule.refusal(place, summer_0430_utc) == OUTSIDE_SCHEDULE
    # The night the clocks go forward (2026-03-29 02:00 -> 03:00 CET -> CEST):
    # an overnight range still ends at 06:00 local, which is 04:00 UTC.
    night = Rule(None, parse_schedule("sat 22:00-06:00"))
    assert night.refusal(place, datetime(2026, 3, 29, 3, 59, tzinfo=UTC)) is None
    assert night.refusal(place, datetime(2026, 3, 29, 4, 0, tzinfo=UTC)) == OUTSIDE_SCHEDULE
    # ... and the night they go back (2026-10-25 03:00 CEST -> 02:00 CET): 06:00 CET = 05:00 UTC.
    assert night.refusal(place, datetime(2026, 10, 25, 4, 59, tzinfo=UTC)) is None
    assert night.refusal(place, datetime(2026, 10, 25, 5, 0, tzinfo=UTC)) == OUTSIDE_SCHEDULE


def test_the_same_instant_differs_by_door_zone() -> None:
    rule = Rule(None, parse_schedule("mon-fri 09:00-17:00"))
    t = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 16:00 Berlin, 10:00 New York, 00:00 Tokyo
    assert rule.refusal(Place("a", BERLIN), t) is None
    assert rule.refusal(Place("b", ZoneInfo("America/New_York")), t) is None
    assert rule.refusal(Place("c", ZoneInfo("Asia/Tokyo")), t) == OUTSIDE_SCHEDULE


def test_doors_come_before_the_schedule_and_all_means_no_limit() -> None:
    rule = Rule(parse_doors("front, lab"), parse_schedule("mon 09:00-10:00"))
    monday_0930 = at("2026-03-02 09:30")
    assert rule.refusal(Place("lab", BERLIN), monday_0930) is None
    assert rule.refusal(Place("back", BERLIN), monday_0930) == NOT_THIS_DOOR
    assert rule.refusal(Place("front", BERLIN), at("2026-03-02 11:00")) == OUTSIDE_SCHEDULE
    assert rule.refusal(None, at("2026-03-02 11:00")) is None  # not at a door: not checked
    assert parse_doors("all") is None
    assert Rule.from_columns(None, None).open
    assert Rule.from_columns("front", "always") == Rule(frozenset({"front"}), None)


@pytest.mark.parametrize("text", ["front,,lab", "front door", "", "a/b"])
def test_bad_door_lists_are_refused(text: str) -> None:
    with pytest.raises(RuleError, match=r"^doors .*is not a door name"):
        parse_doors(text)


def test_unknown_time_zone_is_refused() -> None:
    assert zone(None) is None
    assert zone("Europe/Berlin") == BERLIN
    with pytest.raises(RuleError, match="not a known IANA zone"):
        zone("Mars/Olympus")
