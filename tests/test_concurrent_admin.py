"""Admin commands beside the running daemon, all real processes (issue 7).

A real ``edge run`` watches a folder of frames (an enrolled face that comes
and goes, so a decision is made every visit) while real ``edge`` commands
change the gallery beside it. Nothing committed by either side may be lost:
no "(deleted)" -wal/-shm under the daemon, every decision it logged is in
``edge events``, every admin change and its audit event survives its stop.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.gallery import Gallery

from .conftest import FACES, PEOPLE, wait_for
from .helpers import edge_run, stop

MEI = FACES / "spoof/image_T1.jpg"
#: The people enrolled, one a round, while the daemon runs.
ROUND_PEOPLE = [
    PEOPLE / "barack_obama/obama.jpg",
    PEOPLE / "joe_biden/biden.jpg",
    PEOPLE / "rose_leslie/rose1.jpg",
    PEOPLE / "alex_lacamoire/alex1.jpg",
    PEOPLE / "lin_manuel_miranda/lin1.png",
]
DECISION = re.compile(r"^INFO edge\.daemon: (granted|denied) (\S+) ", re.M)


def tune(site: Path, **values: str) -> None:
    """Set ``key: value`` lines of the site's config.yaml (each key must be there once)."""
    path = site / "config.yaml"
    text = path.read_text()
    for key, value in values.items():
        pattern = re.compile(rf"^(\s+{key}:) [^\n]*", re.M)
        assert len(pattern.findall(text)) == 1, key
        text = pattern.sub(rf"\1 {value}", text)
    path.write_text(text)


def edge(site: Path, *args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one real ``edge`` admin command against the site; it must succeed (``ok``)."""
    p = subprocess.run(
        [sys.executable, "-m", "edge.cli", *map(str, args), "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SUDO_USER": "admin7", "EDGE_BUNDLE_PASSPHRASE": "correct horse 77"},
    )
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    return p


def visits(folder: Path, cycles: int, face: int = 10, away: int = 22) -> None:
    """Frames of Mei coming and going: ``face`` frames of her, ``away`` empty ones, repeated.

    At 20 fps the empty stretch is 1.1 s of media time, longer than a track
    lives, so every visit is a new track and (cooldown 0) a new decision.
    """
    folder.mkdir()
    img = cv2.imread(str(MEI))
    empty = folder.parent / "empty.png"
    cv2.imwrite(str(empty), np.zeros_like(img))
    shown = folder.parent / "mei.png"
    cv2.imwrite(str(shown), img)
    i = 0
    for _ in range(cycles):
        for src, n in ((shown, face), (empty, away)):
            for _ in range(n):
                os.link(src, folder / f"{i:06d}.png")
                i += 1


class RunningDaemon:
    """``edge run`` in its own process, its log in a file."""

    def __init__(self, site: Path, frames: Path) -> None:
        self.log = site / "daemon.log"
        self._out = self.log.open("w")
        self.proc = edge_run(site, "--source", str(frames), "--realtime", "--liveness", "off",
                             stdout=self._out)

    def text(self) -> str:
        return self.log.read_text()

    def decisions(self) -> list[tuple[str, str]]:
        return DECISION.findall(self.text())

    def deleted_gallery_fds(self) -> list[str]:
        """The daemon's descriptors of gallery files that are gone from the folder."""
        out = []
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if "gallery.db" in target and "(deleted)" in target:
                out.append(target)
        return out

    def stop(self) -> int:
        try:
            return stop(self.proc)
        finally:
            self._out.close()


def access_events(site: Path) -> list[dict]:
    """The access events as a separate ``edge events`` process sees them."""
    return list(json.loads(edge(site, "events", "--kind", "access", "--json").stdout))


@pytest.fixture
def door_site(site: Path, tmp_path: Path) -> Path:
    """A site where every visit of Mei is decided: cooldown 0, no voice, 20 fps frames."""
    tune(site, cooldown_seconds="0", unknown_log_seconds="0", agree_matches="2",
         enabled="false", fps="20", unlock_seconds="0.1")
    edge(site, "enroll", "mei", MEI)
    return site


def test_admin_commands_beside_the_running_daemon_lose_nothing(door_site: Path, tmp_path: Path):
    site = door_site
    started = time.monotonic()
    # A bundle to import each round: imp, exported and removed before the daemon starts.
    bundle = tmp_path / "imp.bundle"
    edge(site, "enroll", "imp", PEOPLE / "kit_harington/kit1.jpg")
    edge(site, "export", bundle)
    edge(site, "remove", "imp")
    visits(tmp_path / "frames", cycles=250)  # ~400 s of frames: more than the test needs
    daemon = RunningDaemon(site, tmp_path / "frames")
    rounds = len(ROUND_PEOPLE)
    try:
        assert wait_for(lambda: ("granted", "mei") in daemon.decisions(), 120), daemon.text()
        for r, photo in enumerate(ROUND_PEOPLE, start=1):
            name = f"p{r}"
            edge(site, "list")
            edge(site, "enroll", name, photo)
            edge(site, "disable", name)
            edge(site, "import", bundle)
            edge(site, "remove", "imp")
            edge(site, "key", "rotate")
            edge(site, "backup")
            assert daemon.deleted_gallery_fds() == [], f"round {r}"
            # What the daemon decided so far is visible to another process.
            logged = len(daemon.decisions())
            assert wait_for(lambda n=logged: len(access_events(site)) >= n, 60), f"round {r}"
        edge(site, "disable", "mei")
        # The daemon sees it: Mei is refused from now on.
        assert wait_for(lambda: ("denied", "mei") in daemon.decisions(), 60), daemon.text()
        assert daemon.deleted_gallery_fds() == []
    finally:
        code = daemon.stop()
    out = daemon.text()
    assert code == 0, out
    assert "Traceback" not in out
    decisions = daemon.decisions()
    assert (site / "gallery.db").exists()
    with Gallery(site / "gallery.db") as g:
        assert g.integrity_check() == "ok"
        people = {p.name: p for p in g.people()}
        events = g.events()
    # Every decision the daemon logged is in the event log, in order.
    access = [(e.decision, e.name or "unknown") for e in events if e.kind == "access"]
    assert access == decisions
    # Every admin change survived, with its audit event.
    assert {n: p.active for n, p in people.items()} == {
        "mei": False, **{f"p{r}": False for r in range(1, rounds + 1)}
    }
    audit = [(e.kind, e.name) for e in events if e.actor == "admin7"]
    expected = [("enroll", "mei"), ("enroll", "imp"), ("export", None), ("remove", "imp")]
    for r in range(1, rounds + 1):
        expected += [("enroll", f"p{r}"), ("disable", f"p{r}"), ("import", None),
                     ("remove", "imp"), ("key_rotation", None)]
    expected.append(("disable", "mei"))
    assert [a for a in audit if a[0] != "backup"] == expected
    grants = sum(1 for d in decisions if d == ("granted", "mei"))
    print(f"\nconcurrent admin: {rounds} rounds x 7 commands, {len(decisions)} decisions"
          f" ({grants} grants), {len(events)} events, {time.monotonic() - started:.0f} s wall")


def test_no_grant_after_disable_or_remove_returns(door_site: Path, tmp_path: Path):
    """Once ``edge disable``/``remove`` has returned, the daemon lets that person in no more."""
    site = door_site
    visits(tmp_path / "frames", cycles=250)
    daemon = RunningDaemon(site, tmp_path / "frames")
    late: list[dict] = []
    trials = 4
    try:
        for trial in range(trials):
            n = len(daemon.decisions())
            assert wait_for(
                lambda n=n: ("granted", "mei") in daemon.decisions()[n:], 120
            ), daemon.text()
            last = "remove" if trial == trials - 1 else "disable"
            edge(site, last, "mei")
            returned = time.monotonic()  # CLOCK_MONOTONIC: the same clock as events' mono
            # Two more visits' worth of decisions, all of them after the command returned.
            n = len(daemon.decisions())
            wait_for(lambda n=n: len(daemon.decisions()) >= n + 2, 30)
            late += [e for e in access_events(site)
                     if e["name"] == "mei" and e["decision"] == "granted" and e["mono"] > returned]
            if last == "disable":
                edge(site, "enable", "mei")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()
    assert late == []
