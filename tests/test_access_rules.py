"""Access rules in the gallery, the CLI and the daemon: doors and schedules (issue 10, part 3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from edge.cli import main
from edge.gallery import Gallery
from edge.rules import DAYS, NOT_THIS_DOOR, OUTSIDE_SCHEDULE, Place, parse_doors, parse_schedule

from .conftest import FACES
from .test_daemon import access_events, config, enroll_photos, folder_of, relay_states, run_daemon

RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None, "SUDO_USER": None})
PHOTO = FACES / "spoof/image_T1.jpg"


def edge(site: Path, *args: str):
    return RUNNER.invoke(main, [*args, "--config", str(site / "config.yaml")])


def test_edge_set_doors_and_schedule_round_trip(site: Path):
    db = site / "gallery.db"
    with Gallery(db) as g:
        g.add_person("rose")
    r = edge(site, "set", "rose", "--doors", "lab,front", "--schedule",
             "Mon-Fri 07:00-19:00; sat 09:00-13:00")
    assert r.exit_code == 0, r.output
    assert "doors front,lab, schedule mon-fri 07:00-19:00, sat 09:00-13:00" in r.stdout
    r = edge(site, "list", "--json")
    (p,) = json.loads(r.stdout)
    assert (p["doors"], p["schedule"]) == ("front,lab", "mon-fri 07:00-19:00, sat 09:00-13:00")
    r = edge(site, "list")
    assert "doors front,lab schedule mon-fri 07:00-19:00, sat 09:00-13:00" in r.stdout
    with Gallery(db) as g:
        (audit,) = g.events(kind="update")
        assert audit.detail == {"doors": "front,lab",
                                "schedule": "mon-fri 07:00-19:00, sat 09:00-13:00"}

    # A bad schedule (or door list) is one line naming the part, and changes nothing.
    before = db.read_bytes()
    r = edge(site, "set", "rose", "--schedule", "mon-fri 07:00-19:00, sun 7-9", "--notes", "x")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "'sun 7-9': '7' is not a time" in r.stderr
    assert "Traceback" not in r.stderr
    r = edge(site, "set", "rose", "--doors", "front door")
    assert r.exit_code == 1 and "'front door' is not a door name" in r.stderr
    assert db.read_bytes() == before

    # 'all' and 'always' clear the rule: the person may use every door, always.
    r = edge(site, "set", "rose", "--doors", "all", "--schedule", "always")
    assert r.exit_code == 0, r.output
    with Gallery(db) as g:
        p = g.person("rose")
    assert (p.doors, p.schedule) == (None, None) and p.rule.open
    assert "doors" not in edge(site, "list").stdout


def test_may_enter_checks_the_rule_at_the_door(site: Path):
    """The re-check before a grant (Daemon._recheck) reads the rule as well as the window."""
    with Gallery(site / "gallery.db") as g:
        pid = g.add_person("rose").id
        g.update("rose", doors=parse_doors("front"), schedule=parse_schedule("mon 09:00-10:00"))
        monday_0930 = "2026-03-02T09:30:00+00:00"
        front, back = Place("front", UTC), Place("back", UTC)
        assert g.may_enter(pid, monday_0930, place=front) is None
        assert g.may_enter(pid, monday_0930, place=back) == NOT_THIS_DOOR
        assert g.may_enter(pid, "2026-03-02T10:00:00+00:00", place=front) == OUTSIDE_SCHEDULE
        assert g.may_enter(pid, "2026-03-02T10:00:00+00:00") is None  # no door: not checked


def test_a_person_for_another_door_is_recognised_and_denied(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"}, door={"name": "front"})
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        g.update("her", doors=parse_doors("other"))
    _, factory, speech = run_daemon(cfg, folder_of(tmp_path, "f", PHOTO, 10), tmp_path)
    events = access_events(cfg)
    assert [(e.name, e.decision, e.reason) for e in events] == [("her", "denied", NOT_THIS_DOOR)]
    assert relay_states(factory, cfg.door.pin) == [False]
    assert [t for t, _ in speech.spoken] == [cfg.voice.denied]

    # The same person at a door in their list is let in.
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        g.update("her", doors=parse_doors("other,front"))
    _, factory, _ = run_daemon(cfg, folder_of(tmp_path, "g", PHOTO, 10), tmp_path / "b")
    assert [e.decision for e in access_events(cfg)] == ["denied", "granted"]
    assert relay_states(factory, cfg.door.pin) == [False, True, False]


def test_outside_the_schedule_is_denied_in_the_doors_zone(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"}, door={"name": "front", "timezone": "Asia/Tokyo"})
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    # A day three days off in Tokyo: whenever this runs, now is outside it.
    tokyo_day = (datetime.now(UTC) + timedelta(hours=9)).weekday()
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        g.update("her", schedule=parse_schedule(f"{DAYS[(tokyo_day + 3) % 7]} 00:00-24:00"))
    run_daemon(cfg, folder_of(tmp_path, "f", PHOTO, 10), tmp_path)
    assert [(e.decision, e.reason) for e in access_events(cfg)] == [("denied", OUTSIDE_SCHEDULE)]
