"""What the door outputs cost the frame loop, and how fast a grant reaches each of them.

Runs :func:`edge.bench.replay` (what ``edge bench --replay`` runs) on the
Hamilton clip, alternating ``door.outputs: [relay]`` alone with every output
on (relay, Wiegand, OSDP, MQTT, metrics), back to back, ``--runs`` times each,
and prints the medians of the runs' frame p99s and medians. The machine may
be shared and noisy: only the medians over several alternating runs mean much.

Everything is real and local: a mosquitto broker on a free port, a paho
subscriber and libosdp's control panel (on a pseudo-terminal, secure channel
on) each in a process of its own, so they do not share the daemon's GIL (a
real broker and panel are other machines). The Wiegand pins are gpiozero's
MockFactory. Latency is from the decision (the access event's monotonic
stamp) to the first Wiegand edge, to the panel's card read and to the MQTT
subscriber's message; CLOCK_MONOTONIC is system-wide, so the processes agree.

    .venv/bin/python scripts/bench_outputs.py --runs 5 [--grants none|sparse|every]

``--grants none`` (default) decides nothing (the decision window is never
reached: the tracker is reset every frame), ``sparse`` grants at most once a
second of video (cooldown 1 s; latency figures), ``every`` grants on every
frame with the face (agree_matches 1, cooldown 0: the worst case). Both grant
modes turn liveness off (a single frame decides) and the lockout off (the
clip's other faces are unknowns).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pty
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "faces"
CLIP = SHARED / "video" / "short_hamilton_clip.mp4"
PERSON, CARD = "lin_manuel_miranda", "101:20202"
PHOTO = SHARED / "people" / PERSON / "lin1.png"
KEY = "000102030405060708090a0b0c0d0e0f"
ADDRESS = 7

PANEL = r"""
import json, os, select, sys, time, osdp
fd, key, address = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3])
refresh = float(sys.argv[4])
os.set_blocking(fd, False)
class Ch(osdp.Channel):
    def read(self, n):
        try: return os.read(fd, n)
        except OSError: return b""
    def write(self, b):
        print(json.dumps({"w": time.monotonic()}), flush=True)
        try: return os.write(fd, b)
        except OSError: return 0
    def flush(self): pass
class Panel(osdp.ControlPanel):
    # libosdp's own loop refreshes every 20 ms; a faster panel refreshes when the
    # reader's reply is on the line or every `refresh` seconds (its poll timer).
    @staticmethod
    def refresh(event, lock, ctx):
        while not event.is_set():
            with lock:
                ctx.refresh()
            select.select([fd], [], [], refresh)
cls = osdp.ControlPanel if refresh >= 0.02 else Panel
cp = cls([osdp.PDInfo(address, Ch(), scbk=key, flags=[osdp.LibFlag.EnforceSecure])],
         log_level=osdp.LogLevel.Warning)
cp.start()
print(json.dumps({"sc": cp.sc_wait_all(60)}), flush=True)
while True:
    ev = cp.get_event(address, 3600)
    if ev is not None and ev.get("event") == osdp.Event.CardRead:
        print(json.dumps({"t": time.monotonic(), "card_read": ev["data"].hex()}), flush=True)
"""

SUBSCRIBER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
def on_message(_c, _u, msg):
    if msg.topic.endswith("/access"):
        print(json.dumps({"t": time.monotonic(), "event": json.loads(msg.payload)}), flush=True)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
c.on_connect = lambda cl, *_: (cl.subscribe("edge-access/#", 1), print('{"up": 1}', flush=True))
c.on_message = on_message
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lines:
    """A child process whose stdout lines are JSON, collected on a thread."""

    def __init__(self, args: list[str], **kw: Any) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, **kw)
        self.got: list[dict[str, Any]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.got.append(json.loads(line))

    def wait_for(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for g in self.got:
                if key in g:
                    return g
            time.sleep(0.05)
        raise SystemExit(f"bench_outputs: no {key!r} from {self.proc.args[:2]}")

    def take(self) -> list[dict[str, Any]]:
        got, self.got = self.got, []
        return got

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def site(folder: Path) -> Path:
    """A config.yaml like the project's, writing into ``folder``, with the OSDP key beside it."""
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {ROOT / 'models'} ")
    text = text.replace("  db: data/gallery.db", f"  db: {folder / 'gallery.db'}")
    text = text.replace("  key_file: data/gallery.key", f"  key_file: {folder / 'gallery.key'}")
    text = text.replace("  status_file: data/status.json", f"  status_file: {folder}/status.json")
    (folder / "scbk").write_text(KEY + "\n")
    (folder / "scbk").chmod(0o600)
    (folder / "config.yaml").write_text(text)
    return folder / "config.yaml"


def falling_edges(pin: Any) -> list[float]:
    """Monotonic times at which a MockPin went low (its states keep deltas, newest last)."""
    # Absolute time of each state: the last change minus the deltas after it.
    t, times = pin._last_change, []
    for s in reversed(list(pin.states)):
        times.append((t, s.state))
        t -= s.timestamp
    times.reverse()
    return [ti for (ti, st), (_, prev) in zip(times[1:], times, strict=False) if not st and prev]


def wiegand_frames(factory: Any, d0: int, d1: int, bits: int) -> list[float]:
    """Start time of each Wiegand frame sent (every ``bits`` edges on D0 and D1 together)."""
    edges = sorted(falling_edges(factory.pin(d0)) + falling_edges(factory.pin(d1)))
    return edges[::bits]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--grants", choices=("none", "sparse", "every"), default="none")
    ap.add_argument("--only", choices=("relay", "all"), help="run one variant only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--panel-refresh-ms", type=float, default=20.0,
                    help="the panel's refresh period: 20 is libosdp's own CP loop; "
                         "less, a panel that polls as often as libosdp's core allows "
                         "(every 50 ms)")
    args = ap.parse_args()

    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from edge.bench import replay
    from edge.cards import set_card
    from edge.config import load_config
    from edge.engine import Engine
    from edge.enroll import enroll, templates_from_images
    from edge.gallery import Gallery

    # SIGTERM ends the run through the finally below: the broker and panel go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    tmp = Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    children: list[Any] = []
    master, slave = pty.openpty()
    tty.setraw(master)
    try:
        base = load_config(site(tmp))
        engine = Engine(base)
        good, bad = templates_from_images(engine, [PHOTO])
        assert not bad, bad
        db = base.path(base.gallery.db)
        with Gallery(db) as g:
            enroll(g, PERSON, good)
            set_card(g, PERSON, CARD, base.wiegand.format)
        del engine
        port = free_port()
        (tmp / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(tmp / "mosquitto.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.append(broker)
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise SystemExit("bench_outputs: mosquitto did not start") from None
                time.sleep(0.05)
        sub = Lines([sys.executable, "-c", SUBSCRIBER, str(port)])
        children.append(sub)
        sub.wait_for("up")

        def start_panel(daemon: Any) -> None:
            # A panel of its own for each run, started once the reader is up: a
            # reader that went away (the last run's) sends libosdp's panel offline
            # for five minutes. The clip plays once the panel polls over the
            # secure channel, as at a door that has run a while.
            panel = Lines([sys.executable, "-c", PANEL, str(master), KEY, str(ADDRESS),
                           str(args.panel_refresh_ms / 1000)], pass_fds=[master])
            children.append(panel)
            if not panel.wait_for("sc")["sc"]:
                raise SystemExit("bench_outputs: the panel's secure channel did not come up")
            end = time.monotonic() + 30
            while daemon.outputs.waiting():
                if time.monotonic() > end:
                    raise SystemExit(f"bench_outputs: not ready: {daemon.outputs.waiting()}")
                time.sleep(0.05)

        decision = {"none": {}, "sparse": {"agree_matches": 1, "cooldown_seconds": 1.0},
                    "every": {"agree_matches": 1, "cooldown_seconds": 0.0}}[args.grants]

        def cfg_for(variant: str) -> Any:
            # No lockout: the clip's other faces are unknowns, and a lockout would stop the grants.
            sections: dict[str, dict[str, Any]] = {"decision": decision,
                                                   "security": {"lockout_failures": 1000}}
            if args.grants != "none":  # one frame decides: no window for liveness frames
                sections["liveness"] = {"mode": "off"}
            if variant == "all":
                sections |= {
                    "door": {"outputs": ("relay", "wiegand", "osdp"), "name": "lobby"},
                    "osdp": {"device": os.ttyname(slave), "address": ADDRESS,
                             "scbk_file": tmp / "scbk", "baud": 115200},
                    "mqtt": {"host": "127.0.0.1", "port": port},
                    "metrics": {"listen": f"127.0.0.1:{free_port()}"},
                }
            return base.model_copy(update={
                k: getattr(base, k).model_copy(update=v) for k, v in sections.items()})

        results: dict[str, list[dict[str, Any]]] = {"relay": [], "all": []}
        latency: dict[str, list[float]] = {"wiegand": [], "osdp": [], "mqtt": []}
        polls: list[float] = []  # the panel's intervals between polls, ms
        answers: list[float] = []  # the panel's poll out -> the card read in, ms
        variants = [args.only] if args.only else ["relay", "all"]
        for i in range(args.runs):
            for variant in variants:
                cfg = cfg_for(variant)
                factory = MockFactory()
                Device.pin_factory = factory
                with Gallery(db) as g:
                    last = max([e.id for e in g.events()], default=0)
                r = replay(cfg, CLIP, db, before_play=start_panel if variant == "all" else None)
                results[variant].append(r)
                if variant != "all":
                    continue
                time.sleep(3.0)  # let the outputs and the subscriber catch up
                with Gallery(db) as g:
                    grants = [e for e in g.events(kind="access")
                              if e.id > last and e.decision == "granted"]
                monos = [e.mono for e in grants]
                frames = wiegand_frames(factory, cfg.wiegand.d0_pin, cfg.wiegand.d1_pin,
                                        cfg.wiegand.format)
                panel = children.pop()
                said = panel.take()
                panel.stop()
                reads = [p["t"] for p in said if "card_read" in p]
                # Polls while the reader was online: from the first grant to the last read.
                writes = [p["w"] for p in said if "w" in p
                          and monos and reads and monos[0] <= p["w"] <= reads[-1]]
                polls += [(b - a) * 1000 for a, b in itertools.pairwise(writes)]
                answers += [(t - max(w for w in writes if w <= t)) * 1000
                            for t in reads if any(w <= t for w in writes)]
                msgs = {round(m["event"].get("mono", 0), 6): m["t"] for m in sub.take()
                        if m.get("event", {}).get("decision") == "granted"}
                for mono in monos:
                    if round(mono, 6) in msgs:
                        latency["mqtt"].append((msgs[round(mono, 6)] - mono) * 1000)
                # Each frame or card read belongs to the last grant before it (grants
                # are >= 1 s apart with --grants sparse).
                for name, arrivals in (("wiegand", frames), ("osdp", reads)):
                    for t in arrivals:
                        before = [m for m in monos if m <= t]
                        if before:
                            latency[name].append((t - max(before)) * 1000)
            print(f"run {i + 1}: " + "; ".join(
                f"{v} p99 {results[v][-1]['p99_ms']} ms median {results[v][-1]['median_ms']} ms "
                f"cpu p99 {results[v][-1]['cpu_p99_ms']} ms other threads "
                f"{results[v][-1]['other_threads_cpu_ms_per_frame']} ms/frame "
                f"grants {results[v][-1]['grants']}" for v in variants), file=sys.stderr)

        def med(v: str, key: str) -> float | None:
            xs = [r[key] for r in results[v]]
            return round(statistics.median(xs), 2) if xs else None

        summary: dict[str, Any] = {
            "grants": args.grants,
            "runs": args.runs,
            "frames": results[variants[0]][0]["frames"],
            **{f"{v}_p99_ms": [r["p99_ms"] for r in results[v]] for v in variants},
            **{f"{v}_p99_ms_median": med(v, "p99_ms") for v in variants},
            **{f"{v}_median_ms_median": med(v, "median_ms") for v in variants},
            **{f"{v}_cpu_p99_ms_median": med(v, "cpu_p99_ms") for v in variants},
            **{f"{v}_cpu_median_ms_median": med(v, "cpu_median_ms") for v in variants},
            **{f"{v}_other_threads_cpu_ms_per_frame_median":
               med(v, "other_threads_cpu_ms_per_frame") for v in variants},
        }
        if "all" in variants and "relay" in variants:
            summary["p99_added_ms"] = round(summary["all_p99_ms_median"]
                                            - summary["relay_p99_ms_median"], 2)
        for k, xs in latency.items():
            if xs:
                summary[f"{k}_latency_ms"] = {
                    "n": len(xs), "median": round(statistics.median(xs), 1),
                    "p90": round(float(sorted(xs)[int(0.9 * (len(xs) - 1))]), 1),
                    "max": round(max(xs), 1)}
        if polls:
            summary["panel_poll_interval_ms"] = {
                "refresh_ms": args.panel_refresh_ms, "n": len(polls),
                "median": round(statistics.median(polls), 1),
                "p90": round(float(sorted(polls)[int(0.9 * (len(polls) - 1))]), 1),
                "poll_to_card_read_ms_median": round(statistics.median(answers), 1)
                if answers else None}
        summary["grants_per_run"] = {v: [r["grants"] for r in results[v]] for v in variants}
        print(json.dumps(summary, indent=None if args.json else 2))
        return 0
    finally:
        for c in reversed(children):
            (c.stop() if isinstance(c, Lines) else (c.terminate(), c.wait(10)))
        os.close(master)
        os.close(slave)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
