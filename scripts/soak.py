#!/usr/bin/env python3
"""Soak benchmark: the door daemon on a looped clip in real time, watched for growth.

Not a test: it measures. The daemon runs in this process on the Hamilton clip
played over and over at its own 29.97 fps (:class:`edge.camera.LoopSource`),
with lin_manuel_miranda enrolled from one photo into a temporary gallery,
passive liveness, gpiozero's MockFactory for the relay and greetings rendered
to WAV files in the temporary folder. Every minute (and at the start and the
end) one JSON line goes to ``--out``: resident memory, open file descriptors,
threads, CPU, frames, and p50/p99 of the processing time and of the latency
(capture to processed) over the last 1000 frames. The last line is the verdict:
whether memory, descriptors, threads or latency grew between the first minute
(after warm-up) and the end.

    python scripts/soak.py --minutes 60 --out /tmp/soak-60.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory

from edge.camera import LoopSource, OpenCVSource
from edge.config import PROJECT_ROOT, Config, load_config
from edge.daemon import Daemon, configure_logging
from edge.engine import Engine
from edge.enroll import enroll, templates_from_images
from edge.gallery import open_gallery
from edge.voice import Voice, WavEngine

FACES = Path(os.environ.get("EDGE_FACES", PROJECT_ROOT.parent / "shared" / "faces"))
CLIP = FACES / "video/short_hamilton_clip.mp4"
PHOTO = FACES / "people/lin_manuel_miranda/lin1.png"

#: What counts as growth between the warm-up sample and the end.
RSS_GROWTH_MB = 20.0
RSS_GROWTH_FRACTION = 0.10
FD_GROWTH = 5
THREAD_GROWTH = 2
P99_GROWTH_FACTOR = 2.0


def proc_status() -> dict[str, int]:
    """VmRSS (kB) and Threads of this process, from /proc."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


class Sampler:
    """Takes one sample of the daemon and the process; keeps the previous for rates."""

    def __init__(self, daemon: Daemon, started: float) -> None:
        self.daemon = daemon
        self.started = started
        self._last: tuple[float, int, float] | None = None

    def sample(self, label: str) -> dict[str, Any]:
        d = self.daemon
        now = time.monotonic()
        cpu = sum(os.times()[:2])
        status = proc_status()
        fps = cpu_pct = None
        if self._last is not None:
            t0, f0, c0 = self._last
            if now > t0:
                fps = round((d.frames - f0) / (now - t0), 2)
                cpu_pct = round(100.0 * (cpu - c0) / (now - t0), 1)
        self._last = (now, d.frames, cpu)
        events = d.events
        return {
            "sample": label,
            "elapsed_s": round(now - self.started, 1),
            "rss_mb": round(status["VmRSS"] / 1024, 1),
            "fds": len(os.listdir("/proc/self/fd")),
            "threads": status["Threads"],
            "python_threads": threading.active_count(),
            "cpu_pct": cpu_pct,
            "frames": d.frames,
            "fps": fps,
            "dropped": d.grabber.dropped if d.grabber else None,
            "frame_ms": percentiles(list(d.frame_ms)),
            "latency_ms": percentiles(list(d.latency_ms)),
            "grants": d.counts["granted"],
            "decisions": sum(d.counts.values()),
            "events_written": events.written if events else None,
            "events_waiting": events.waiting if events else None,
            "camera": d.grabber.state if d.grabber else None,
        }


def verdict(base: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Did anything grow between ``base`` (after warm-up) and ``end``?"""
    rss_limit = max(RSS_GROWTH_MB, RSS_GROWTH_FRACTION * base["rss_mb"])
    grew = {
        "rss": end["rss_mb"] - base["rss_mb"] > rss_limit,
        "fds": end["fds"] - base["fds"] > FD_GROWTH,
        "threads": end["threads"] - base["threads"] > THREAD_GROWTH,
        "p99_latency": (
            base["latency_ms"]["p99"] is not None
            and end["latency_ms"]["p99"] is not None
            and end["latency_ms"]["p99"] > P99_GROWTH_FACTOR * max(base["latency_ms"]["p99"], 1.0)
        ),
    }
    return {
        "verdict": "growth" if any(grew.values()) else "no growth",
        "grew": grew,
        "compared": [base["sample"], end["sample"]],
        "rss_mb": [base["rss_mb"], end["rss_mb"]],
        "fds": [base["fds"], end["fds"]],
        "threads": [base["threads"], end["threads"]],
        "latency_p99_ms": [base["latency_ms"]["p99"], end["latency_ms"]["p99"]],
        "frame_p99_ms": [base["frame_ms"]["p99"], end["frame_ms"]["p99"]],
        "frames": end["frames"],
        "grants": end["grants"],
    }


def site_config(folder: Path) -> Config:
    cfg = load_config(PROJECT_ROOT / "config.yaml")
    return cfg.model_copy(update={
        # Every relative path (gallery, key, backups, status) lands in the temp folder.
        "base_dir": folder,
        "models": cfg.models.model_copy(update={"dir": PROJECT_ROOT / "models"}),
        "gallery": cfg.gallery.model_copy(update={"db": folder / "gallery.db"}),
        "liveness": cfg.liveness.model_copy(update={"mode": "passive"}),
        "daemon": cfg.daemon.model_copy(update={"status_file": folder / "status.json",
                                                "log_level": "warning"}),
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to run")
    ap.add_argument("--out", type=Path, default=Path("soak.jsonl"), help="JSON lines output")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    cfg = site_config(folder)
    configure_logging(cfg.daemon.log_level)
    good, bad = templates_from_images(Engine(cfg), [PHOTO])
    if bad:
        raise SystemExit(f"cannot enroll {PHOTO}: {bad}")
    with open_gallery(cfg) as g:
        enroll(g, "lin_manuel_miranda", good)

    speech = folder / "speech"
    voice = Voice(cfg.voice, engine_factory=lambda: WavEngine(speech))
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db),
                    source=LoopSource(OpenCVSource(str(CLIP), "file")), realtime=True,
                    voice=voice, pin_factory=MockFactory())
    out = args.out.open("w", encoding="utf-8")

    def write(line: dict[str, Any]) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()

    daemon.start()
    sampler = Sampler(daemon, time.monotonic())
    samples = [sampler.sample("start")]
    write(samples[0])

    def watch() -> None:
        end = sampler.started + args.minutes * 60.0
        n = 0
        while not daemon.stop.wait(max(0.0, min(end, sampler.started + (n + 1) * args.every)
                                       - time.monotonic())):
            n += 1
            last = time.monotonic() >= end
            samples.append(sampler.sample("end" if last else f"{n * args.every / 60:.3g} min"))
            write(samples[-1])
            if last:
                daemon.stop.set()

    watcher = threading.Thread(target=watch, name="soak-sampler", daemon=True)
    watcher.start()
    try:
        daemon.run()
    finally:
        daemon.stop.set()
        watcher.join(5)
        daemon.close()
    if samples[-1]["sample"] != "end":
        samples.append(sampler.sample("end"))
        write(samples[-1])
    base = samples[1] if len(samples) > 2 else samples[0]  # the first minute is warm-up
    result = verdict(base, samples[-1])
    write(result)
    out.close()
    logging.getLogger("soak").warning("%s -> %s", result["verdict"], args.out)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
