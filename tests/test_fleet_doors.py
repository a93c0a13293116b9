"""Two real doors, one real centre (issue 10, end to end).

Two ``edge run`` processes (front and back) watch replayed frames of Mei
coming and going, each with its own SQLite gallery, both synced to one real
PostgreSQL centre. Changes are made at the centre; what each door decides is
read from its own event log, and what reaches the centre from the centre's.
Deadlines are generous (a loaded machine); the 2 s figure is measured by
scripts/bench_fleet.py, not here.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.fleet import sync as fleet_sync
from edge.gallery import Gallery
from edge.rules import NOT_THIS_DOOR

from .conftest import PEOPLE, wait_for
from .fleet_env import Centre, add_templates, admin_site, door_site, make_centre, unit_vectors
from .test_concurrent_admin import MEI, visits

DOORS = ("front", "back")
#: A door decides every visit: no cooldown, two agreeing frames, 10 fps, no voice.
TUNING = {"cooldown_seconds": "0", "unknown_log_seconds": "0", "agree_matches": "2",
          "enabled": "false", "fps": "10", "unlock_seconds": "0.1"}


class Door:
    """One ``edge run`` door process on its own site and frames."""

    def __init__(self, site: Path, frames: Path) -> None:
        self.site, self.frames = site, frames
        self.db = site / "gallery.db"
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self._out = (self.site / "daemon.log").open("a")
        env = {k: v for k, v in os.environ.items() if k not in ("EDGE_DB", "EDGE_FLEET_URL")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(self.site / "config.yaml"),
             "--db", str(self.db), "--source", str(self.frames), "--realtime",
             "--liveness", "off"],
            stdout=self._out, stderr=subprocess.STDOUT, text=True,
            env={**env, "GPIOZERO_PIN_FACTORY": "mock"},
        )

    def log(self) -> str:
        return (self.site / "daemon.log").read_text()

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.site / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def fleet_state(self) -> str | None:
        return (self.status().get("fleet") or {}).get("state")

    def access(self, after: int = 0) -> list[tuple[int, str | None, str, str]]:
        """(id, name, decision, reason) of its access events after event ``after``."""
        with Gallery(self.db) as g:
            return [(e.id, e.name, e.decision or "", e.reason or "")
                    for e in g.events(kind="access") if e.id > after]

    def last_id(self) -> int:
        with Gallery(self.db) as g:
            rows = g.events(limit=1)
        return rows[-1].id if rows else 0

    def events(self, upto: int) -> list[tuple]:
        with Gallery(self.db) as g:
            return [(e.id, e.kind, e.name, e.decision, e.reason)
                    for e in g.events() if e.id <= upto]

    def revision(self) -> int:
        with Gallery(self.db) as g:
            return fleet_sync.meta_value(g, fleet_sync.REVISION_KEY)

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        self._out.close()
        return None if self.proc is None else self.proc.returncode


def granted(events: list[tuple], name: str = "mei") -> list[tuple]:
    return [e for e in events if e[1] == name and e[2] == "granted"]


def at_centre(centre: Centre, door: str, upto: int) -> list[tuple]:
    return [tuple(r) for r in centre.sql(
        "SELECT local_id, kind, name, decision, reason FROM events"
        " WHERE door = %s AND local_id <= %s ORDER BY id", [door, upto])]


def admin(centre: Centre, *args: object) -> str:
    """One real ``edge ... --fleet URL`` admin command at the centre; its stdout."""
    site = admin_site(centre.key_file.parent, centre)
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_DB", "EDGE_FLEET_URL")}
    p = subprocess.run(
        [sys.executable, "-m", "edge.cli", *map(str, args), "--fleet", centre.url("postgres"),
         "--config", str(site / "config.yaml")],
        capture_output=True, text=True, timeout=300, env={**env, "SUDO_USER": "alice"})
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def head(centre: Centre) -> int:
    return int(centre.sql("SELECT coalesce(max(revision), 0) FROM changes")[0][0])


@pytest.fixture
def fleet(pg_server, pg_db, tmp_path):
    centre = make_centre(pg_server, pg_db, tmp_path / "admin", doors=DOORS)
    visits(tmp_path / "frames", cycles=400)  # ~13 min of 10 fps frames: more than needed
    doors = {d: Door(door_site(tmp_path / d, centre, d, **TUNING), tmp_path / "frames")
             for d in DOORS}
    try:
        yield centre, doors
    finally:
        for d in doors.values():
            d.stop()
        if not pg_server.running():
            pg_server.start()


def test_two_doors_one_centre(fleet):
    centre, doors = fleet
    front, back = doors["front"], doors["back"]
    assert wait_for(lambda: all(d.fleet_state() == "online" for d in doors.values()), 120), (
        front.log(), back.log())

    # Enrolled at the centre: both doors let Mei in.
    admin(centre, "enroll", "mei", MEI)
    assert wait_for(lambda: all(granted(d.access()) for d in doors.values()), 120), (
        front.log(), back.log())

    # Only the front door from now on: the back door denies her, naming the reason.
    assert "doors front" in admin(centre, "set", "mei", "--doors", "front")
    rule_rev = head(centre)
    assert wait_for(lambda: all(d.revision() >= rule_rev for d in doors.values()), 60)
    mark = {n: d.last_id() for n, d in doors.items()}
    assert wait_for(lambda: len(back.access(mark["back"])) >= 2
                    and granted(front.access(mark["front"])), 60)
    assert {(e[2], e[3]) for e in back.access(mark["back"])} == {("denied", NOT_THIS_DOOR)}

    # The centre goes down: both doors go on deciding from their replicas (front still
    # lets Mei in, back still refuses her) and keep every event.
    centre.server.stop()
    try:
        assert wait_for(lambda: all(d.fleet_state() == "offline" for d in doors.values()), 60)
        mark = {n: d.last_id() for n, d in doors.items()}
        assert wait_for(lambda: len(granted(front.access(mark["front"]))) >= 2
                        and len(back.access(mark["back"])) >= 2, 60)
        assert all(e[3] == NOT_THIS_DOOR for e in back.access(mark["back"]))
        offline_upto = {n: d.last_id() for n, d in doors.items()}
    finally:
        centre.server.start()
    # Back again: every event of each door reaches the centre once, in order, with its door.
    for name, d in doors.items():
        assert wait_for(lambda d=d, name=name: at_centre(centre, name, offline_upto[name])
                        == d.events(offline_upto[name]), 120), name
    assert centre.sql("SELECT count(*) - count(DISTINCT (door, local_id)) FROM events"
                      " WHERE door IS NOT NULL") == [(0,)]
    assert centre.sql("SELECT DISTINCT door FROM events WHERE door IS NOT NULL ORDER BY door"
                      ) == [("back",), ("front",)]

    # Removed at the centre: both doors stop letting her in.
    admin(centre, "remove", "mei")
    gone_rev = head(centre)
    assert wait_for(lambda: all(d.revision() >= gone_rev for d in doors.values()), 60)
    mark = {n: d.last_id() for n, d in doors.items()}
    assert wait_for(lambda: all(len(d.access(mark[n])) >= 2 for n, d in doors.items()), 60)
    for n, d in doors.items():
        assert not granted(d.access(mark[n])), n

    # kill -9 of the front door in the middle of a sync: a large change (600 people)
    # is being pulled or applied when it dies. After a restart it is consistent,
    # catches up, and no event is lost or doubled.
    kill_mid_sync(centre, front)
    assert front.proc is not None and front.proc.returncode == -signal.SIGKILL
    with Gallery(front.db) as g:
        assert g.integrity_check() == "ok"
        held, people = fleet_sync.meta_value(g, fleet_sync.REVISION_KEY), len(g.people())
    assert (held, people) in ((gone_rev, 0), (head(centre), 600)), (held, people)
    front.start()
    assert wait_for(lambda: front.revision() == head(centre), 120), front.log()
    with Gallery(front.db) as g:
        assert len(g.people()) == 600 and len(g.templates().ids) == 1200
    upto = front.last_id()
    assert wait_for(lambda: at_centre(centre, "front", upto) == front.events(upto), 120)
    assert centre.sql("SELECT count(*) - count(DISTINCT (door, local_id)) FROM events"
                      " WHERE door IS NOT NULL") == [(0,)]
    assert "Traceback" not in front.log() + back.log()


def kill_mid_sync(centre: Centre, door: Door) -> None:
    """Commit a large change, then SIGKILL ``door`` while it is syncing it: while its
    connection has a transaction open at the centre (the pull) or it holds its gallery's
    write lock before holding the new revision (the apply)."""
    with centre.admin() as c, c.transaction():
        c.execute("SELECT edge_begin_change()")
        ids = [int(r[0]) for r in c.execute(
            "INSERT INTO people (name, name_key) SELECT 'p' || g, 'p' || g"
            " FROM generate_series(1, 600) g RETURNING id").fetchall()]
        vectors = unit_vectors(2 * len(ids), seed=9)
        for n, pid in enumerate(ids):
            add_templates(c, centre.key, pid, vectors[2 * n:2 * n + 2], "other-model")
    target = head(centre)
    assert door.proc is not None
    probe = sqlite3.connect(door.db, timeout=0, isolation_level=None)
    watch = centre.admin()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and door.proc.poll() is None:
            row = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edge door front'"
                " AND xact_start IS NOT NULL AND state <> 'idle'").fetchone()
            pulling = row is not None and row[0] > 0
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                applying = False
            except sqlite3.OperationalError:
                applying = True
            if pulling or (applying and door.revision() < target):
                os.kill(door.proc.pid, signal.SIGKILL)
                break
        else:
            raise AssertionError("the door was never seen syncing the change")
    finally:
        probe.close()
        watch.close()
    door.proc.wait(60)
    door._out.close()


def test_a_door_without_the_fleet_key_refuses_to_start(pg_server, pg_db, tmp_path):
    centre = make_centre(pg_server, pg_db, tmp_path / "admin", doors=("front",))
    site = door_site(tmp_path / "front", centre, "front")
    (site / "fleet.key").unlink()
    p = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db"), "--source", str(PEOPLE / "barack_obama")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"})
    assert p.returncode == 1, p.stdout + p.stderr
    out = (p.stdout + p.stderr).strip().splitlines()
    assert any("fleet key not found" in ln for ln in out) and "Traceback" not in p.stderr
