"""Disk full: the door keeps deciding, snapshots stop first, events wait, `storage` events.

The full disk is real: the daemon runs in a child process inside its own mount
namespace (``unshare --mount``) with its data folder on a small tmpfs, and the
child fills that tmpfs with a file until ``write`` fails with ENOSPC, then
deletes it. SQLite then really fails with SQLITE_FULL, the spill file really
gets ENOSPC, a snapshot really has no room. Of the ways asked for, this first
one works as root here (and in CI, the same kind of machine), so no loop device
or RLIMIT_FSIZE stand-in is used.

Run as ``python -m tests.test_faults_disk DATA`` this module is that child:
it plays the Hamilton clip twice, the first pass with the disk full, the
second after space came back, and prints what it saw as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.camera import Frame, LoopSource, OpenCVSource, Source
from edge.config import load_config
from edge.daemon import Daemon, configure_logging
from edge.engine import Engine
from edge.enroll import enroll, templates_from_images
from edge.gallery import Gallery

from .conftest import FACES, MODELS, PEOPLE, ROOT, wait_for

CLIP = FACES / "video/short_hamilton_clip.mp4"
CLIP_FRAMES = 275
TMPFS_SIZE = "8m"


class GatedSource(Source):
    """``inner``, holding back the frame at each index in ``gates`` until its Event is set."""

    def __init__(self, inner: Source, gates: dict[int, threading.Event]) -> None:
        self.inner, self.gates = inner, gates
        self.name, self.finite, self.fps = inner.name, inner.finite, inner.fps

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is not None and frame.index in self.gates:
            self.gates[frame.index].wait()
        return frame

    def close(self) -> None:
        self.inner.close()


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the filesystem is full; returns it."""
    filler = folder / "filler"
    block = b"\xa5" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:  # the last few bytes too
                f.write(b"\xa5")
        except OSError:
            pass
    return filler



def rows(db: Path) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT id, kind, name, decision, reason, mono FROM events WHERE kind != 'enroll'"
            " ORDER BY id")]
    finally:
        conn.close()


def child(data: Path) -> None:
    """Inside the namespace, ``data`` a small tmpfs: two passes of the clip around a full disk."""
    configure_logging("info")
    cfg = load_config(ROOT / "config.yaml")
    cfg = cfg.model_copy(update={
        "base_dir": data,  # anything else it writes lands on the small disk too
        "models": cfg.models.model_copy(update={"dir": MODELS}),
        "liveness": cfg.liveness.model_copy(update={"mode": "off"}),
        "voice": cfg.voice.model_copy(update={"enabled": False}),
        "decision": cfg.decision.model_copy(update={
            "cooldown_seconds": 0.0, "unknown_log_seconds": 0.0,
            "snapshot_dir": data / "snapshots"}),
        "door": cfg.door.model_copy(update={"unlock_seconds": 0.2}),
        "storage": cfg.storage.model_copy(update={"min_free_mb": 2.0}),
        "daemon": cfg.daemon.model_copy(update={"status_file": data / "status.json"}),
        "security": cfg.security.model_copy(update={"key_file": data / "gallery.key"}),
    })
    db = data / "gallery.db"
    good, _ = templates_from_images(Engine(cfg), [PEOPLE / "lin_manuel_miranda/lin1.png"])
    with Gallery(db) as g:
        enroll(g, "lin_manuel_miranda", good)

    start, second_pass = threading.Event(), threading.Event()
    source = GatedSource(LoopSource(OpenCVSource(str(CLIP), "file"), loops=2),
                         {0: start, CLIP_FRAMES: second_pass})
    factory = MockFactory()
    daemon = Daemon(cfg, db, source=source, pin_factory=factory, handle_signals=False,
                    exit_at_end=True)
    daemon.start()
    assert daemon.events is not None
    daemon.storage.check_seconds = 0.1
    daemon.events.memory_cap = 2  # so that the spill file is tried, and is full too
    seen: dict = {}

    def scenario() -> None:
        """Fill the disk, play pass one, look, free the disk, play pass two."""
        assert daemon.events is not None and daemon.door is not None
        filler = fill(data)
        events = daemon.events
        assert wait_for(lambda: events.accepted >= 1)  # the storage event
        start.set()
        assert wait_for(lambda: daemon.frames == CLIP_FRAMES and not daemon.door.is_unlocked)
        time.sleep(0.5)  # the writer retries meanwhile, and fails
        seen["full"] = {
            "free_mb": shutil.disk_usage(data).free / 1e6,
            "snapshots": sorted(p.name for p in (data / "snapshots").glob("*")),
            "events_in_table": rows(db),
            "waiting": daemon.events.waiting,
            "failing": daemon.events.failing,
            "spill_exists": daemon.events.spill_path.exists(),
            "relay": [bool(s.state) for s in factory.pin(cfg.door.pin).states],
        }
        kept = events.accepted
        filler.unlink()
        # The kept events, then "recovered", all written before the second pass.
        assert wait_for(lambda: events.accepted >= kept + 1 and events.flush(0.1))
        second_pass.set()

    def guarded() -> None:
        try:
            scenario()
        finally:
            start.set()
            second_pass.set()

    helper = threading.Thread(target=guarded)
    helper.start()
    try:
        daemon.run()  # on the thread that started it, as in production
        assert daemon.events.flush(10)
    finally:
        daemon.stop.set()
        helper.join(30)
        daemon.close()
    seen["after"] = {
        "snapshots": sorted(p.name for p in (data / "snapshots").glob("*")),
        "events": rows(db),
        "relay": [bool(s.state) for s in factory.pin(cfg.door.pin).states],
        "frames": daemon.frames,
    }
    print("RESULT " + json.dumps(seen), flush=True)


def test_storage_monitor_caches_and_reports_each_transition_once(tmp_path: Path) -> None:
    from edge.storage import StorageMonitor

    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    mon = StorageMonitor(tmp_path, min_free_mb=free_mb * 10, check_seconds=0.2)
    assert not mon.ok() and mon.went_low() and not mon.went_low()
    mon.min_free_mb = 0.0
    assert not mon.ok()  # cached: not measured again yet
    time.sleep(0.25)
    assert mon.ok() and mon.recovered() and not mon.recovered() and not mon.went_low()
    missing = StorageMonitor(tmp_path / "gone", min_free_mb=0.0)
    assert not missing.ok() and missing.free_mb is None  # cannot measure: counts as low


def test_a_full_disk_stops_snapshots_never_decisions_and_loses_no_event(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" -m tests.test_faults_disk "$2"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         "sh", "-c", script, "sh", TMPFS_SIZE, str(data), sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    full, after = result["full"], result["after"]

    # While full: the door opened for Lin all the same; nothing reached the disk.
    assert full["free_mb"] < 0.1
    assert full["relay"] == [False, True, False]
    assert full["snapshots"] == []
    assert full["events_in_table"] == []
    assert full["failing"] and full["waiting"] >= 4 and not full["spill_exists"]

    # After: every event, in order, between the two storage events; snapshots again.
    # (Whether Lin's first frames are denied before he is recognised depends on
    # the embedder; the grant, the relay and the storage events do not.)
    events = after["events"]
    kinds = [(e["kind"], e["decision"] or e["reason"].split(":")[0]) for e in events]
    assert [k for k in kinds if k != ("access", "denied")] == [
        ("storage", "low"),
        ("access", "granted"), ("door", "unlocked"), ("door", "locked"),
        ("storage", "recovered"),
        ("access", "granted"), ("door", "unlocked"), ("door", "locked"),
    ]
    assert full["waiting"] == kinds.index(("storage", "recovered"))  # none lost while full
    assert [e["mono"] for e in events] == sorted(e["mono"] for e in events)
    assert after["relay"] == [False, True, False, True, False]
    # A refusal's snapshot is kept only once the disk has room: the second pass's only.
    second_denials = kinds[kinds.index(("storage", "recovered")):].count(("access", "denied"))
    assert len(after["snapshots"]) == second_denials
    assert after["frames"] == 2 * CLIP_FRAMES
    assert out.count("storage low") == 1 and out.count("storage ok again") == 1, out
    assert out.count("cannot write yet") == 1 and out.count("cannot spill") == 1, out


if __name__ == "__main__":
    child(Path(sys.argv[1]))
