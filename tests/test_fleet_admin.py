"""The admin commands with ``--fleet``, against a real PostgreSQL server (tests/pg.py).

Real models on real photos for the enrollments, the ``edge`` command through
click's CliRunner, the centre read back with psycopg as a door would read it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from edge.crypto import read_key
from edge.errors import GalleryError
from edge.fleet import store, vault
from edge.fleet.admin import FleetAdmin
from edge.fleet.connect import FleetSettings

from .conftest import PEOPLE
from .test_cli import Site, edge, make_site, one_line

ROSE = PEOPLE / "rose_leslie" / "rose1.jpg"
KIT = PEOPLE / "kit_harington" / "kit1.jpg"
KIT2 = PEOPLE / "kit_harington" / "kit2.jpg"


def _role(server, name: str, group: str) -> None:
    server.psql(
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN"
        f" CREATE ROLE {name} LOGIN IN ROLE {group}; END IF; END$$")


class Fleet:
    """A fleet database, the admin's site (config with the fleet key), and URLs per role."""

    def __init__(self, server, db: str, folder: Path) -> None:
        self.server, self.db = server, db
        self.site: Site = make_site(
            folder, **{"key_file: data/fleet.key": f"key_file: {folder / 'fleet.key'}"})
        self.key_file = folder / "fleet.key"
        self.owner = server.url(db)
        self.admin = server.url(db, user="t_admin")

    def url(self, user: str) -> str:
        return self.server.url(self.db, user=user)

    def edge(self, *args: object, user: str = "t_admin", env: dict | None = None):
        return edge(*args, "--fleet", self.url(user), *self.site.opts(),
                    env={"SUDO_USER": "alice", **(env or {})})

    def sql(self, query: str, args: list | None = None) -> list[tuple]:
        with psycopg.connect(self.owner, autocommit=True) as c:
            return c.execute(query, args or []).fetchall()

    def changes(self) -> list[tuple]:
        return self.sql("SELECT revision, kind, name, actor FROM changes ORDER BY revision")

    def audit(self) -> list[tuple]:
        return self.sql("SELECT kind, name, actor FROM events WHERE door IS NULL ORDER BY id")


@pytest.fixture
def fleet(pg_server, pg_db, tmp_path) -> Fleet:
    f = Fleet(pg_server, pg_db, tmp_path)
    r = edge("fleet", "init", "--fleet", f.owner, "--config", f.site.config)
    assert r.exit_code == 0, r.output
    _role(pg_server, "t_admin", "edge_admin")
    _role(pg_server, "t_front", "edge_door")
    _role(pg_server, "t_back", "edge_door")
    return f


# --------------------------------------------------------------- init


def test_fleet_init_makes_the_schema_and_key_once(pg_server, pg_db, tmp_path):
    f = Fleet(pg_server, pg_db, tmp_path)
    r = edge("fleet", "init", "--fleet", f.owner, "--config", f.site.config)
    assert r.exit_code == 0, r.output
    assert "schema v1 (applied 1)" in r.stdout
    assert stat.S_IMODE(f.key_file.stat().st_mode) == 0o600
    kid = vault.key_id(read_key(f.key_file))
    assert kid in r.stdout
    again = edge("fleet", "init", "--json", "--fleet", f.owner, "--config", f.site.config)
    assert again.exit_code == 0, again.output
    info = json.loads(again.stdout)
    assert info["applied"] == [] and info["key_id"] == kid
    assert f.sql("SELECT value FROM meta WHERE key = 'key_id'") == [(kid,)]
    # Another key is not this fleet's: init says so and changes nothing.
    f.key_file.unlink()
    f.key_file.write_bytes(os.urandom(32))
    f.key_file.chmod(0o600)
    one_line(edge("fleet", "init", "--fleet", f.owner, "--config", f.site.config), 1,
             "not this fleet's key", kid)
    assert f.sql("SELECT value FROM meta WHERE key = 'key_id'") == [(kid,)]


# --------------------------------------------------------------- admin commands


def test_admin_commands_change_the_centre_log_and_audit(fleet: Fleet, tmp_path: Path):
    r = fleet.edge("enroll", "Rose", ROSE, "--display-name", "Rosie")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Rose: 1 template(s) added\n"
    assert not fleet.site.db.exists()  # the local gallery is not touched
    assert fleet.changes()[-1][1:] == ("person", "Rose", "alice")
    assert fleet.audit()[-1] == ("enroll", "Rose", "alice")
    # The templates at the centre are sealed under the fleet key and tagged with the model.
    key = read_key(fleet.key_file)
    with psycopg.connect(fleet.owner, autocommit=True) as c:
        pid = c.execute("SELECT id FROM people").fetchone()[0]
        (t,) = store.templates(c, key, [pid])[pid]
        assert len(t.embedding) == 512
        model = c.execute("SELECT model_id FROM templates").fetchone()[0]
    assert len(model) == 64

    # Enrolling the same photo again changes nothing (no change row, no audit).
    before = fleet.changes()
    r = fleet.edge("enroll", "rose", ROSE)
    assert r.exit_code == 0, r.output
    assert "0 template(s) added, 1 already enrolled" in r.stdout
    assert fleet.changes() == before
    # Another name for Rose's face is refused, all or nothing.
    one_line(fleet.edge("enroll", "Kit", KIT, ROSE), 1, "already enrolled as 'Rose'")
    assert fleet.changes() == before
    assert fleet.edge("enroll", "Kit", KIT, KIT2).exit_code == 0

    steps = [
        (("set", "rose", "--valid-until", "2030-01-01T00:00:00+00:00", "--card", "12:3456"),
         "update"),
        (("disable", "rose"), "disable"),
        (("enable", "Rose"), "enable"),
        (("rename", "Kit", "Kit H"), "rename"),
    ]
    for args, kind in steps:
        n = len(fleet.changes())
        r = fleet.edge(*args)
        assert r.exit_code == 0, (args, r.output)
        assert len(fleet.changes()) == n + 1, args
        assert fleet.audit()[-1][0] == kind
    listed = {p["name"]: p for p in json.loads(fleet.edge("list", "--json").stdout)}
    assert set(listed) == {"Rose", "Kit H"}
    assert listed["Rose"]["valid_until"] == "2030-01-01T00:00:00.000000+00:00"
    assert listed["Rose"]["card_facility"] == 12 and listed["Rose"]["active"] is True
    assert listed["Kit H"]["templates"] == 2
    text = fleet.edge("list").stdout
    assert "Rosie\tactive\t1 template(s)" in text

    r = fleet.edge("remove", "kit h")
    assert r.exit_code == 0, r.output
    r = fleet.edge("forget", "Rose")
    assert r.exit_code == 0, r.output
    assert [c[1:3] for c in fleet.changes()[-2:]] == [("person_removed", "Kit H"),
                                                     ("forget", "Rose")]
    assert [a[0] for a in fleet.audit()[-2:]] == ["remove", "forget"]
    assert fleet.sql("SELECT count(*) FROM templates") == [(0,)]
    one_line(fleet.edge("remove", "Rose"), 1, "'Rose': no such person in the fleet")

    # The bare --fleet takes the fleet from $EDGE_FLEET_URL, even right before NAME.
    env = {"EDGE_FLEET_URL": fleet.admin}
    assert fleet.edge("enroll", "Kit", KIT).exit_code == 0
    r = edge("disable", "--fleet", "Kit", *fleet.site.opts(), env=env)
    assert r.exit_code == 0 and r.stdout == "Kit: disabled\n", r.output
    assert fleet.audit()[-1][:2] == ("disable", "Kit")
    r = edge("remove", "--fleet", "Kit", *fleet.site.opts(), env=env)
    assert r.exit_code == 0, r.output
    r = edge("list", "--fleet", *fleet.site.opts(), env=env)
    assert r.exit_code == 0 and r.stdout == "nobody enrolled\n", r.output


def test_export_and_import_at_the_fleet(fleet: Fleet, tmp_path: Path):
    assert fleet.edge("enroll", "Kit", KIT, KIT2).exit_code == 0
    bundle = tmp_path / "fleet.bundle"
    env = {"EDGE_BUNDLE_PASSPHRASE": "correct horse"}
    r = fleet.edge("export", bundle, env=env)
    assert r.exit_code == 0, r.output
    assert fleet.audit()[-1][0] == "export"
    assert fleet.edge("remove", "Kit").exit_code == 0
    r = fleet.edge("import", bundle, env=env)
    assert r.exit_code == 0, r.output
    assert "1 people, 2 templates added" in r.stdout
    assert fleet.audit()[-1][0] == "import"
    assert fleet.changes()[-1][1:3] == ("person", "Kit")
    # Again: everything is there already; nothing changes for the doors.
    before = fleet.changes()
    r = fleet.edge("import", bundle, env=env)
    assert "0 people, 0 templates added, 2 already present" in r.stdout, r.output
    assert fleet.changes() == before
    # A Kit here with other photos: the bundle's Kit collides, refused as a whole...
    assert fleet.edge("remove", "Kit").exit_code == 0
    assert fleet.edge("enroll", "Kit", KIT).exit_code == 0
    before = fleet.changes()
    one_line(fleet.edge("import", bundle, env=env), 1, "nothing imported", "--merge")
    assert fleet.changes() == before
    # ...unless they are said to be one person.
    r = fleet.edge("import", bundle, "--merge", env=env)
    assert r.exit_code == 0 and "1 templates added, 1 already present" in r.stdout, r.output
    assert fleet.sql("SELECT count(*) FROM templates") == [(2,)]


def _push(fleet: Fleet, role: str, door: str, n: int, revision: int = 0) -> None:
    """What a door's sync does: report in, then push its events (twice: a retry)."""
    with psycopg.connect(fleet.url(role), autocommit=True) as c:
        c.execute("INSERT INTO doors (name, revision, events_waiting, version, last_contact)"
                  " VALUES (%s, %s, 0, '0.1.0', now())", [door, revision])
        for _ in range(2):
            for i in range(1, n + 1):
                c.execute(
                    "INSERT INTO events (door, local_id, ts, kind, name, decision, similarity)"
                    " VALUES (%s, %s, now(), 'access', 'Kit', 'granted', 0.8)"
                    " ON CONFLICT (door, local_id) DO NOTHING", [door, i])


def test_events_of_every_door_and_of_one(fleet: Fleet):
    assert fleet.edge("enroll", "Kit", KIT).exit_code == 0
    _push(fleet, "t_front", "front", 3, revision=1)
    _push(fleet, "t_back", "back", 2)
    r = fleet.edge("events", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert sorted((e["door"], e["local_id"]) for e in rows if e["door"]) == [
        ("back", 1), ("back", 2), ("front", 1), ("front", 2), ("front", 3)]
    assert [e["kind"] for e in rows if e["door"] is None] == ["enroll"]
    r = fleet.edge("events", "--door", "back")
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(ln.startswith("back\t") and "access Kit granted" in ln
                                   for ln in lines), lines
    assert fleet.edge("events", "--kind", "enroll").stdout.startswith("centre\t")
    r = fleet.edge("events", "--limit", "1", "--json")
    assert len(json.loads(r.stdout)) == 1
    one_line(edge("events", "--door", "back", *fleet.site.opts()), 2, "--door needs --fleet")

    r = edge("fleet", "doors", "--json", "--fleet", fleet.admin, "--config", fleet.site.config)
    assert r.exit_code == 0, r.output
    doors = {d["name"]: d for d in json.loads(r.stdout)}
    assert set(doors) == {"back", "front"}
    head = fleet.changes()[-1][0]
    assert doors["front"]["revision"] == 1 and doors["front"]["behind"] == head - 1
    assert doors["back"]["version"] == "0.1.0" and doors["back"]["events_waiting"] == 0
    text = edge("fleet", "doors", "--fleet", fleet.admin, "--config", fleet.site.config).stdout
    assert text.startswith("back\tlast contact 20") and "revision 1" in text


def test_a_door_role_cannot_change_people(fleet: Fleet):
    assert fleet.edge("enroll", "Kit", KIT).exit_code == 0
    before = fleet.changes()
    one_line(fleet.edge("remove", "Kit", user="t_front"), 1, "permission denied",
             "edge_admin")
    one_line(fleet.edge("disable", "Kit", user="t_front"), 1, "permission denied")
    assert fleet.changes() == before
    # A door reads: list works for it.
    assert fleet.edge("list", user="t_front").exit_code == 0


def test_a_fleet_door_refuses_local_edits_but_reads(fleet: Fleet, tmp_path: Path):
    (tmp_path / "door").mkdir()
    door = make_site(tmp_path / "door", **{
        "  url: null ": f"  url: {fleet.url('t_front')} ",
        "key_file: data/fleet.key": f"key_file: {fleet.key_file}"})
    for args in (("enroll", "Kit", KIT), ("remove", "Kit"), ("forget", "Kit"),
                 ("rename", "Kit", "K"), ("disable", "Kit"), ("enable", "Kit"),
                 ("set", "Kit", "--notes", "x"), ("import", tmp_path / "none.bundle")):
        one_line(edge(*args, *door.opts()), 2,
                 f"this door belongs to fleet {fleet.url('t_front')}; use --fleet")
    assert not door.db.exists()
    # --fleet alone means the door's own fleet (fleet.url); as a door it may read.
    r = edge("list", "--fleet", *door.opts())
    assert r.exit_code == 0 and r.stdout == "nobody enrolled\n", r.output


# --------------------------------------------------------------- bad input


def test_bad_fleet_settings_are_one_line(fleet: Fleet, tmp_path: Path, pg_server):
    s = fleet.site.opts()
    cases = [
        (["--fleet", "postgresql://[bad"], "is not a valid URL"),
        (["--fleet", "mysql://x/y"], "is not a postgresql:// URL"),
        (["--fleet", f"postgresql://t_admin:secret@127.0.0.1:{pg_server.port}/{fleet.db}"],
         "a password in the URL is refused"),
        (["--fleet", f"postgresql://t_admin@/{fleet.db}?host={tmp_path / 'nowhere'}"],
         "cannot connect"),
        (["--fleet", f"postgresql://t_admin@/no_such_db?host={pg_server.socket_dir}"
          f"&port={pg_server.port}"], "does not exist"),
        (["--fleet", pg_server.url("postgres", user="t_admin")], "no fleet schema there"),
    ]
    for opts, needle in cases:
        for cmd in (("list",), ("remove", "Kit"), ("events",)):
            one_line(edge(*cmd, *opts, *s), 1, needle)
    one_line(edge("list", "--fleet", *s), 1, "no fleet configured")


def test_passwords_come_from_a_private_file_or_a_credential(fleet: Fleet, tmp_path, pg_server):
    pg_server.set_password("t_admin", "right password")
    pwfile = tmp_path / "fleet-password"
    pwfile.write_text("wrong password\n")
    pwfile.chmod(0o600)
    (tmp_path / "pw").mkdir()
    site = make_site(tmp_path / "pw", **{
        "  password_file: null    # mode 0600": f"  password_file: {pwfile}    # mode 0600"})
    url = pg_server.tcp_url(fleet.db, user="t_admin")
    one_line(edge("list", "--fleet", url, *site.opts()), 1, "password authentication failed")
    pwfile.write_text("right password\n")
    assert edge("list", "--fleet", url, *site.opts()).exit_code == 0
    pwfile.chmod(0o644)
    one_line(edge("list", "--fleet", url, *site.opts()), 1, "open to group or others",
             "chmod 600")
    # The systemd credential wins over the file (which is still 0644: not read).
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fleet-password").write_text("right password")
    r = edge("list", "--fleet", url, *site.opts(), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert r.exit_code == 0, r.output


def test_a_dump_of_the_centre_holds_no_embedding(fleet: Fleet, tmp_path: Path):
    assert fleet.edge("enroll", "Kit", KIT, KIT2).exit_code == 0
    key = read_key(fleet.key_file)
    settings = FleetSettings(fleet.owner, "test")
    with FleetAdmin(settings, "test", lambda: key) as a:
        pid = a.person("Kit").id
        plains = [t.embedding for t in store.templates(a.conn, key, [pid])[pid]]
    assert len(plains) == 2
    dump = subprocess.run(
        [str(fleet.server.bin / "pg_dump"), "-d", fleet.owner, "--format=plain"],
        capture_output=True, check=True).stdout
    assert b"COPY public.templates" in dump
    for plain in plains:
        for i in range(0, len(plain) - 16, 16):  # no 16-byte run, raw or as bytea hex
            chunk = plain[i:i + 16]
            assert chunk not in dump
            assert chunk.hex().encode() not in dump


def test_a_door_without_a_fleet_never_imports_psycopg(tmp_path: Path):
    """psycopg is an optional dependency: a plain door's commands must not load it."""
    import sys

    site = make_site(tmp_path)
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        "from edge.cli import main; main(['--help'])"],
                       capture_output=True, text=True, check=True)
    assert "edge.cli" in r.stderr
    assert "psycopg" not in r.stderr
    code = ("import sys; from click.testing import CliRunner; from edge.cli import main;"
            f" r = CliRunner().invoke(main, ['list', '--config', {str(site.config)!r},"
            f" '--db', {str(site.db)!r}, '--create']); assert r.exit_code == 0, r.output;"
            " print(sorted(m for m in sys.modules if m.startswith('psycopg')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={k: v for k, v in os.environ.items() if k != "EDGE_FLEET_URL"})
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_the_fleet_key_from_a_credential_or_nowhere(fleet: Fleet, tmp_path: Path):
    assert fleet.edge("enroll", "Kit", KIT).exit_code == 0
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fleet-key").write_bytes(fleet.key_file.read_bytes())
    fleet.key_file.rename(tmp_path / "moved.key")
    env = {"EDGE_BUNDLE_PASSPHRASE": "correct horse"}
    one_line(fleet.edge("export", tmp_path / "a.bundle", env=env), 1,
             "fleet key not found", "copy it from the admin's machine")
    r = fleet.edge("export", tmp_path / "b.bundle",
                   env=env | {"CREDENTIALS_DIRECTORY": str(creds)})
    assert r.exit_code == 0 and "1 people exported" in r.stdout, r.output
    (creds / "fleet-key").write_bytes(os.urandom(32))  # not the fleet's key
    one_line(fleet.edge("enroll", "Rose", ROSE, env={"CREDENTIALS_DIRECTORY": str(creds)}), 1,
             "not this fleet's key")
    assert fleet.sql("SELECT name FROM people") == [("Kit",)]


def test_look_alike_at_the_centre_compares_one_model_only(fleet: Fleet):
    """As locally: the same face under another embedder's model_id does not block an
    enrollment (the score would mean nothing); under the same model it does."""
    import numpy as np

    from edge.enroll import Template

    e = np.random.default_rng(7).normal(size=128).astype(np.float32)
    old, new = "a" * 64, "b" * 64

    def t(model: str, sha: str) -> Template:
        return Template(e / np.linalg.norm(e), 0.9, sha * 64, "photo", model)

    key = read_key(fleet.key_file)
    with FleetAdmin(FleetSettings(fleet.admin, "test"), "alice", lambda: key) as a:
        a.enroll("Kit", [t(old, "1")], refuse_look_alike=0.5)
        assert a.enroll("Rose", [t(new, "2")], refuse_look_alike=0.5).added == 1
        with pytest.raises(GalleryError, match="already enrolled as 'Rose'"):
            a.enroll("Eve", [t(new, "3")], refuse_look_alike=0.5)
        assert [p.name for p in a.people()] == ["Kit", "Rose"]
