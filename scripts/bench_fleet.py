#!/usr/bin/env python3
"""Fleet benchmark: the issue-10 targets, measured on a real PostgreSQL centre.

Not a test: it measures, and prints one JSON object (``--out`` keeps it too).
It starts its own PostgreSQL cluster (tests/pg.py: initdb in a temporary
folder, unprivileged, a unix socket) and real door processes:

1. ``latency``: a real ``edge run`` door, online; a person enrolled at the
   centre, timed from the centre's commit until the door's matcher holds them
   (its "gallery changed" log line: from then on it grants). Then removed,
   timed until the door's gallery no longer lets them in (the row the re-check
   before every grant reads is gone). Median and max over ``--trials``.
   Target: enroll -> can grant <= 2 s median; removal stops grants <= 2 s.
2. ``pull``: ``--templates`` templates (4 a person) at the centre, pulled into an
   empty door by one ``edge sync``; wall time and the process's peak RSS.
   Target: 100,000 templates <= 60 s and <= 300 MB.
3. ``push``: ``--doors`` door processes each writing ``--rate`` events a second
   for ``--seconds`` through the daemon's event writer and pushing with the
   daemon's sync worker, the centre stopped and started again half-way. Each
   event carries a per-door sequence number; afterwards every door's events are
   looked up at the centre. Target: 0 lost, 0 duplicated.

    python scripts/bench_fleet.py                       # the full targets (~6 min)
    python scripts/bench_fleet.py --templates 10000 --seconds 20 --trials 5   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fleet_env import Centre, door_site, make_centre, unit_vectors  # noqa: E402
from tests.pg import PgServer  # noqa: E402


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_DB", "EDGE_FLEET_URL")}
    return {**env, "GPIOZERO_PIN_FACTORY": "mock"}


def _model_id(site: Path) -> str:
    """The embedder model id a door on ``site`` matches with (templates of others are ignored)."""
    from edge.config import load_config
    from edge.reembed import configured_model_id

    return configured_model_id(load_config(site / "config.yaml"))


def _enroll_many(centre: Centre, people: int, per_person: int, model_id: str, prefix: str) -> None:
    """``people`` people with ``per_person`` random templates each, in one centre transaction
    (COPY: a bulk import as an admin would run it)."""
    from edge.fleet import vault
    from edge.records import pack_embedding

    vectors = unit_vectors(people * per_person, seed=11)
    with centre.admin() as c, c.transaction():
        c.execute("SELECT edge_begin_change()")
        ids = [int(r[0]) for r in c.execute(
            "INSERT INTO people (name, name_key) SELECT %s || g, %s || g"
            " FROM generate_series(1, %s) g ORDER BY g RETURNING id",
            [prefix, prefix, people]).fetchall()]
        first = int(c.execute(
            "SELECT setval(pg_get_serial_sequence('templates', 'id'),"
            " nextval(pg_get_serial_sequence('templates', 'id')) + %s)",
            [len(vectors)]).fetchone()[0]) - len(vectors)
        with c.cursor().copy(
            "COPY templates (id, person_id, embedding, quality, model_id) FROM STDIN"
        ) as copy:
            for n, v in enumerate(vectors):
                tid, pid = first + n, ids[n // per_person]
                copy.write_row((tid, pid, vault.seal(centre.key, pid, tid, pack_embedding(v)),
                                0.9, model_id))


# --------------------------------------------------------------------------- 1. latency


def bench_latency(centre: Centre, work: Path, trials: int) -> dict[str, Any]:
    site = door_site(work / "lat", centre, "lat", enabled="false")
    frames = work / "lat-frames"
    frames.mkdir()
    shutil.copyfile(ROOT.parent / "shared/faces/spoof/image_T1.jpg", frames / "0.jpg")
    model_id = _model_id(site)
    log_path = site / "daemon.log"
    out = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db"), "--source", str(frames), "--liveness", "off"],
        stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        _wait(lambda: "fleet: connected" in log_path.read_text(), 120, "the door to connect")
        db = sqlite3.connect(f"file:{site / 'gallery.db'}?mode=ro", uri=True)
        grant, stop = [], []
        for i in range(trials):
            seen = log_path.read_text().count("gallery changed:")
            t0 = time.monotonic()
            pid = centre.enroll(f"t{i}", unit_vectors(1, seed=i), model_id=model_id)
            _wait(lambda seen=seen: log_path.read_text().count("gallery changed:") > seen,
                  30, "the door to load the new person", poll=0.002)
            grant.append(time.monotonic() - t0)
            time.sleep(0.5)
            t0 = time.monotonic()
            centre.sql("DELETE FROM people WHERE id = %s", [pid])
            _wait(lambda pid=pid: db.execute(
                "SELECT count(*) FROM people WHERE id = ?", [pid]).fetchone()[0] == 0,
                30, "the door to drop the person", poll=0.002)
            stop.append(time.monotonic() - t0)
            time.sleep(0.5)
        db.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        out.close()
    return {
        "trials": trials,
        "enroll_to_grant_s": {"median": round(statistics.median(grant), 3),
                              "max": round(max(grant), 3)},
        "remove_to_refuse_s": {"median": round(statistics.median(stop), 3),
                               "max": round(max(stop), 3)},
        "target_s": 2.0,
    }


# --------------------------------------------------------------------------- 2. pull


def bench_pull(centre: Centre, work: Path, templates: int) -> dict[str, Any]:
    site = door_site(work / "pull", centre, "pull")
    per = 4
    t0 = time.monotonic()
    _enroll_many(centre, templates // per, per, _model_id(site), "big")
    loaded = time.monotonic() - t0
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "sync", "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    # The process's own high-water mark (VmHWM, reset by exec), read until it exits:
    # getrusage's maxrss would count the pages of this (large) process it was forked from.
    peak_kb = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    wall = time.monotonic() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"edge sync failed: {err.decode()}")
    with sqlite3.connect(site / "gallery.db") as db:
        local = db.execute("SELECT count(*) FROM templates").fetchone()[0]
    return {
        "templates_at_centre": templates,
        "templates_at_door": local,
        "centre_load_s": round(loaded, 1),
        "sync_s": round(wall, 1),
        "sync_peak_rss_mb": round(peak_kb / 1024, 1),
        "result": json.loads(out),
        "target": {"s": 60, "rss_mb": 300},
    }


# --------------------------------------------------------------------------- 3. push


def door_main(site: str, seconds: float, rate: float) -> None:
    """One door process of the push benchmark: write events at ``rate``, push them, report."""
    import logging

    from edge.config import load_config
    from edge.events import EventWriter
    from edge.fleet.sync import SyncWorker
    from edge.rules import door_place

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(Path(site) / "config.yaml")
    db = cfg.path(cfg.gallery.db)
    from edge.gallery import open_gallery

    open_gallery(cfg, db).close()  # created, as the daemon's start does
    writer = EventWriter(db)
    worker = SyncWorker(cfg, db, door=door_place(cfg).door).start()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate)
        while n < due:
            writer.put("bench", name="someone", decision="denied", reason="bench",
                       detail={"seq": n})
            n += 1
        time.sleep(0.005)
    writer.close()  # every event is in the gallery now
    conn = sqlite3.connect(db)
    last = conn.execute("SELECT max(id) FROM events WHERE kind = 'bench'").fetchone()[0]

    def pushed() -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'fleet_pushed'").fetchone()
        return int(row[0]) if row else 0

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and pushed() < last:
        time.sleep(0.2)
    worker.close()
    print(json.dumps({"written": n, "pushed_upto": pushed(), "last": last}), flush=True)


def bench_push(centre: Centre, work: Path, doors: int, rate: float, seconds: float
               ) -> dict[str, Any]:
    names = [f"door{i:02d}" for i in range(doors)]
    roles = " ".join(
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{d}') THEN"
        f" CREATE ROLE \"{d}\" LOGIN IN ROLE edge_door; END IF;" for d in names)
    centre.server.psql(f"DO $$BEGIN {roles} END$$")
    sites = [door_site(work / d, centre, d) for d in names]
    procs = [subprocess.Popen(
        [sys.executable, __file__, "_door", str(s), str(seconds), str(rate)],
        stdout=subprocess.PIPE, stderr=(s / "door.log").open("w"), env=_env(), text=True)
        for s in sites]
    time.sleep(seconds / 2)
    t0 = time.monotonic()
    centre.server.stop()
    time.sleep(3)
    centre.server.start()
    restart = time.monotonic() - t0
    reports = [json.loads(p.communicate(timeout=seconds + 300)[0].strip().splitlines()[-1])
               for p in procs]
    lost = dup = written = 0
    for name, site, rep in zip(names, sites, reports, strict=True):
        with sqlite3.connect(site / "gallery.db") as db:
            local = {int(i): json.loads(d)["seq"] for i, d in db.execute(
                "SELECT id, detail FROM events WHERE kind = 'bench'")}
        assert len(local) == rep["written"], (name, len(local), rep)
        written += len(local)
        rows = centre.sql(
            "SELECT local_id, (detail->>'seq')::int FROM events WHERE door = %s"
            " AND kind = 'bench'", [name])
        at_centre = {int(i): s for i, s in rows}
        lost += len(set(local) - set(at_centre))
        seqs = [s for _, s in rows]
        dup += len(seqs) - len(set(seqs))
        assert all(at_centre.get(i, s) == s for i, s in local.items()), name
    offline_logged = sum("centre unreachable" in (s / "door.log").read_text() for s in sites)
    return {
        "doors": doors, "rate_per_door": rate, "seconds": seconds,
        "centre_down_s": round(restart, 1), "doors_that_noticed": offline_logged,
        "events_written": written, "lost": lost, "duplicated": dup,
        "target": {"lost": 0, "duplicated": 0},
    }


# --------------------------------------------------------------------------- main


def _wait(pred: Any, timeout: float, what: str, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_door":
        door_main(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--doors", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--only", choices=["latency", "pull", "push"], action="append")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-fleet-"))
    server = PgServer(tcp=False)
    result: dict[str, Any] = {"cpu_count": os.cpu_count(),
                              "load_avg_start": os.getloadavg()[0]}
    try:
        parts = args.only or ["latency", "pull", "push"]
        for part in parts:
            db = server.new_database()
            centre = make_centre(server, db, work / f"{part}-admin",
                                 doors=("lat", "pull"))
            t0 = time.monotonic()
            if part == "latency":
                result[part] = bench_latency(centre, work, args.trials)
            elif part == "pull":
                result[part] = bench_pull(centre, work, args.templates)
            else:
                result[part] = bench_push(centre, work, args.doors, args.rate, args.seconds)
            result[part]["wall_s"] = round(time.monotonic() - t0, 1)
            print(json.dumps({part: result[part]}), flush=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
