"""The door's sync (edge/fleet/sync.py) against a real PostgreSQL server (issue 10, parts 4-5).

Pull and apply, idempotent push, the worker's LISTEN/poll/back-off, a centre
that is stopped or too slow, a week offline, and ``edge sync`` killed with
SIGKILL in the middle: every check is on the real rows at both ends.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.fleet import sync as fleet_sync
from edge.fleet.connect import FleetError
from edge.fleet.sync import DoorSync, SyncWorker
from edge.gallery import Gallery
from edge.rules import NOT_THIS_DOOR, Place

from .conftest import wait_for
from .fleet_env import Centre, door_site, make_centre, site_config, unit_vectors


@pytest.fixture
def centre(pg_server, pg_db, tmp_path) -> Centre:
    return make_centre(pg_server, pg_db, tmp_path / "admin", doors=("front", "back"))


def door(tmp_path: Path, centre: Centre, name: str = "front", **extra: str):
    site = door_site(tmp_path / name, centre, name, **extra)
    return site, site_config(site)


def centre_events(centre: Centre, door_name: str) -> list[tuple[int, str, str | None]]:
    return [tuple(r) for r in centre.sql(
        "SELECT local_id, kind, name FROM events WHERE door = %s ORDER BY id", [door_name])]


def test_pull_applies_people_rules_and_templates_then_every_change(tmp_path, centre):
    site, cfg = door(tmp_path, centre)
    rose_emb, kit_emb = unit_vectors(2, seed=1), unit_vectors(1, seed=2)
    rose = centre.enroll("Rose", rose_emb, doors=["front", "lab"], schedule="Mon-Fri 07:00-19:00")
    kit = centre.enroll("Kit", kit_emb)
    with DoorSync(cfg, site / "gallery.db", door="front") as s:
        r = s.sync()
        head = centre.sql("SELECT max(revision) FROM changes")[0][0]
        assert (r.revision, r.people) == (head, 2)
        g = s.gallery
        people = {p.name: p for p in g.people()}
        assert people["Rose"].id == rose and people["Kit"].id == kit
        assert people["Rose"].doors == "front,lab"
        assert people["Rose"].schedule == "mon-fri 07:00-19:00"  # canonical, as local ones
        t = g.templates()
        # Unsealed here under the door's own key: exactly the centre's embeddings.
        got = {int(i): e for i, e in zip(t.ids, t.embeddings, strict=True)}
        central = dict(centre.sql("SELECT id, person_id FROM templates"))
        assert set(got) == set(central)
        (kit_tid,) = [i for i in central if central[i] == kit]
        assert np.allclose(got[kit_tid], kit_emb[0], atol=1e-6)
        # The blobs in the file are sealed under the gallery key, not the fleet key.
        raw = sqlite3.connect(site / "gallery.db").execute("SELECT embedding FROM templates")
        assert all(len(b) > 512 for (b,) in raw.fetchall())

        # Changes: disable, rename, a new rule, a removal: one more sync applies them all.
        centre.sql("UPDATE people SET active = false WHERE id = %s", [kit])
        centre.sql("UPDATE people SET name = 'Rosa', name_key = 'rosa', doors = '{back}'"
                   " WHERE id = %s", [rose])
        r = s.sync()
        assert r.changes == 2
        people = {p.name: p for p in g.people()}
        assert set(people) == {"Rosa", "Kit"} and not people["Kit"].active
        assert people["Rosa"].doors == "back" and people["Rosa"].templates == 2
        assert g.may_enter(rose, place=Place("front")) == NOT_THIS_DOOR
        centre.sql("DELETE FROM people WHERE id = %s", [kit])
        before = g.generation()
        assert s.sync().changes == 1
        assert [p.name for p in g.people()] == ["Rosa"] and g.generation() > before
        assert g.may_enter(kit) == "removed"
        # Nothing new: nothing written (the generation stays, so no reload).
        before = g.generation()
        assert s.sync().changes == 0 and g.generation() == before
        # Each apply is recorded as a local event, pushed like any other.
        assert [e.detail["people"] for e in g.events(kind="sync")] == [2, 2, 1]


def test_a_push_retried_after_a_crash_duplicates_nothing(tmp_path, centre):
    site, cfg = door(tmp_path, centre)
    with DoorSync(cfg, site / "gallery.db", door="front") as s:
        g = s.gallery
        for i in range(30):
            g.log_event("access", name=f"p{i}", decision="denied", reason="unknown face",
                        detail={"n": i})
        r = s.sync()
        assert (r.pushed, r.waiting) == (30, 0)
        # A crash after the centre committed but before the cursor moved: the same
        # events go again, and the centre takes none of them twice.
        with g._write("rewind", content=False):
            fleet_sync._set_meta(g, fleet_sync.PUSHED_KEY, 0)
        assert s.waiting() == 30
        r = s.sync()
        assert (r.pushed, r.waiting) == (0, 0)
        local = [(e.id, e.kind, e.name) for e in g.events()]
    assert centre_events(centre, "front") == local  # every one, once, in order
    (d,) = centre.sql("SELECT detail FROM events WHERE door = 'front' AND name = 'p7'")
    assert d[0] == {"n": 7}
    (row,) = centre.sql("SELECT revision, events_waiting, version, last_contact IS NOT NULL"
                        " FROM doors WHERE name = 'front'")
    assert row[1:] == (0, "0.1.0", True)


def test_centre_stopped_then_back_offline_week_caught_up_in_one_sync(tmp_path, centre):
    site, cfg = door(tmp_path, centre)
    server = centre.server
    with DoorSync(cfg, site / "gallery.db", door="front") as s:
        s.sync()
        server.stop()
        try:
            for i in range(20):  # the door keeps its events while the centre is down
                s.gallery.log_event("access", name="x", decision="denied", detail={"i": i})
            with pytest.raises(FleetError) as e:
                s.sync()
            assert "\n" not in str(e.value) and str(e.value).startswith("fleet")
            # ... and edge sync says so in one line, exit 1.
            p = subprocess.run([sys.executable, "-m", "edge.cli", "sync", "--config",
                                str(site / "config.yaml"), "--db", str(site / "gallery.db")],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 1 and p.stdout == "", p.stderr
            assert p.stderr.count("\n") == 1 and "cannot connect" in p.stderr, p.stderr
            assert "Traceback" not in p.stderr
        finally:
            server.start()
        # A week of changes at the centre while this door was away: 150 people come,
        # 50 of them go again, 20 change. One sync brings it up to date.
        ids = [centre.enroll(f"p{i:03d}", unit_vectors(1, seed=100 + i)) for i in range(150)]
        centre.sql("DELETE FROM people WHERE id = ANY(%s)", [ids[:50]])
        centre.sql("UPDATE people SET active = false WHERE id = ANY(%s)", [ids[50:70]])
        r = s.sync()
        assert r.revision == centre.sql("SELECT max(revision) FROM changes")[0][0]
        people = s.gallery.people()
        assert len(people) == 100 and sum(not p.active for p in people) == 20
        assert r.waiting == 0
        local = [(e.id, e.kind, e.name) for e in s.gallery.events()]
    assert centre_events(centre, "front") == local


def test_a_slow_centre_times_out_instead_of_hanging(tmp_path, centre, monkeypatch):
    """A statement the centre does not answer in time fails the sync (the door decides
    on from its replica); here an admin transaction holds the change log locked."""
    monkeypatch.setattr(fleet_sync, "STATEMENT_TIMEOUT_MS", 500)
    site, cfg = door(tmp_path, centre)
    with centre.admin() as blocker, DoorSync(cfg, site / "gallery.db", door="front") as s:
        s.sync()
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(FleetError, match="statement timeout"):
            s.sync()
        blocker.execute("ROLLBACK")
        assert s.sync().revision == 0


def test_worker_follows_notify_backs_off_and_says_so_once(tmp_path, centre, caplog):
    site, cfg = door(tmp_path, centre)
    changed = threading.Event()
    caplog.set_level(logging.INFO, "edge.fleet")
    worker = SyncWorker(cfg, site / "gallery.db", door="front", on_change=changed.set).start()
    try:
        assert wait_for(lambda: worker.state == "online", 60)
        pid = centre.enroll("Rose", unit_vectors(1))
        # Pushed by NOTIFY (the fallback poll is 30 s away).
        assert changed.wait(20), worker.last_error
        with Gallery(site / "gallery.db") as g:
            assert [p.id for p in g.people()] == [pid]
        centre.server.stop()
        try:
            assert wait_for(lambda: worker.state == "offline", 60)
            time.sleep(3)  # several attempts while it is down ...
        finally:
            centre.server.start()
        assert wait_for(lambda: worker.state == "online", 60)
        changed.clear()
        centre.sql("DELETE FROM people WHERE id = %s", [pid])
        assert changed.wait(20)
        with Gallery(site / "gallery.db") as g:
            assert g.people() == []
    finally:
        worker.close()
    text = [r.getMessage() for r in caplog.records if r.name == "edge.fleet"]
    down = [t for t in text if "centre unreachable" in t]
    assert len(down) == 1 and down[0].endswith("deciding offline"), text  # ... said once
    assert sum(t.startswith("fleet: connected, revision") for t in text) == 2


def test_edge_sync_killed_mid_sync_leaves_the_door_consistent(tmp_path, centre):
    """SIGKILL while a large first sync is being applied: after it the gallery is either as
    before or fully at the centre's revision, never between; the next sync completes it,
    and the events pushed meanwhile reach the centre exactly once."""
    site, _ = door(tmp_path, centre)
    with centre.admin() as c, c.transaction():  # 800 people, 2,400 templates, one revision
        from .fleet_env import add_templates

        c.execute("SELECT edge_begin_change()")
        ids = [int(r[0]) for r in c.execute(
            "INSERT INTO people (name, name_key) SELECT 'p' || g, 'p' || g"
            " FROM generate_series(1, 800) g RETURNING id").fetchall()]
        vectors = unit_vectors(3 * len(ids), seed=5)
        for n, pid in enumerate(ids):
            add_templates(c, centre.key, pid, vectors[3 * n:3 * n + 3], "m")
    with Gallery(site / "gallery.db") as g:
        g.log_events([{"kind": "access", "name": f"e{i}", "decision": "denied"}
                      for i in range(3000)])
    db = site / "gallery.db"
    cmd = [sys.executable, "-m", "edge.cli", "sync", "--config", str(site / "config.yaml"),
           "--db", str(db)]
    killed_in_apply = False
    for _attempt in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The middle: the door holds the gallery's write lock (applying the pull).
        probe = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            while proc.poll() is None:
                try:
                    probe.execute("BEGIN IMMEDIATE")
                    probe.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_in_apply = True
                    break
                time.sleep(0.002)
        finally:
            probe.close()
        _, err = proc.communicate(timeout=60)
        if killed_in_apply:
            break
        assert proc.returncode == 0, err
        # Finished before the lock was seen: start again from nothing.
        with Gallery(db) as g, g._write("reset"):
            g.db.execute("DELETE FROM people")
            g.db.execute("DELETE FROM meta WHERE key LIKE 'fleet_%'")
    assert killed_in_apply, "the sync never held the gallery's write lock long enough to kill"
    head = centre.sql("SELECT max(revision) FROM changes")[0][0]
    with Gallery(db) as g:
        revision = fleet_sync.meta_value(g, fleet_sync.REVISION_KEY)
        people, templates = len(g.people()), len(g.templates().ids)
        assert g.integrity_check() == "ok"
    assert (revision, people, templates) in ((0, 0, 0), (head, 800, 2400))
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"] == head
    with Gallery(db) as g:
        assert (len(g.people()), len(g.templates().ids)) == (800, 2400)
        local = [(e.id, e.kind, e.name) for e in g.events()]
    assert centre_events(centre, "front") == local


def test_a_restore_that_discarded_events_loses_none_of_the_later_ones(tmp_path, centre):
    """A restore that drops events the centre already has makes the door reuse their ids;
    the events written after it reach the centre all the same, each once."""
    from edge.backup import restore

    site, cfg = door(tmp_path, centre)
    db, copy = site / "gallery.db", tmp_path / "backup.db"
    with DoorSync(cfg, db, door="front") as s:
        for i in range(20):
            s.gallery.log_event("access", name=f"before{i}", decision="denied", reason="unknown")
        assert s.sync().pushed == 20
        s.gallery.backup(copy)
        for i in range(10):  # pushed, then lost with the restore below
            s.gallery.log_event("access", name=f"lost{i}", decision="denied", reason="unknown")
        assert s.sync().pushed == 10
    done = restore(db, copy, cfg, aside="replaced", discard_events=True)
    assert done.lost == 10
    with DoorSync(cfg, db, door="front") as s:
        for i in range(5):
            s.gallery.log_event("access", name=f"after{i}", decision="granted")
        restored = [(e.id, e.kind, e.name) for e in s.gallery.events() if e.id > 20]
        assert restored[0][0] == 21  # the restore event reuses the id "lost0" was pushed under
        r = s.sync()
        assert (r.pushed, r.waiting) == (6, 0)  # the restore event and the five after it
        # A push retried after a crash still duplicates nothing, shifted ids included.
        with s.gallery._write("rewind", content=False):
            fleet_sync._set_meta(s.gallery, fleet_sync.PUSHED_KEY, 0)
        assert s.sync().pushed == 0
        s.gallery.log_event("access", name="later", decision="granted")
        assert s.sync().pushed == 1
    names = [n for _, _, n in centre_events(centre, "front")]
    assert names == ([f"before{i}" for i in range(20)] + [f"lost{i}" for i in range(10)]
                     + [None] + [f"after{i}" for i in range(5)] + ["later"])
    ids = [i for i, _, _ in centre_events(centre, "front")]
    assert ids == list(range(1, 38))  # after the 30 it had, the next ids: nothing overwritten
