"""Database faults: busy (an admin's write transaction), unavailable, a spill file to fall back on.

The busy database is real: a second sqlite3 connection doing ``BEGIN
IMMEDIATE`` and holding it, as an ``edge`` admin command would. Events must
keep their order, survive in memory and in the spill file, and never hold up
the frame loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge.camera import LoopSource, OpenCVSource
from edge.config import load_config
from edge.daemon import Daemon
from edge.events import EventWriter
from edge.gallery import Gallery

from .conftest import FACES, PEOPLE, wait_for

CLIP = FACES / "video/short_hamilton_clip.mp4"


@contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock, as an admin command in a long transaction does."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events (ts, kind, reason) VALUES (?, 'admin', 'held')",
                     ["2000-01-01T00:00:00.000000+00:00"])
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


Row = tuple[int, Any, Any]  # id, mono, detail


def logged(db: Path, kind: str = "test") -> list[Row]:
    """(id, mono, detail) of the events of ``kind``, in the order they were written."""
    with Gallery(db) as g:
        return [(e.id, e.mono, e.detail) for e in sorted(g.events(kind=kind), key=lambda e: e.id)]


def assert_in_order(rows: list[Row], n: int) -> None:
    assert [d["seq"] for _, _, d in rows] == list(range(n))  # all of them, once each
    assert [i for i, _, _ in rows] == sorted(i for i, _, _ in rows)
    monos = [m for _, m, _ in rows]
    assert monos == sorted(monos)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gallery.db"
    Gallery(path).close()
    return path


def test_a_held_write_lock_never_blocks_put_and_loses_nothing(db: Path, caplog) -> None:
    writer = EventWriter(db, memory_cap=10)
    slowest = 0.0
    with caplog.at_level(logging.INFO, logger="edge.events"), write_lock(db):
        for seq in range(60):
            t0 = time.perf_counter()
            writer.put("test", detail={"seq": seq})
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.04)  # 2.4 s of events under the lock
        assert writer.failing and writer.spilled >= 10
        assert writer.spill_path.exists()
        assert logged(db) == []  # readers see nothing yet, and are not blocked
    assert writer.flush(10)
    writer.close()
    assert slowest < 0.005
    assert not writer.spill_path.exists()
    assert_in_order(logged(db), 60)
    assert writer.written == 60 and writer.refused == 0
    assert len([r for r in caplog.records if "cannot write yet" in r.getMessage()]) == 1


def test_readers_are_told_after_each_commit_and_only_then(db: Path) -> None:
    """The MQTT forwarder blocks on this instead of polling the table."""
    writer = EventWriter(db)
    seen: list[int] = []  # rows a reader finds when told
    writer.on_written(lambda: seen.append(len(logged(db))))
    with write_lock(db):
        writer.put("test", detail={"seq": 0})
        assert wait_for(lambda: writer.failing, 30)  # the writer tried, and was refused
        assert seen == []  # nothing committed, nobody told
    assert wait_for(lambda: seen, 30)
    writer.put("test", detail={"seq": 1})
    assert writer.flush(10)
    assert wait_for(lambda: len(seen) >= 2, 30)
    writer.close()
    assert seen[0] >= 1 and seen[-1] == 2 and seen == sorted(seen)
    assert_in_order(logged(db), 2)


def test_the_spill_file_outlives_the_process_and_is_written_back_first(db: Path) -> None:
    with write_lock(db):
        first = EventWriter(db, memory_cap=10)
        for seq in range(25):
            first.put("test", detail={"seq": seq})
        first.close(timeout=0.5)  # shutting down while the admin still holds the lock
        assert first.spill_path.exists() and first.waiting == 0
    second = EventWriter(db, memory_cap=10)
    for seq in range(25, 30):
        second.put("test", detail={"seq": seq})
    assert second.flush(10)
    second.close()
    assert_in_order(logged(db), 30)


def test_a_torn_spill_line_from_a_crash_is_cut_and_the_rest_written(db: Path) -> None:
    spill = db.with_name(db.name + ".spill.jsonl")
    lines = [f'{{"kind": "test", "detail": {{"seq": {i}}}, "mono": {i}.0}}\n' for i in range(3)]
    spill.write_text("".join(lines) + '{"kind": "test", "det')  # the crash came mid-write
    writer = EventWriter(db)
    writer.put("test", detail={"seq": 3})
    assert writer.flush(10)
    writer.close()
    assert_in_order(logged(db), 4)
    assert not spill.exists()


def test_an_unavailable_database_keeps_events_until_it_appears(tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    mount.write_text("not mounted yet")  # the data disk's folder cannot even be made
    db = mount / "gallery.db"
    writer = EventWriter(db, spill_path=tmp_path / "spill.jsonl", memory_cap=10)
    for seq in range(15):
        writer.put("test", detail={"seq": seq})
    assert not writer.flush(0.5) and writer.failing
    mount.unlink()
    for seq in range(15, 20):
        writer.put("test", detail={"seq": seq})
    assert writer.flush(10)
    writer.close()
    assert_in_order(logged(db), 20)


def test_an_event_the_gallery_refuses_is_dropped_alone(db: Path, caplog) -> None:
    writer = EventWriter(db)
    writer.put("test", detail={"seq": 0})
    writer.put("Not A Kind!", detail={"seq": -1})
    writer.put("test", detail={"seq": 1})
    assert writer.flush(10)
    writer.close()
    assert_in_order(logged(db), 2)
    assert writer.refused == 1 and "Not A Kind!" in caplog.text


def test_the_daemon_never_waits_for_a_busy_database(site, engine) -> None:
    """Lin walks past over and over (cooldown 0) while an admin holds the write lock."""
    from edge.enroll import enroll, templates_from_images

    cfg = load_config(site / "config.yaml")
    cfg = cfg.model_copy(update={
        "liveness": cfg.liveness.model_copy(update={"mode": "off"}),
        "voice": cfg.voice.model_copy(update={"enabled": False}),
        "decision": cfg.decision.model_copy(update={"cooldown_seconds": 0.0,
                                                    "unknown_log_seconds": 0.0}),
        "door": cfg.door.model_copy(update={"unlock_seconds": 0.05}),
        "storage": cfg.storage.model_copy(update={"event_memory_cap": 10}),
    })
    db = cfg.path(cfg.gallery.db)
    good, _ = templates_from_images(engine, [PEOPLE / "lin_manuel_miranda/lin1.png"])
    with Gallery(db) as g:
        enroll(g, "lin_manuel_miranda", good)
    daemon = Daemon(cfg, db, source=LoopSource(OpenCVSource(str(CLIP), "file"), loops=6),
                    pin_factory=MockFactory(), handle_signals=False, exit_at_end=True)
    daemon.start()
    assert daemon.events is not None and daemon.events.memory_cap == 10
    seen: dict = {}

    def admin() -> None:
        """Hold the write lock until events have spilled and 100 frames went by under it.

        Released on states, not after a time, so a loaded machine (fewer
        frames a second) proves the same: the loop never waited for it.
        """
        ev = daemon.events
        assert ev is not None and daemon.grabber is not None
        with write_lock(db):
            seen["frames_at_lock"], written_at_lock = daemon.frames, ev.written
            wait_for(lambda: (ev.spilled > 0 and daemon.frames - seen["frames_at_lock"] >= 100)
                     or daemon.grabber.ended, timeout=600)
            seen["failing"] = ev.failing
            seen["frames"] = daemon.frames - seen["frames_at_lock"]
            seen["events"] = ev.accepted
            seen["spilled"] = ev.spilled
            seen["written"] = ev.written - written_at_lock

    helper = threading.Thread(target=admin)
    try:
        helper.start()
        daemon.run()  # on the thread that started it, as in production
        helper.join(10)
        assert daemon.events.flush(10)
    finally:
        daemon.stop.set()
        helper.join(10)
        daemon.close()
    # Under the lock, frames and events flowed: more events than memory holds were
    # taken and spilled, none written meanwhile, and the loop went on processing frames.
    assert seen["failing"] and seen["spilled"] > 0 and seen["written"] == 0
    assert seen["events"] > 10 and seen["frames"] >= 100
    with Gallery(db) as g:
        stored = [e for e in g.events() if e.kind in ("access", "door")]
    assert len(stored) == daemon.events.accepted
    grants = [e for e in stored if e.decision == "granted"]
    assert len(grants) == 6  # once per pass of the clip, none lost
    assert [e.id for e in stored] == sorted(e.id for e in stored)
    assert [e.mono for e in stored] == sorted(e.mono or 0.0 for e in stored)
