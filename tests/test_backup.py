"""Backups and the start-up check, on real gallery files damaged for real."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge import crypto
from edge.backup import Backups, backup_path, check_file, list_backups, startup_check
from edge.config import BackupConfig, Config, StorageConfig
from edge.errors import GalleryError
from edge.gallery import Gallery, open_gallery
from edge.match import DIM

PAGE = 4096


def make_cfg(tmp_path: Path, **backup: object) -> Config:
    return Config(
        base_dir=tmp_path,
        backup=BackupConfig(**backup),  # type: ignore[arg-type]
        storage=StorageConfig(min_free_mb=0),
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_cfg(tmp_path)


@pytest.fixture
def db(cfg: Config) -> Path:
    """A gallery of 10 people, 20 templates each, and some events: ~50 pages."""
    rng = np.random.default_rng(7)
    with open_gallery(cfg, actor="admin") as g:
        for k in range(10):
            g.enroll(
                f"p{k}",
                [(rng.standard_normal(DIM), 0.9, hashlib.sha256(f"{k}/{i}".encode()).hexdigest())
                 for i in range(20)],
            )
        for _ in range(100):
            g.log_event("access", decision="denied", reason="unknown")
    return g.path


def folder(cfg: Config) -> Path:
    return cfg.path(cfg.backup.dir)


def people(cfg: Config, db: Path) -> list[tuple[str, int]]:
    with open_gallery(cfg, db) as g:
        g.templates()  # every template opens
        return [(p.name, p.templates) for p in g.people()]


def garbage_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // PAGE // 2 * PAGE
    data[middle : middle + 2 * PAGE] = np.random.default_rng(1).bytes(2 * PAGE)
    path.write_bytes(bytes(data))


def truncated(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def zero_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(bytes(100))


def emptied(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = [garbage_in_the_middle, truncated, zero_header, emptied]


# ------------------------------------------------------------------ backups


def test_backup_names_sort_by_time(tmp_path: Path) -> None:
    db = tmp_path / "gallery.db"
    when = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
    assert backup_path(db, tmp_path, when).name == "gallery-20250301T120005Z.db"
    names = [backup_path(db, tmp_path, when + timedelta(hours=h)).name for h in (30, 2, 5000)]
    for n in [*names, "gallery.db", "other-20250301T120005Z.db", ".gallery-20250301T120005Z.db.x"]:
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in list_backups(db, tmp_path)] == sorted(names, reverse=True)


def test_backups_are_private_sound_and_pruned(cfg: Config, db: Path) -> None:
    cfg = make_cfg(cfg.base_dir, keep=3)
    old = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 6)]
    with Gallery(db) as g:
        for when in old:
            g.backup(backup_path(db, folder(cfg), when))
    made = Backups(db, cfg, background=False).backup_now()
    assert made is not None and re.fullmatch(r"gallery-\d{8}T\d{6}Z\.db", made.name)
    kept = list_backups(db, folder(cfg))
    assert kept == [made, *(backup_path(db, folder(cfg), when) for when in (old[4], old[3]))]
    assert sorted(os.listdir(folder(cfg))) == sorted(p.name for p in kept)  # no temporaries
    assert stat.S_IMODE(folder(cfg).stat().st_mode) == 0o700
    for p in kept:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert check_file(p) == "ok"
    assert people(cfg, made) == people(cfg, db)
    assert crypto.fingerprint(crypto.read_key(cfg.path(cfg.security.key_file)))  # same key


def test_the_schedule(cfg: Config, db: Path) -> None:
    backups = Backups(db, cfg, background=False)
    now = time.monotonic()
    assert not backups.maybe_backup(now)  # start-up first
    assert backups.maybe_backup(now + 61)  # none on disk: due a minute after start
    assert not backups.maybe_backup(now + 3600)
    assert len(backups.files()) == 1
    # A daemon restarted now finds a fresh backup: the next is a day away.
    later = Backups(db, cfg, background=False, start_delay=0)
    assert not later.maybe_backup(time.monotonic())
    assert later.maybe_backup(time.monotonic() + 24 * 3600 + 1)
    assert Backups(db, cfg, start_delay=0).maybe_backup(time.monotonic()) is False


def test_an_old_backup_makes_one_due_at_once(cfg: Config, db: Path) -> None:
    with Gallery(db) as g:
        g.backup(backup_path(db, folder(cfg), datetime(2024, 1, 1, tzinfo=UTC)))
    os.utime(backup_path(db, folder(cfg), datetime(2024, 1, 1, tzinfo=UTC)), (0, 0))
    assert Backups(db, cfg, background=False, start_delay=0).maybe_backup(time.monotonic())


def test_a_background_backup(cfg: Config, db: Path) -> None:
    backups = Backups(db, cfg, start_delay=0)
    assert backups.maybe_backup(time.monotonic())
    backups.close()
    assert len(backups.files()) == 1


def test_a_failed_backup_is_logged_not_raised(
    cfg: Config, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder(cfg).parent.mkdir(parents=True, exist_ok=True)
    folder(cfg).write_text("a file where the backup folder should be")
    backups = Backups(db, cfg, background=False, start_delay=0)
    with caplog.at_level(logging.WARNING, "edge.backup"):
        assert not backups.maybe_backup(time.monotonic())
        assert not backups.maybe_backup(time.monotonic())  # retried later, not every loop
    assert "backup failed" in caplog.text


def test_no_backup_below_the_free_space_floor(
    tmp_path: Path, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = Config(base_dir=tmp_path, storage=StorageConfig(min_free_mb=1e12))
    with caplog.at_level(logging.WARNING, "edge.backup"):
        assert Backups(db, cfg, background=False).backup_now() is None
    assert "backup skipped" in caplog.text
    assert list_backups(db, folder(cfg)) == []


def test_a_damaged_gallery_is_not_backed_up(cfg: Config, db: Path) -> None:
    garbage_in_the_middle(db)
    assert Backups(db, cfg, background=False).backup_now() is None
    assert os.listdir(folder(cfg)) == []


DISK_FULL = """
import logging, resource, signal, sys
from pathlib import Path
from edge.backup import Backups
from edge.config import Config, StorageConfig

logging.basicConfig(level=logging.INFO, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
cfg = Config(base_dir=Path(sys.argv[1]), storage=StorageConfig(min_free_mb=0))
backups = Backups(Path(sys.argv[2]), cfg, background=False)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
print("result:", backups.backup_now())
"""


def test_a_full_disk_leaves_no_partial_backup(cfg: Config, db: Path) -> None:
    limit = db.stat().st_size // 3
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(cfg.base_dir), str(db), str(limit)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "result: None" in proc.stdout
    assert "backup failed" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(folder(cfg)) == []
    assert check_file(db) == "ok"


# ------------------------------------------------------------------ start-up check


def test_a_sound_or_missing_gallery_passes(cfg: Config, db: Path, tmp_path: Path) -> None:
    assert startup_check(db, cfg) == f"{db}: integrity check ok"
    assert startup_check(tmp_path / "none.db", cfg) == f"{tmp_path / 'none.db'}: no gallery yet"
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_gallery_is_refused_when_told(
    tmp_path: Path, db: Path, damage: object
) -> None:
    cfg = make_cfg(tmp_path, on_corrupt="refuse")
    Backups(db, cfg, background=False).backup_now()
    damage(db)  # type: ignore[operator]
    before = db.read_bytes()
    with pytest.raises(GalleryError) as err:
        startup_check(db, cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{db}: integrity check failed: ")
    assert "on_corrupt is refuse" in message
    assert db.read_bytes() == before
    assert sorted(os.listdir(db.parent)) == ["backups", "gallery.db", "gallery.key"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_gallery_is_restored_from_the_newest_good_backup(
    cfg: Config, db: Path, damage: object
) -> None:
    expected = people(cfg, db)
    good = backup_path(db, folder(cfg), datetime(2025, 1, 1, tzinfo=UTC))
    with Gallery(db) as g:
        g.backup(good)
        g.forget("p0")  # after the good backup: re-applied if the damaged log still says so
    newest = Backups(db, cfg, background=False).backup_now()
    assert newest is not None
    garbage_in_the_middle(newest)  # the newest backup is damaged too
    damage(db)  # type: ignore[operator]
    damaged = db.read_bytes()

    message = startup_check(db, cfg, actor="edge-daemon")

    (kept,) = db.parent.glob("gallery.db.corrupt-*Z")
    assert re.fullmatch(r"gallery\.db\.corrupt-\d{8}T\d{6}Z", kept.name)
    assert kept.read_bytes() == damaged
    assert message.startswith(f"{db}: integrity check failed: ")
    assert f"restored {good}, damaged file kept as {kept}" in message
    assert check_file(db) == "ok" and stat.S_IMODE(db.stat().st_mode) == 0o600
    with Gallery(db) as g:
        (event,) = g.events(kind="restore")
    assert event.actor == "edge-daemon"
    assert (event.detail["backup"], event.detail["kept"]) == (str(good), str(kept))
    # What of the damaged file's log could be read was carried over, its forget included.
    again = event.detail["forgotten_again"]
    assert again == ([] if event.detail["unreadable"] else ["p0"])
    assert people(cfg, db) == [p for p in expected if p[0] not in again]
    assert not [p for p in db.parent.iterdir() if p.name.startswith(".")]  # no temporaries
    assert startup_check(db, cfg) == f"{db}: integrity check ok"


def test_the_damaged_files_wal_goes_aside_with_it(cfg: Config, db: Path) -> None:
    Backups(db, cfg, background=False).backup_now()
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"left by a crash" * 100)
    zero_header(db)
    startup_check(db, cfg)
    (kept,) = db.parent.glob("gallery.db.corrupt-*Z")
    assert not wal.exists() and Path(f"{kept}-wal").read_bytes() == b"left by a crash" * 100
    assert check_file(db) == "ok"


def test_a_backup_under_another_key_is_passed_over(cfg: Config, db: Path, tmp_path: Path) -> None:
    good = backup_path(db, folder(cfg), datetime(2025, 1, 1, tzinfo=UTC))
    with Gallery(db) as g:
        g.backup(good)
    with Gallery(tmp_path / "elsewhere" / "gallery.db") as other:  # its own key
        other.enroll("stranger", [(np.ones(DIM), 0.9, None)])
        other.backup(backup_path(db, folder(cfg), datetime(2025, 6, 1, tzinfo=UTC)))
    truncated(db)
    assert f"restored {good}" in startup_check(db, cfg)
    assert "stranger" not in dict(people(cfg, db))


def test_no_usable_backup_refuses_and_touches_nothing(cfg: Config, db: Path) -> None:
    garbage_in_the_middle(db)
    before = db.read_bytes()
    with pytest.raises(GalleryError, match=r"no backup in .*backups passes the check"):
        startup_check(db, cfg)
    assert db.read_bytes() == before
    assert not list(db.parent.glob("gallery.db.corrupt-*"))


def damaged_index(db: Path) -> None:
    """Garbage over the templates index's root page: the check fails, the tables still read."""
    with Gallery(db) as g:
        (root,) = g.db.conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'templates_model'"
        ).fetchone()
    with db.open("r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(np.random.default_rng(2).bytes(PAGE))


def test_a_restore_counts_as_lost_only_the_events_it_did_not_carry_over(
    cfg: Config, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = Backups(db, cfg, background=False).backup_now()
    assert made is not None
    with Gallery(db, "admin") as g:  # after the backup: 4 events the restore carries over
        g.log_events([{"kind": "access", "decision": "denied", "reason": "unknown"}] * 2)
        g.forget("p3")
        g.set_active("p4", False)
    damaged_index(db)
    with caplog.at_level(logging.WARNING, logger="edge.backup"):
        message = startup_check(db, cfg, actor="edge daemon")
    assert "4 newer event(s) carried over" in message and "erased again as recorded: p3" in message
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The damaged file's events past the backup that the restored gallery lacks: none.
    (kept,) = db.parent.glob("gallery.db.corrupt-*Z")
    with Gallery(made) as b, Gallery(kept) as k, Gallery(db) as r:
        last = max(e.id for e in b.events())
        newer = [(e.ts, e.kind, e.name) for e in k.events() if e.id > last]
        have = {(e.ts, e.kind, e.name) for e in r.events()}
    assert len(newer) == 4 and not [e for e in newer if e not in have]
    assert "but the 4 event(s) carried over is lost: 0 event(s);" in warning, warning
    assert "disabled since, now ACTIVE again: p4" in warning, warning  # that one is lost
    assert "now back" not in warning, warning  # p3 was erased again: not back
