"""``edge restore`` keeps the audit trail and the erasures since the backup (issue 7, item 5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edge.cli import main
from edge.config import load_config
from edge.gallery import open_gallery

RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None, "SUDO_USER": "ops"})


def edge(site: Path, *args: object) -> tuple[int, str, str]:
    r = RUNNER.invoke(main, [*map(str, args), "--config", str(site / "config.yaml"),
                             "--db", str(site / "gallery.db")])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def gallery(site: Path, actor: str = "admin"):
    return open_gallery(load_config(site / "config.yaml"), site / "gallery.db", actor)


def history(site: Path) -> tuple[Path, list[tuple[str, str | None]]]:
    """Alice, Bob and Carol, a backup, then a day of events; the backup and those events."""
    rng = np.random.default_rng(5)
    with gallery(site) as g:
        for name in ["alice", "bob", "carol"]:
            e = rng.standard_normal(128).astype(np.float32)
            sha = hashlib.sha256(name.encode()).hexdigest()
            g.enroll(name, [(e / np.linalg.norm(e), 0.9, sha)])
    code, out, err = edge(site, "backup", "--json")
    assert code == 0, err
    backup = Path(json.loads(out)["file"])
    with gallery(site) as g:
        at_backup = len(g.events())
        g.log_event("access", name="bob", decision="granted", reason="recognised")
        g.set_active("bob", False)
        g.forget("carol")
        g.rename("alice", "ally")
        g.forget("ally")  # erased under the name she had by then
        g.log_event("access", name="bob", decision="denied", reason="inactive")
        since = [(e.kind, e.name) for e in g.events()][at_backup:]
    return backup, since


def test_restore_carries_newer_events_and_re_applies_forgets(site: Path):
    backup, since = history(site)
    assert since[0] == ("access", "bob") and len(since) == 6
    code, out, err = edge(site, "restore", backup)
    assert code == 0, err
    assert out.startswith(f"{site / 'gallery.db'}: restored from {backup}; ")
    assert "6 newer event(s) carried over" in out
    assert "erased again as recorded: carol, alice" in out
    with gallery(site) as g:
        assert [p.name for p in g.people()] == ["bob"]  # the erased stay erased
        events = g.events()
    kinds = [(e.kind, e.name) for e in events]
    assert kinds[-7:-1] == since  # the trail did not rewind
    restore = events[-1]
    assert restore.kind == "restore" and restore.actor == "ops"
    assert restore.detail is not None
    assert restore.detail["events_carried"] == 6
    assert restore.detail["forgotten_again"] == ["carol", "alice"]
    code, out, _ = edge(site, "events", "--kind", "restore")
    assert code == 0 and "by an admin by" not in out
    assert f" from {backup.name} " in out and out.rstrip().endswith(" by ops")


def test_discard_events_still_re_applies_forgets_and_says_what_was_lost(site: Path):
    backup, _ = history(site)
    code, out, err = edge(site, "restore", backup, "--discard-events")
    assert code == 0, err
    assert "0 newer event(s) carried over; 6 newer event(s) NOT carried over" in out
    with gallery(site) as g:
        assert [p.name for p in g.people()] == ["bob"]
        kinds = [e.kind for e in g.events()]
    assert kinds == ["enroll", "enroll", "enroll", "restore"]


def test_restore_refuses_when_the_newer_events_cannot_be_read(site: Path):
    backup, _ = history(site)
    db = site / "gallery.db"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 100)
    before = db.read_bytes()
    code, out, err = edge(site, "restore", backup)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "--discard-events" in err
    assert db.read_bytes() == before
    code, out, err = edge(site, "restore", backup, "--discard-events")
    assert code == 0, err
