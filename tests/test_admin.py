"""Issue 7's admin defects, each as a new site admin would meet it.

Real models, real photos from ../shared/faces, real SQLite files in tmp_path,
the ``edge`` command through click's CliRunner (see tests/test_cli.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.match import DIM

from .conftest import FACES, PEOPLE
from .test_cli import Site, edge, make_site, one_line, state
from .test_daemon import config, enroll_photos, folder_of, run_daemon

ME = FACES / "spoof/image_T1.jpg"


@pytest.fixture
def s(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def enroll(site: Site, name: str, *photos: Path, extra: tuple[str, ...] = ()):
    return edge("enroll", name, *photos, *extra, *site.opts())


def names(site: Site, db: Path | None = None) -> list[str]:
    r = edge("list", "--json", *site.opts(db))
    assert r.exit_code == 0, r.output
    return [p["name"] for p in json.loads(r.stdout)]


# --------------------------------------------------------------- 13: status file


def test_status_file_is_private(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "her", ME, engine=engine)
    old = os.umask(0o022)
    try:
        run_daemon(cfg, folder_of(tmp_path, "f", ME, 3), tmp_path)
    finally:
        os.umask(old)
    status = cfg.path(cfg.daemon.status_file)
    assert "her" in status.read_text()
    assert stat.S_IMODE(status.stat().st_mode) == 0o600


# --------------------------------------------------------------- 11: export targets

PASS = {"EDGE_BUNDLE_PASSPHRASE": "correct horse battery"}


@pytest.fixture
def enrolled(s: Site) -> Site:
    """A site with one person (the spoof set's live face) enrolled."""
    r = enroll(s, "mei", ME)
    assert r.exit_code == 0, r.output
    return s


def test_export_refuses_to_overwrite_without_force(enrolled: Site, tmp_path: Path):
    bundle = tmp_path / "out.json"
    bundle.write_text("precious")
    one_line(edge("export", bundle, *enrolled.opts(), env=PASS), 1, str(bundle), "--force")
    assert bundle.read_text() == "precious"
    r = edge("export", bundle, "--force", *enrolled.opts(), env=PASS)
    assert r.exit_code == 0, r.output
    assert bundle.read_text() != "precious" and stat.S_IMODE(bundle.stat().st_mode) == 0o600


@pytest.mark.parametrize("target", ["device", "folder", "fifo", "link"])
def test_export_refuses_what_is_not_a_regular_file(enrolled: Site, tmp_path: Path, target):
    path = tmp_path / target
    if target == "device":  # a twin of /dev/full (never the real one: old code replaced it)
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/full").st_rdev)
    elif target == "folder":
        path.mkdir()
    elif target == "fifo":
        os.mkfifo(path)
    elif target == "link":
        (tmp_path / "real.json").write_text("x")
        path.symlink_to(tmp_path / "real.json")
    before = os.lstat(path)
    for force in ((), ("--force",)):
        r = edge("export", path, *force, *enrolled.opts(), env=PASS)
        one_line(r, 1, str(path))
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_export_fails_loudly_on_a_write_error(enrolled: Site, tmp_path: Path):
    import subprocess
    import sys

    # The gallery is opened first (SQLite writes too); then files may not exceed 200 bytes.
    script = (
        "import resource, signal, sys\n"
        "from edge.bundle import export_bundle\n"
        "from edge.errors import GalleryError\n"
        "from edge.config import load_config\n"
        "from edge.gallery import open_gallery\n"
        "g = open_gallery(load_config(sys.argv[1]))\n"
        "g.people()\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    export_bundle(g, sys.argv[2], 'correct horse battery')\n"
        "except GalleryError as e:\n"
        "    sys.exit(f'edge: {e}')\n"
    )
    bundle = tmp_path / "out" / "b.json"
    bundle.parent.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", script, str(enrolled.config), str(bundle)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"edge: {bundle}: cannot write") and "Traceback" not in r.stderr
    assert list(bundle.parent.iterdir()) == []  # no bundle and no temporary file left


# --------------------------------------------------------------- 10: verify --pairs

KIT = PEOPLE / "kit_harington"


def pairs_folder(tmp_path: Path, header: str, rows: list[str], bom: bool = False) -> Path:
    """A folder with photos/ (two of Kit, a faceless crop, a group photo) and pairs.csv."""
    folder = tmp_path / "pairs"
    (folder / "photos").mkdir(parents=True)
    for p in (KIT / "kit1.jpg", KIT / "kit2.jpg", FACES / "group/kit_with_rose.jpg"):
        shutil.copyfile(p, folder / "photos" / p.name)
    img = cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))
    cv2.imwrite(str(folder / "photos/blank.png"), img[:150, :150])
    text = header + "\n" + "".join(r + "\n" for r in rows)
    (folder / "pairs.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return folder / "pairs.csv"


def test_a_broken_no_pair_is_an_error_not_a_pass(s: Site, tmp_path: Path, monkeypatch):
    csv_file = pairs_folder(
        tmp_path,
        "file_x,file_y,same",
        [
            "photos/kit1.jpg,photos/blank.png,no",  # faceless: must not read as "different"
            "photos/kit1.jpg,photos/missing.jpg,no",
            "photos/kit1.jpg,photos/kit2.jpg,yes",
        ],
        bom=True,  # as Excel saves it
    )
    monkeypatch.chdir(tmp_path)  # paths are relative to the CSV's folder, not this one
    r = edge("verify", "--pairs", csv_file, "--json", *s.opts())
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 3  # every row printed before the exit
    assert [row["same"] for row in rows] == [False, False, True]
    assert "no face" in rows[0]["error"] and rows[0]["similarity"] is None
    assert "no such file" in rows[1]["error"]
    assert "error" not in rows[2] and rows[2]["verified"] is True
    assert len(r.stderr.splitlines()) == 2


@pytest.mark.parametrize("value", ["maybe", "", "Y"])
def test_a_bad_same_value_is_refused_naming_the_line(s: Site, tmp_path: Path, value: str):
    csv_file = pairs_folder(
        tmp_path, "file_x,file_y,same", ["photos/kit1.jpg,photos/kit2.jpg,TRUE",
                                         f"photos/kit1.jpg,photos/kit2.jpg,{value}"]
    )
    one_line(edge("verify", "--pairs", csv_file, *s.opts()), 1, str(csv_file), "line 3", "same")


def test_verify_refuses_a_photo_of_several_people(s: Site, tmp_path: Path):
    group = FACES / "group/kit_with_rose.jpg"
    r = edge("verify", "--json", KIT / "kit1.jpg", group, *s.opts())
    assert r.exit_code == 1
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["similarity"] is None and "more than one face" in row["error"]
    assert r.stderr == f"edge: {group}: more than one face (2); use a photo of one person\n"


def test_a_tiny_face_is_too_small_not_missing(s: Site, tmp_path: Path):
    img = cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))
    tiny = tmp_path / "tiny.png"  # the face about 20x20 pixels
    cv2.imwrite(str(tiny), cv2.resize(img, None, fx=0.071, fy=0.071, interpolation=cv2.INTER_AREA))
    r = edge("verify", KIT / "kit1.jpg", tiny, *s.opts())
    assert r.exit_code == 1
    assert r.stderr.startswith(f"edge: {tiny}: face too small"), r.stderr


# --------------------------------------------------------------- 6: one name, one face

ROSE = PEOPLE / "rose_leslie"
JOSE_NFC = unicodedata.normalize("NFC", "José Ñúñez")
JOSE_NFD = unicodedata.normalize("NFD", "José Ñúñez")


def test_names_ignore_case_and_accent_form(s: Site):
    assert JOSE_NFC != JOSE_NFD
    assert enroll(s, "Rose", ROSE / "rose1.jpg").exit_code == 0
    r = enroll(s, "rose", ROSE / "rose2.jpg")  # the same person: her second photo
    assert r.exit_code == 0, r.output
    assert names(s) == ["Rose"]
    r = edge("list", "--json", *s.opts())
    assert json.loads(r.stdout)[0]["templates"] == 2
    for spelled in ("ROSE", "rose"):
        r = edge("disable", spelled, *s.opts())
        assert r.exit_code == 0, r.output
    assert json.loads(edge("list", "--json", *s.opts()).stdout)[0]["active"] is False

    assert enroll(s, JOSE_NFD, KIT / "kit1.jpg").exit_code == 0
    assert enroll(s, JOSE_NFC, KIT / "kit2.jpg").exit_code == 0
    assert names(s) == [JOSE_NFC, "Rose"]  # stored in NFC: one person, listed once
    before = state(s.db)
    one_line(edge("rename", "Rose", JOSE_NFD.upper(), *s.opts()), 1, "already exists")
    assert state(s.db) == before
    r = edge("rename", "Rose", "ROSE", *s.opts())  # her own name in capitals is fine
    assert r.exit_code == 0, r.output
    assert names(s) == [JOSE_NFC, "ROSE"]
    r = edge("remove", "josé ñúñez", *s.opts())
    assert r.exit_code == 0, r.output
    assert names(s) == ["ROSE"]


def test_one_face_cannot_be_enrolled_under_two_names(s: Site):
    assert enroll(s, "Rose", ROSE / "rose1.jpg").exit_code == 0
    before = state(s.db)
    line = one_line(enroll(s, "rosie", ROSE / "rose2.jpg"), 1, "'rosie'", "'Rose'", "--force")
    assert "already enrolled as" in line
    assert state(s.db) == before and names(s) == ["Rose"]
    # Another person's face is fine, and --force overrides when they really are two people.
    assert enroll(s, "kit", KIT / "kit1.jpg").exit_code == 0
    r = enroll(s, "rosie", ROSE / "rose2.jpg", extra=("--force",))
    assert r.exit_code == 0, r.output
    assert names(s) == ["Rose", "kit", "rosie"]


# --------------------------------------------------------------- 2: import collisions


def bundle_of(tmp_path: Path, name: str, *photos: Path) -> Path:
    """A sealed bundle from another site holding ``name`` enrolled from ``photos``."""
    (tmp_path / "other").mkdir()
    other = make_site(tmp_path / "other")
    assert edge("enroll", name, *photos, *other.opts()).exit_code == 0
    out = tmp_path / "bundle.json"
    assert edge("export", out, *other.opts(), env=PASS).exit_code == 0
    return out


def test_import_refuses_two_humans_under_one_name(s: Site, tmp_path: Path):
    assert enroll(s, "kit", PEOPLE / "joe_biden/biden.jpg").exit_code == 0  # site A's kit
    bundle = bundle_of(tmp_path, "Kit", KIT / "kit1.jpg", KIT / "kit2.jpg")  # Kit Harington
    before = state(s.db)
    line = one_line(edge("import", bundle, *s.opts(), env=PASS), 1, "'Kit'", "--merge", "--rename")
    assert "do NOT look like" in line
    assert state(s.db) == before

    # --rename: the bundle's Kit is someone new; the local kit is untouched.
    copy = tmp_path / "renamed.db"
    shutil.copyfile(s.db, copy)
    r = edge("import", bundle, "--rename", "kit.h", "--json", *s.opts(copy), env=PASS)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["people_added"], out["templates_added"], out["renamed"]) == (1, 2, ["Kit -> kit.h"])
    listed = json.loads(edge("list", "--json", *s.opts(copy)).stdout)
    assert {p["name"]: p["templates"] for p in listed} == {"kit": 1, "kit.h": 2}
    r = edge("import", bundle, "--rename", "kit=KIT", *s.opts(), env=PASS)
    one_line(r, 1, "already a person")
    assert state(s.db) == before

    # --merge does what the admin says, and warns that the faces differ.
    r = edge("import", bundle, "--merge", *s.opts(), env=PASS)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("edge: warning: ") and "does not look like" in r.stderr
    assert "merged kit" in r.stdout


def test_import_of_the_same_person_merges_quietly_when_asked(s: Site, tmp_path: Path):
    assert enroll(s, "kit", KIT / "kit3.jpg").exit_code == 0
    bundle = bundle_of(tmp_path, "kit", KIT / "kit1.jpg")
    line = one_line(edge("import", bundle, *s.opts(), env=PASS), 1, "'kit'", "--merge")
    assert "NOT" not in line
    r = edge("import", bundle, "--merge", *s.opts(), env=PASS)
    assert (r.exit_code, r.stderr) == (0, ""), r.output
    r = edge("import", bundle, *s.opts(), env=PASS)  # all present now: nothing to refuse
    assert r.exit_code == 0 and "0 templates added, 1 already present" in r.stdout


# --------------------------------------------------------------- 7: snapshots follow the person


def test_forget_after_rename_erases_the_snapshots(site, tmp_path, engine):
    snaps = tmp_path / "snaps"
    text = (site / "config.yaml").read_text()
    text = text.replace("  snapshot_dir: null", f"  snapshot_dir: {snaps}")
    (site / "config.yaml").write_text(text)
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "her", ME, engine=engine)
    opts = ["--config", str(site / "config.yaml")]
    assert edge("disable", "her", *opts).exit_code == 0  # refused: her face is kept
    run_daemon(cfg, folder_of(tmp_path, "f", ME, 10), tmp_path)
    assert len(list(snaps.iterdir())) == 1
    # An id-less snapshot as an older version wrote it, under the name she had then.
    old = snaps / "person.her_20240501T081502.123Z.jpg"
    old.write_bytes(next(snaps.iterdir()).read_bytes())
    (snaps / "unknown_20240501T081502.123Z.jpg").write_bytes(b"stranger")
    assert edge("rename", "her", "ann", *opts).exit_code == 0
    r = edge("forget", "ann", "--json", *opts)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["snapshots_erased"] == 2
    assert [p.name for p in snaps.iterdir()] == ["unknown_20240501T081502.123Z.jpg"]


# --------------------------------------------------------------- 12: clarity


def test_bad_paths_are_one_line_not_a_usage_block(s: Site, tmp_path: Path):
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    one_line(edge("list", "--config", folder), 2, f"--config {folder}", "folder")
    one_line(edge("list", "--config", s.config, "--db", folder), 2, f"--db {folder}", "folder")
    one_line(edge("export", folder, *s.opts(), env=PASS), 1, str(folder), "folder")
    missing = tmp_path / "missing.db"
    one_line(edge("restore", missing, *s.opts()), 2, str(missing), "does not exist")


def test_events_kind_must_be_a_real_kind(enrolled: Site):
    one_line(edge("events", "--kind", "bogus", *enrolled.opts()), 2, "bogus", "enroll")
    r = edge("events", "--kind", "enroll", "--json", *enrolled.opts())
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1


def test_text_events_show_what_each_admin_change_did(enrolled: Site):
    for args in (["rename", "mei", "may"], ["disable", "may"], ["remove", "may"]):
        assert edge(*args, *enrolled.opts(), env={"SUDO_USER": "boss"}).exit_code == 0
    r = edge("events", *enrolled.opts())
    lines = r.stdout.splitlines()
    assert lines[0].split(" ", 1)[1].startswith("enroll mei added=1 model_id=")
    assert " skipped=0 by " in lines[0]
    assert [line.split(" ", 1)[1] for line in lines[1:]] == [
        "rename may new=may old=mei by boss",
        "disable may active=no by boss",
        "remove may templates=1 by boss",
    ]


def test_identify_marks_disabled_people(enrolled: Site):
    assert edge("disable", "mei", *enrolled.opts()).exit_code == 0
    r = edge("identify", "--json", ME, *enrolled.opts())
    (face,) = json.loads(r.stdout)["faces"]
    assert (face["name"], face["status"]) == ("mei", "disabled")
    r = edge("identify", ME, *enrolled.opts())
    assert r.stdout.startswith("mei\t") and r.stdout.rstrip().endswith("\t(disabled)")


def test_a_failed_restore_names_the_backup_not_a_temporary_file(s: Site, tmp_path: Path):
    assert enroll(s, "mei", ME).exit_code == 0
    (tmp_path / "b").mkdir()
    b = make_site(tmp_path / "b")  # another site: another gallery key
    assert edge("enroll", "kit", KIT / "kit1.jpg", *b.opts()).exit_code == 0
    r = edge("backup", "--json", *b.opts())
    theirs = Path(json.loads(r.stdout)["file"])
    before = state(s.db)
    line = one_line(edge("restore", theirs, *s.opts()), 1, str(theirs), "sealed under key")
    assert ".restore-" not in line
    assert state(s.db) == before


def test_an_automatic_restore_warns_saying_what_was_lost(tmp_path: Path, caplog):
    import logging

    from edge.backup import Backups, startup_check
    from edge.gallery import open_gallery

    from .test_backup import make_cfg

    cfg = make_cfg(tmp_path)
    rng = np.random.default_rng(3)
    with open_gallery(cfg, actor="admin") as g:
        for name in ("ann", "bob", "cy"):
            g.enroll(name, [(rng.standard_normal(DIM), 0.9, None) for _ in range(20)])
        db = g.path
    assert Backups(db, cfg, background=False).backup_now() is not None
    with open_gallery(cfg, actor="admin") as g:
        g.set_active("bob", False)  # after the backup: the restore brings bob back in
        g.enroll("dee", [(rng.standard_normal(DIM), 0.9, None)])
        g.log_events([{"kind": "access", "decision": "denied", "reason": "unknown"}] * 3)
    data = bytearray(db.read_bytes())
    data[-4096:] = rng.bytes(4096)  # the last page: the integrity check fails, the rest reads
    db.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="edge.backup"):
        message = startup_check(db, cfg, actor="edge daemon")
    assert "restored" in message
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert "restored" in text and "is lost" in text, text
    # The 5 events since the backup were carried over: none of them is lost.
    assert "5 event(s) carried over is lost: 0 event(s);" in text, text
    assert "added since, now gone: dee" in text, text
    assert "disabled since, now ACTIVE again: bob" in text, text


def test_a_killed_key_rotation_leaves_no_key_temporaries(enrolled: Site, tmp_path: Path):
    from edge.crypto import staged_path
    from edge.files import write_temp

    key = enrolled.db.parent / "data" / "gallery.key"
    assert key.exists()
    # What a rotation killed inside stage_key leaves: the new key's temporary file.
    old = Path(write_temp(staged_path(key), os.urandom(32)))
    os.utime(old, (old.stat().st_atime - 3600, old.stat().st_mtime - 3600))
    fresh = Path(write_temp(staged_path(key), os.urandom(32)))  # another's, in flight
    assert old.name.startswith(".gallery.key.new.")
    assert edge("identify", ME, *enrolled.opts()).exit_code == 0  # the next start
    assert not old.exists() and fresh.exists()
    # A rotation writes the gallery's own key file; under the write lock it tidies
    # every temporary of that file, however young (nobody else can be staging it).
    from edge.keys import own_key_file

    own = own_key_file(enrolled.db)
    mine = Path(write_temp(staged_path(own), os.urandom(32)))
    r = edge("key", "rotate", *enrolled.opts())
    assert r.exit_code == 0, r.output
    assert not mine.exists()
    assert [p.name for p in own.parent.iterdir() if p.name.startswith(f".{own.name}.")] == []


def test_snapshot_labels_by_id_cannot_be_confused(tmp_path: Path):
    from edge.snapshots import SnapshotStore, label

    assert label("ann", 12) == "person12.ann" and label("12.ann") == "person.12.ann"
    face = np.full((64, 64, 3), 90, np.uint8)
    store = SnapshotStore(tmp_path, max_mb=100, days=7)
    t = 1_700_000_000.0
    for i, (name, pid) in enumerate([("ann", 1), ("ann", 12), ("bob", 1), ("12.ann", None)]):
        assert store.save(face, name, t + i, pid) is not None
    assert store.forget("ann", 1) == 2  # both of person 1's, whatever the name; not 12's
    assert sorted(s.label for s in store.snapshots()) == ["person.12.ann", "person12.ann"]


def test_several_collisions_each_need_an_answer(tmp_path: Path):
    from edge.errors import GalleryError
    from edge.gallery import Gallery

    rng = np.random.default_rng(5)

    def t() -> tuple[np.ndarray, float, None]:
        return (rng.standard_normal(DIM), 0.9, None)

    bundle = tmp_path / "b.json"
    with Gallery(tmp_path / "src.db") as g:
        for name in ("ann", "Bob", "cy"):
            g.enroll(name, [t()])
        g.export(bundle, "correct horse battery")
    with Gallery(tmp_path / "dst.db") as g:
        g.enroll("ANN", [t()])
        g.enroll("bob", [t()])
        before = [(p.name, p.templates) for p in g.people()]
        for kw, why in [
            ({}, "'Bob' is already a person here; 'ann' is already a person here"),
            ({"rename": ["x"]}, "exactly one colliding name"),
            ({"rename": ["ann=ann2"]}, "'Bob' is already a person here"),
            ({"rename": ["ann=cy"], "merge": True}, "two bundle people would be named 'cy'"),
            ({"rename": ["ann=BOB"], "merge": True}, "'bob' is already a person here"),
            ({"rename": ["zed=z"]}, "no 'zed' in the bundle"),
        ]:
            with pytest.raises(GalleryError, match=why):
                g.import_(bundle, "correct horse battery", **kw)
            assert [(p.name, p.templates) for p in g.people()] == before
        r = g.import_(bundle, "correct horse battery", rename=["ann=ann2"], merge=True)
        assert (r.people_added, r.templates_added) == (2, 3)
        assert (r.merged, r.renamed) == (("bob",), ("ann -> ann2",))
        got = {p.name: p.templates for p in g.people()}
        assert got == {"ANN": 1, "ann2": 1, "bob": 2, "cy": 1}
