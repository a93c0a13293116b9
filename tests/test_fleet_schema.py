"""The central store's schema on a real PostgreSQL server: migrations, roles, the change log."""

from __future__ import annotations

import psycopg
import pytest

from edge.fleet import schema, store


@pytest.fixture
def fleet(pg_server, pg_db):
    """A fleet database with the schema, and login roles for a door, another door and an admin."""
    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        schema.init(c)
    pg_server.psql(
        "DO $$BEGIN"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't_front') THEN"
        "  CREATE ROLE t_front LOGIN IN ROLE edge_door; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't_back') THEN"
        "  CREATE ROLE t_back LOGIN IN ROLE edge_door; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't_admin') THEN"
        "  CREATE ROLE t_admin LOGIN IN ROLE edge_admin; END IF;"
        " END$$")
    return pg_server, pg_db


def _as(fleet, role: str) -> psycopg.Connection:
    server, db = fleet
    return psycopg.connect(server.url(db, user=role), autocommit=True)


def test_init_creates_then_changes_nothing(pg_server, pg_db):
    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        first = schema.init(c)
        every = tuple(range(1, schema.SCHEMA_VERSION + 1))
        assert (first.before, first.after, first.applied) == (0, schema.SCHEMA_VERSION, every)
        tables = {r[0] for r in c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"people", "templates", "doors", "events", "changes", "meta",
                "schema_versions"} <= tables
        again = schema.init(c)
        assert (again.before, again.applied) == (schema.SCHEMA_VERSION, ())
        versions = c.execute("SELECT version FROM schema_versions ORDER BY version").fetchall()
        assert [v for (v,) in versions] == list(range(1, schema.SCHEMA_VERSION + 1))


def test_init_migrates_an_older_schema(pg_server, pg_db, monkeypatch):
    """A schema made by this edge-access is brought up by the next one's new migration only:
    the data stays, the new step is applied and recorded, and a failing step changes nothing."""
    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        schema.init(c)
        c.execute("INSERT INTO people (name, name_key) VALUES ('Rose', 'rose')")
        now = schema.SCHEMA_VERSION
        broken = schema.Migration(now + 1, "broken", "ALTER TABLE people ADD COLUMN x int;"
                                  " SELECT no_such_function()")
        monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
        monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 1)
        with pytest.raises(psycopg.Error):
            schema.init(c)
        assert schema.current_version(c) == now
        assert c.execute("SELECT count(*) FROM information_schema.columns"
                         " WHERE table_name = 'people' AND column_name = 'x'").fetchone() == (0,)
        step = schema.Migration(now + 1, "photo of the week",
                                "ALTER TABLE people ADD COLUMN x int")
        monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS[:-1], step))
        result = schema.init(c)
        assert (result.before, result.after, result.applied) == (now, now + 1, (now + 1,))
        assert c.execute("SELECT name, x FROM people").fetchall() == [("Rose", None)]
        assert schema.init(c).applied == ()


def test_a_newer_schema_is_refused(pg_server, pg_db):
    from edge.fleet.connect import FleetError

    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        schema.init(c)
        c.execute("INSERT INTO schema_versions (version, description) VALUES (999, 'future')")
        with pytest.raises(FleetError, match="newer than this edge-access"):
            schema.init(c)


def test_a_door_cannot_change_people_but_pushes_its_own_events(fleet):
    with _as(fleet, "t_admin") as admin:
        admin.execute("INSERT INTO people (name, name_key) VALUES ('Rose', 'rose')")
    with _as(fleet, "t_front") as door:
        assert door.execute("SELECT name FROM people").fetchall() == [("Rose",)]
        for sql in ("INSERT INTO people (name, name_key) VALUES ('Eve', 'eve')",
                    "UPDATE people SET active = false",
                    "DELETE FROM people",
                    "DELETE FROM templates",
                    "INSERT INTO changes (kind, person_id, name) VALUES ('forget', 1, 'Rose')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                door.execute(sql)
        door.execute("INSERT INTO doors (name, revision) VALUES ('front', 0)")
        insert = ("INSERT INTO events (door, local_id, ts, kind, decision) VALUES"
                  " (%s, %s, now(), 'access', 'granted') ON CONFLICT (door, local_id) DO NOTHING")
        door.execute(insert, ["front", 1])
        door.execute(insert, ["front", 1])  # a retried push: no duplicate
        assert door.execute("SELECT count(*) FROM events").fetchone() == (1,)
        # Not in another door's name, and not the centre's (door NULL) either.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            door.execute(insert, ["back", 1])
    with _as(fleet, "t_back") as back:
        back.execute("INSERT INTO doors (name) VALUES ('back')")
        # Another door can neither report for front nor see front's events.
        assert back.execute("UPDATE doors SET revision = 99 WHERE name = 'front'").rowcount == 0
        assert back.execute("SELECT count(*) FROM events").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            back.execute("INSERT INTO doors (name, role) VALUES ('side', 't_front')")
    with _as(fleet, "t_admin") as admin:
        assert admin.execute("SELECT revision FROM doors WHERE name = 'front'").fetchone() == (0,)
        assert admin.execute("SELECT door, local_id FROM events").fetchall() == [("front", 1)]


def test_every_change_is_logged_in_order_and_notified(fleet):
    with _as(fleet, "t_front") as door:
        door.execute("LISTEN edge_changes")
        with _as(fleet, "t_admin") as admin:
            admin.execute("SET edge.actor = 'alice'")
            admin.execute("INSERT INTO people (name, name_key) VALUES ('Rose', 'rose')")
            pid = admin.execute("SELECT id FROM people").fetchone()[0]
            with admin.transaction(force_rollback=True):  # no row, no notification
                admin.execute("UPDATE people SET active = false")
            admin.execute("UPDATE people SET name = 'Rosa', name_key = 'rosa'")
            admin.execute("INSERT INTO templates (person_id, embedding, model_id) VALUES"
                          " (%s, 'x', 'm'), (%s, 'y', 'm')", [pid, pid])
            with admin.transaction():
                admin.execute("SET LOCAL edge.forget = 'on'")
                admin.execute("DELETE FROM people")
        rows = door.execute(
            "SELECT revision, kind, person_id, name, actor FROM changes ORDER BY revision"
        ).fetchall()
        kinds = [(k, n, a) for _, k, _, n, a in rows]
        assert kinds == [("person", "Rose", "alice"), ("person", "Rosa", "alice"),
                         ("person", "Rosa", "alice"), ("forget", "Rosa", "alice")]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        assert {r[2] for r in rows} == {pid}
        seen = [int(n.payload) for n in door.notifies(timeout=5, stop_after=4)]
        assert seen == [r[0] for r in rows]
        assert store.head(door) == rows[-1][0]


_WRITER = """
import sys
from edge.fleet.admin import FleetAdmin
from edge.fleet.connect import FleetSettings
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with FleetAdmin(FleetSettings(url, "test"), "writer-" + name) as a:
    for i in range(n):
        a.update(name, notes=f"note {i}")
"""


def test_revisions_commit_in_order_across_processes(fleet):
    """Four admin processes change people at once; a reader that holds the highest revision
    it has seen must never later find a lower one committed (else a door would skip it)."""
    import subprocess
    import sys

    server, db = fleet
    names = [f"p{i}" for i in range(4)]
    with _as(fleet, "t_admin") as admin:
        for n in names:
            admin.execute("INSERT INTO people (name, name_key) VALUES (%s, %s)", [n, n])
    url = server.url(db, user="t_admin")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, n, "40"]) for n in names]
    held, seen = 0, []
    with _as(fleet, "t_front") as door:
        while True:
            running = any(p.poll() is None for p in procs)
            rows = [r for (r,) in door.execute(
                "SELECT revision FROM changes ORDER BY revision").fetchall()]
            late = [r for r in rows if r <= held and r not in seen]
            assert not late, f"revisions {late} committed after {held} was seen"
            new = [r for r in rows if r > held]
            seen += new
            held = max(rows, default=held)
            if not running:
                break
    assert all(p.wait() == 0 for p in procs)
    assert len(seen) == len(names) + 4 * 40


def test_the_server_stops_and_starts_again_with_its_data(pg_server, pg_db):
    """tests/pg.py's stop()/start(), as the offline tests use them: the data survives,
    and while it is stopped nobody can connect."""
    from edge.fleet.connect import FleetError, FleetSettings, connect

    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        schema.init(c)
        c.execute("INSERT INTO people (name, name_key) VALUES ('Rose', 'rose')")
    pg_server.stop()
    try:
        assert not pg_server.running()
        with pytest.raises(FleetError, match="cannot connect"):
            connect(FleetSettings(pg_server.url(pg_db), "test", connect_timeout=2))
    finally:
        pg_server.start()
    with psycopg.connect(pg_server.url(pg_db), autocommit=True) as c:
        assert c.execute("SELECT name FROM people").fetchall() == [("Rose",)]
