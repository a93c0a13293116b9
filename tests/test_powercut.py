"""Power cut: kill -9 a process at random moments while it writes events as fast as it can.

Each round a child process opens the gallery as the event writer does
(:func:`edge.events.open_events_db`: WAL, ``synchronous=FULL``) and commits
events in a loop, printing each id on its stdout (a pipe, flushed) once the
commit has returned. After a random delay the parent kills it with SIGKILL,
then reopens the file: ``PRAGMA integrity_check`` must say ok and every id the
child printed must be there. All rounds share one file, so each round also
starts from the hot WAL the last one left behind.

The children are forked from a multiprocessing forkserver that has already
imported edge, so a round costs milliseconds rather than an interpreter start.
kill -9 takes the process, not the kernel's page cache; what carries the same
promise through a real power cut is the fsync at every commit (FULL).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROUNDS = 50
PAYLOAD = "x" * 600  # about a quarter of a page per event: the WAL grows and checkpoints


def write_events(db: str, out: Connection, round_: int) -> None:
    """The child: commit events forever, printing each id after its commit returns."""
    from edge.events import open_events_db

    os.dup2(out.fileno(), 1)  # stdout is the pipe to the parent
    g = open_events_db(Path(db))
    n = 0
    while True:
        event_id = g.log_event("test", reason=f"round {round_}", detail={"n": n, "pad": PAYLOAD})
        print(event_id, flush=True)
        n += 1


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_kill_minus_nine_at_random_moments_loses_no_committed_event(tmp_path: Path) -> None:
    db = tmp_path / "gallery.db"
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["edge.events"])
    rng = random.Random(20240607)
    reported: set[int] = set()
    started = time.monotonic()
    for round_ in range(ROUNDS):
        reader, writer = ctx.Pipe(duplex=False)
        child = ctx.Process(target=write_events, args=(str(db), writer, round_), daemon=True)
        child.start()
        writer.close()
        r = reader.fileno()
        first = os.read(r, 4096)  # it is writing now
        assert first, f"round {round_}: the child died before its first commit"
        time.sleep(rng.uniform(0.0, 0.25))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        out = first + read_all(r)
        reader.close()
        assert child.exitcode == -signal.SIGKILL
        # A line cut by the kill was not fully printed, so it was not reported.
        lines = out.split(b"\n")[:-1]
        ids = {int(x) for x in lines}
        assert ids, f"round {round_}: nothing committed"
        reported |= ids

        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            present = {row[0] for row in conn.execute("SELECT id FROM events")}
        finally:
            conn.close()
        missing = reported - present
        assert not missing, f"round {round_}: {len(missing)} committed events lost"
    assert len(reported) > ROUNDS * 10  # heavy writing, not a trickle
    assert time.monotonic() - started < 40
