"""Snapshots of refused faces: off by default, private, capped, purged, erasable by name."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import Config
from edge.daemon import Daemon
from edge.gallery import Gallery
from edge.image import read_image
from edge.snapshots import MAX_LABEL_BYTES, SnapshotStore, label, parse

from .conftest import FACES, PEOPLE
from .test_daemon import config, enroll_photos
from .test_lockout import scene

DAY = 86_400.0
T0 = 1_714_551_302.123  # 2024-05-01 08:15:02.123 UTC


@pytest.fixture(scope="module")
def face():
    return read_image(FACES / "spoof/image_F2.jpg").bgr


@pytest.fixture(scope="module")
def faces():
    return [read_image(p).bgr for p in sorted((PEOPLE / "barack_obama").iterdir())]


def test_snapshots_are_off_by_default():
    cfg = Config()
    assert cfg.decision.snapshot_dir is None
    assert cfg.privacy.snapshot_days == 7


def test_a_snapshot_is_a_private_jpeg_named_for_whom_and_when(tmp_path, face):
    old = os.umask(0)  # even a careless umask must not widen the mode
    try:
        store = SnapshotStore(tmp_path / "snaps", max_mb=100, days=7)
        stranger = store.save(face, None, T0)
        ann = store.save(face, "ann", T0 + 1)
    finally:
        os.umask(old)
    assert stranger is not None and ann is not None
    assert stranger.name == "unknown_20240501T081502.123Z.jpg"
    assert ann.name == "person.ann_20240501T081503.123Z.jpg"
    for p in (stranger, ann):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert read_image(p).bgr.shape == face.shape
    assert stat.S_IMODE((tmp_path / "snaps").stat().st_mode) == 0o700
    assert [(s.label, s.t_wall) for s in store.snapshots()] == [
        ("unknown", pytest.approx(T0)), ("person.ann", pytest.approx(T0 + 1))]


def test_two_snapshots_in_the_same_millisecond_are_both_kept(tmp_path, face):
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    a, b = store.save(face, None, T0), store.save(face, None, T0)
    assert a != b and a.exists() and b.exists()
    assert b.name == "unknown_20240501T081502.123Z_1.jpg"


@pytest.mark.parametrize("name", ["unknown", "Zoë Ågren", "a/b", "x_y", "../etc", "..", "%41",
                                  "李小龍", "🙂" * 64, "a" * 64])
def test_every_name_gets_its_own_label_and_a_safe_file_name(tmp_path, face, name):
    lab = label(name)
    assert lab != label(None) and "/" not in lab and "_" not in lab
    assert len(lab.encode()) <= MAX_LABEL_BYTES
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    path = store.save(face, name, T0)
    assert path is not None and path.parent == tmp_path
    (snap,) = store.snapshots()
    assert snap.label == lab


def test_labels_never_collide():
    names = ["ann", "Ann", "an_n", "an%5Fn", "an n", "unknown", "person.ann", "🙂" * 64,
             "🙂" * 63 + "🙃"]
    assert len({label(n) for n in names} | {label(None)}) == len(names) + 1


def test_forget_erases_one_persons_snapshots_only(tmp_path, face):
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    for i, name in enumerate(["ann", None, "ann", "annabel", "bob", "ann"]):
        store.save(face, name, T0 + i)
    (tmp_path / "notes.txt").write_text("not a snapshot")
    assert store.forget("ann") == 3
    assert sorted(s.label for s in store.snapshots()) == [
        "person.annabel", "person.bob", "unknown"]
    assert store.forget("ann") == 0
    assert store.forget(None) == 1
    assert (tmp_path / "notes.txt").exists()


def test_the_size_cap_removes_the_oldest_first(tmp_path, faces):
    probe = SnapshotStore(tmp_path / "probe", max_mb=100, days=7)
    sizes = [probe.save(f, None, T0).stat().st_size for f in faces]
    cap = sum(sorted(sizes)[-3:])  # room for three of the largest, not all
    store = SnapshotStore(tmp_path / "snaps", max_mb=cap / 1e6, days=7)
    (tmp_path / "snaps").mkdir()
    (tmp_path / "snaps" / "keep.me").write_bytes(b"x" * cap)  # not ours: never counted
    saved = [store.save(f, "bob", T0 + i) for i, f in enumerate(faces)]
    assert all(p is not None for p in saved)
    left = store.snapshots()
    assert sum(s.size for s in left) <= cap
    assert [s.path for s in left] == saved[-len(left):]  # the newest survive
    assert 3 <= len(left) < len(faces)
    assert (tmp_path / "snaps" / "keep.me").exists()


def test_a_snapshot_larger_than_the_whole_cap_is_not_kept(tmp_path, face):
    store = SnapshotStore(tmp_path, max_mb=0.001, days=7)
    assert store.save(face, None, T0) is None
    assert store.snapshots() == []


def test_snapshots_are_purged_after_the_configured_days(tmp_path, face):
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    old = store.save(face, "ann", T0 - 8 * DAY)
    recent = store.save(face, None, T0 - 6 * DAY)
    assert old is not None and recent is not None and old.exists()  # saved in the past
    assert store.purge(T0) == 1
    assert [s.path for s in store.snapshots()] == [recent]
    # A save tidies up too.
    store.save(face, None, T0 + 2 * DAY)
    assert not recent.exists() and len(store.snapshots()) == 1


def test_failures_return_none_and_warn_once(tmp_path, face, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    store = SnapshotStore(blocker / "snaps", max_mb=100, days=7)
    with caplog.at_level(logging.DEBUG, logger="edge.snapshots"):
        assert [store.save(face, None, T0 + i) for i in range(3)] == [None] * 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "snapshot not saved" in warnings[0].getMessage()
        blocker.unlink()
        blocker.mkdir()
        assert store.save(face, None, T0 + 4) is not None
        assert any("saved again" in r.getMessage() for r in caplog.records)
    assert store.purge(T0) == 0 and store.forget("ann") == 0


def test_a_full_disk_or_an_unencodable_frame_costs_only_the_snapshot(tmp_path, face):
    full = SnapshotStore(tmp_path / "a", max_mb=100, days=7, min_free_mb=1e12)
    assert full.save(face, None, T0) is None
    store = SnapshotStore(tmp_path / "b", max_mb=100, days=7)
    assert store.save(np.zeros((0, 0, 3), np.uint8), None, T0) is None
    assert store.save(face, None, float("nan")) is None
    assert store.save(face, None, 1e300) is None
    assert store.save(face, None, T0) is not None


def test_snapshots_the_daemon_wrote_before_this_store_are_purged_too(tmp_path, face):
    legacy = tmp_path / f"unknown-{int((T0 - 8 * DAY) * 1000)}.jpg"
    legacy.write_bytes(b"old snapshot")
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    assert [(s.label, s.path) for s in store.snapshots()] == [("unknown", legacy)]
    assert store.purge(T0) == 1 and not legacy.exists()


def test_files_the_store_did_not_write_are_left_alone(tmp_path):
    for name in ["unknown_2024.jpg", "unknown_20241399T999999.000Z.jpg", "photo.jpg", "a_b_c"]:
        (tmp_path / name).write_bytes(b"x")
        assert parse(tmp_path / name) is None
    store = SnapshotStore(tmp_path, max_mb=1e-6, days=1e-9)
    assert store.purge(T0) == 0 and store.forget(None) == 0
    assert len(list(tmp_path.iterdir())) == 4


# --------------------------------------------------------------- in the daemon


@pytest.mark.skipif(not hasattr(Daemon, "_start_snapshots"),
                    reason="needs the snapshot wiring in edge/daemon.py (SnapshotStore in act)")
def test_the_daemon_keeps_snapshots_of_refused_faces_by_name(site, tmp_path, engine):

    poster, tablet, live = (FACES / f"spoof/image_{n}.jpg" for n in ("F1", "F2", "T1"))
    snaps = tmp_path / "snaps"
    cfg = config(site, liveness={"mode": "passive"}, voice={"enabled": False},
                 decision={"snapshot_dir": snaps})
    enroll_photos(cfg, "her", live, engine=engine)
    source = scene(tmp_path / "scene", (poster, 5), (None, 6), (tablet, 5), (None, 6), (live, 5))
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db), source=source, pin_factory=MockFactory(),
                    handle_signals=False, exit_at_end=True)
    try:
        daemon.start()
        daemon.run()
    finally:
        daemon.close()
    store = SnapshotStore(snaps, 100, 7)
    # The stranger and her photo on a tablet are kept; her live face let in is not.
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        her = g.person("her").id
    assert sorted(s.label for s in store.snapshots()) == [f"person{her}.her", "unknown"]
    assert all(stat.S_IMODE(s.path.stat().st_mode) == 0o600 for s in store.snapshots())
    assert store.forget("her") == 0  # by name alone: only what older versions wrote
    assert store.forget("her", her) == 1 and [s.label for s in store.snapshots()] == ["unknown"]
