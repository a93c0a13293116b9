"""The ``edge`` command through click's CliRunner: exit codes, stdout and stderr.

Real models, real photos from ../shared/faces, real SQLite files in tmp_path.
One gallery is enrolled once per module (four people); every test that
changes a gallery works on its own copy of that file. "Unchanged" means the
sha256 of the database file, and of its -wal when there is one, is the same
before and after.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from edge.cli import main

from .conftest import FACES, MODELS, PEOPLE, ROOT

#: Who the module gallery holds, and from which photos (one or two each).
ENROLLED = {
    "barack_obama": ["barack_obama/obama.jpg", "barack_obama/obama2.jpg"],
    "joe_biden": ["joe_biden/biden.jpg", "joe_biden/biden2.jpg"],
    "kit_harington": ["kit_harington/kit1.jpg", "kit_harington/kit2.jpg"],
    "rose_leslie": ["rose_leslie/rose1.jpg"],
}
ADMIN = "admin1"
VIDEO = FACES / "video" / "short_hamilton_clip.mp4"

RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None, "SUDO_USER": None})


@dataclass(frozen=True)
class Site:
    """A site folder: its config.yaml (project models) and gallery database."""

    config: Path
    db: Path

    def opts(self, db: Path | None = None) -> list[str]:
        return ["--config", str(self.config), "--db", str(db or self.db)]


def make_site(folder: Path, **replace: str) -> Site:
    """Like conftest's ``site``, usable from a module-scoped fixture."""
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {MODELS} ")
    text = text.replace("  db: data/gallery.db", f"  db: {folder / 'gallery.db'}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    (folder / "config.yaml").write_text(text)
    return Site(folder / "config.yaml", folder / "gallery.db")


def edge(*args: object, env: dict[str, str | None] | None = None) -> Result:
    """Run ``edge ARGS`` in-process; no exception may escape as anything but an exit."""
    result = RUNNER.invoke(main, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(
            "edge raised instead of exiting:\n"
            + "".join(traceback.format_exception(result.exception))
        )
    assert "Traceback" not in result.output
    return result


def one_line(result: Result, code: int, *needles: str) -> str:
    """Assert exit ``code``, nothing on stdout, and exactly one ``edge:`` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("edge: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def state(db: Path) -> dict[str, str]:
    """sha256 of the database and of its -wal, when present."""
    out = {}
    for p in (db, Path(f"{db}-wal")):
        if p.exists() and (p == db or p.stat().st_size):  # an empty -wal holds nothing
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    assert db.name in out
    return out


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def people(site: Site, db: Path | None = None) -> dict[str, dict]:
    r = edge("list", "--json", *site.opts(db))
    assert r.exit_code == 0, r.output
    return {p["name"]: p for p in json.loads(r.stdout)}


def identify(site: Site, image: Path, db: Path | None = None) -> list[dict]:
    r = edge("identify", "--json", image, *site.opts(db))
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    return json.loads(r.stdout)["faces"]


def frame(index: int) -> np.ndarray:
    """Frame ``index`` of the Hamilton clip, read in order (no seeking)."""
    cap = cv2.VideoCapture(str(VIDEO))
    try:
        for _ in range(index + 1):
            ok, img = cap.read()
            assert ok, f"{VIDEO}: no frame {index}"
    finally:
        cap.release()
    return img


# --------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A site whose gallery holds ENROLLED (by admin1); tests only read it or copy it."""
    s = make_site(tmp_path_factory.mktemp("site"))
    for name, photos in ENROLLED.items():
        r = edge("enroll", name, *(PEOPLE / p for p in photos), *s.opts(), env={"SUDO_USER": ADMIN})
        assert r.exit_code == 0, r.output
        assert r.stdout == f"{name}: {len(photos)} template(s) added\n"
    assert not Path(f"{s.db}-wal").exists()  # every gallery was closed
    return s


@pytest.fixture
def db(site: Site, tmp_path: Path) -> Path:
    """A private copy of the module gallery."""
    dst = tmp_path / "copy" / "gallery.db"
    dst.parent.mkdir()
    shutil.copyfile(site.db, dst)
    return dst


# --------------------------------------------------------------- help


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


ALL_COMMANDS = [(), *_commands(main)]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "edge")
def test_every_command_has_help(path: tuple[str, ...]):
    r = edge(*path, "--help")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Usage: ")
    help_text = r.stdout.split("\n\n", 2)
    assert len(help_text) >= 2 and help_text[1].strip(), "no description"


def test_the_walk_found_every_command():
    found = {" ".join(p) for p in ALL_COMMANDS}
    expected = "enroll list remove rename disable enable verify identify events export import"
    assert set(expected.split()) | {"models", "models fetch", "models check", "doctor"} <= found


# --------------------------------------------------------------- enroll, list, identify


@pytest.mark.pi
def test_list_shows_everyone_enrolled(site: Site):
    got = people(site)
    assert sorted(got) == sorted(ENROLLED)
    for name, p in got.items():
        assert p["templates"] == len(ENROLLED[name])
        assert p["active"] is True and p["display_name"] is None
    r = edge("list", *site.opts())
    assert r.exit_code == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == sorted(ENROLLED)
    assert lines[0] == "barack_obama\tbarack_obama\tactive\t2 template(s)"


def test_list_of_an_empty_gallery(site: Site, tmp_path: Path):
    r = edge("list", "--create", *site.opts(tmp_path / "new.db"))
    assert (r.exit_code, r.stdout) == (0, "nobody enrolled\n")
    assert edge("list", "--json", *site.opts(tmp_path / "new.db")).stdout == "[]\n"


@pytest.mark.pi
def test_enroll_json_and_display_name(site: Site, db: Path):
    r = edge(
        "enroll",
        "lin",
        PEOPLE / "lin_manuel_miranda/lin1.png",
        "--display-name",
        "Lin-Manuel",
        "--json",
        *site.opts(db),
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"name": "lin", "added": 1, "skipped": 0}
    assert people(site, db)["lin"]["display_name"] == "Lin-Manuel"


def _check_faces(faces: list[dict]) -> None:
    for f in faces:
        assert set(f) == {"box", "name", "similarity", "status"}
        assert len(f["box"]) == 4 and all(isinstance(v, int | float) for v in f["box"])
        x0, y0, x1, y1 = f["box"]
        assert x0 < x1 and y0 < y1


@pytest.mark.pi
@pytest.mark.parametrize(
    "photo, names",
    [
        ("obama_and_biden.jpg", {"barack_obama", "joe_biden"}),
        ("kit_with_rose.jpg", {"kit_harington", "rose_leslie"}),
    ],
)
def test_identify_names_everyone_in_a_group_photo(site: Site, cfg, photo: str, names: set[str]):
    faces = identify(site, FACES / "group" / photo)
    _check_faces(faces)
    assert len(faces) == 2
    assert {f["name"] for f in faces} == names
    assert all(f["similarity"] >= cfg.match.threshold for f in faces)


@pytest.mark.pi
@pytest.mark.parametrize(
    "photo", ["alex_lacamoire/alex1.jpg", "alex_lacamoire/alex2.png", "lin_manuel_miranda/lin1.png"]
)
def test_strangers_stay_unknown(site: Site, photo: str):
    faces = identify(site, PEOPLE / photo)
    _check_faces(faces)
    assert len(faces) == 1
    assert faces[0]["name"] is None


def test_identify_text_output(site: Site, tmp_path: Path):
    r = edge("identify", FACES / "group/obama_and_biden.jpg", *site.opts())
    assert r.exit_code == 0 and r.stderr == ""
    assert sorted(line.split("\t")[0] for line in r.stdout.splitlines()) == [
        "barack_obama",
        "joe_biden",
    ]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))[:150, :150])
    r = edge("identify", blank, *site.opts())
    assert (r.exit_code, r.stdout) == (0, f"{blank}: no face found\n")


def test_identify_refuses_a_bad_file(site: Site, tmp_path: Path):
    one_line(edge("identify", tmp_path / "nope.jpg", *site.opts()), 1, "nope.jpg", "no such file")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    one_line(edge("identify", "--json", text, *site.opts()), 1, str(text), "not an image")


# --------------------------------------------------------------- verify


def _verify(site: Site, a: Path, b: Path) -> dict:
    r = edge("verify", "--json", a, b, *site.opts())
    assert r.exit_code == 0, r.output
    (row,) = json_lines(r.stdout)
    assert set(row) == {"file_x", "file_y", "similarity", "verified"}
    assert (row["file_x"], row["file_y"]) == (str(a), str(b))
    return row


@pytest.mark.pi
def test_verify_the_same_person(site: Site, cfg):
    row = _verify(site, PEOPLE / "kit_harington/kit1.jpg", PEOPLE / "kit_harington/kit3.jpg")
    assert row["verified"] is True and row["similarity"] >= cfg.match.threshold
    row = _verify(site, PEOPLE / "barack_obama/obama-240p.jpg", PEOPLE / "barack_obama/obama3.jpg")
    assert row["verified"] is True


@pytest.mark.pi
def test_verify_different_people(site: Site, cfg):
    row = _verify(site, PEOPLE / "kit_harington/kit1.jpg", PEOPLE / "rose_leslie/rose2.jpg")
    assert row["verified"] is False and row["similarity"] < cfg.match.threshold
    row = _verify(site, PEOPLE / "barack_obama/obama.jpg", PEOPLE / "joe_biden/biden.jpg")
    assert row["verified"] is False


def test_verify_a_photo_without_a_face(site: Site, tmp_path: Path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))[:150, :150])
    r = edge("verify", "--json", PEOPLE / "kit_harington/kit1.jpg", blank, *site.opts())
    assert r.exit_code == 1
    assert json_lines(r.stdout) == [
        {
            "file_x": str(PEOPLE / "kit_harington/kit1.jpg"),
            "file_y": str(blank),
            "similarity": None,
            "verified": False,
            "error": f"{blank}: no face found",
        }
    ]
    assert r.stderr == f"edge: {blank}: no face found\n"


def test_verify_pairs_csv(site: Site, tmp_path: Path):
    folder = tmp_path / "pairs"
    (folder / "photos").mkdir(parents=True)
    for p in ("kit_harington/kit1.jpg", "kit_harington/kit2.jpg", "rose_leslie/rose2.jpg"):
        shutil.copyfile(PEOPLE / p, folder / "photos" / Path(p).name)
    cv2.imwrite(
        str(folder / "photos/blank.png"),
        cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))[:150, :150],
    )
    obama, obama2 = PEOPLE / "barack_obama/obama.jpg", PEOPLE / "barack_obama/obama2.jpg"
    rows = [
        ("photos/kit1.jpg", "photos/kit2.jpg", "1"),
        ("photos/kit1.jpg", "photos/rose2.jpg", "0"),
        (str(obama), str(obama2), "1"),
        ("photos/rose2.jpg", str(obama), "0"),
        ("photos/blank.png", "photos/kit1.jpg", "0"),
    ]
    csv_file = folder / "pairs.csv"
    csv_file.write_text("file_x,file_y,label\n" + "".join(",".join(r) + "\n" for r in rows))
    r = edge("verify", "--pairs", csv_file, "--json", *site.opts())
    assert r.exit_code == 1, r.output  # the broken last row: every row printed, then exit 1
    out = json_lines(r.stdout)
    assert [(o["file_x"], o["file_y"]) for o in out] == [(x, y) for x, y, _ in rows]
    for o, (_, _, label) in zip(out[:4], rows[:4], strict=True):
        assert set(o) == {"file_x", "file_y", "similarity", "verified"}
        assert isinstance(o["similarity"], float)
        assert o["verified"] is (label == "1"), o
    assert out[4]["similarity"] is None and out[4]["verified"] is False
    assert out[4]["error"] == f"{folder / 'photos/blank.png'}: no face found"
    assert r.stderr.splitlines() == [f"edge: {folder / 'photos/blank.png'}: no face found"]


def test_verify_pairs_csv_without_a_header(site: Site, tmp_path: Path):
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        f"{PEOPLE / 'kit_harington/kit1.jpg'},{PEOPLE / 'kit_harington/kit2.jpg'},1\n"
    )
    one_line(
        edge("verify", "--pairs", csv_file, "--json", *site.opts()), 1, str(csv_file), "header"
    )
    one_line(
        edge("verify", "--pairs", tmp_path / "none.csv", *site.opts()), 1, "none.csv", "cannot read"
    )


# --------------------------------------------------------------- bad input to enroll


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _obama() -> np.ndarray:
    return cv2.imread(str(PEOPLE / "barack_obama/obama.jpg"))


def _make_bad(kind: str, d: Path) -> Path:
    """Write the bad input ``kind`` into ``d``; its path."""
    if kind == "two faces":
        return FACES / "group/two_people.jpg"
    p = d / {"missing": "missing.jpg", "empty": "empty.jpg", "text": "notes.jpg"}.get(
        kind, kind.replace(" ", "_") + (".jpg" if "JPEG" in kind else ".png")
    )
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("name,door\nalice,front\n")
    elif kind == "truncated JPEG":
        data = (PEOPLE / "barack_obama/obama.jpg").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "truncated PNG":
        data = (PEOPLE / "alex_lacamoire/alex2.png").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "huge PNG":
        _png_header_only(p, 20000, 20000)
    elif kind == "no face":
        cv2.imwrite(str(p), _obama()[:150, :150])  # the wall above his shoulder
    elif kind == "small face":
        cv2.imwrite(
            str(p), cv2.resize(_obama(), None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)
        )
    elif kind == "blurry":
        cv2.imwrite(str(p), cv2.GaussianBlur(_obama(), (41, 41), 0))
    elif kind == "turned":
        # Frame 33: the pianist in profile. (Frame 122, Lin-Manuel Miranda turned
        # about 30 degrees, measures yaw 0.22 with the full-range detector that
        # still photos use, so `edge enroll` accepts it; see test_engine.py.)
        cv2.imwrite(str(p), frame(33))
    else:
        assert kind == "missing"
    return p


BAD = {
    "missing": "no such file",
    "empty": "empty file",
    "text": "not an image",
    "truncated JPEG": "truncated JPEG",
    "truncated PNG": "truncated PNG",
    "huge PNG": "too large",
    "no face": "no face found",
    "two faces": "more than one face",
    "small face": "face too small",
    "blurry": "face too blurry",
    "turned": "face turned too far from frontal",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_enroll_refuses_bad_input_and_leaves_the_gallery_alone(
    site: Site, db: Path, tmp_path: Path, kind: str
):
    bad = _make_bad(kind, tmp_path)
    before = state(db)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    r = edge("enroll", "newcomer", bad, *site.opts(db))
    elapsed = time.monotonic() - t
    assert r.exit_code == 1, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert all(line.startswith("edge: ") for line in lines), lines
    naming = [line for line in lines if str(bad) in line]
    assert len(naming) == 1, lines
    assert BAD[kind] in naming[0]
    assert state(db) == before
    assert "newcomer" not in people(site, db)
    if kind == "huge PNG":
        # Refused from the header: no 1.2 GB decode, no time spent.
        assert elapsed < 5
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        assert grown_mb < 200


@pytest.mark.pi
def test_enroll_is_all_or_nothing(site: Site, db: Path, tmp_path: Path):
    bad = _make_bad("no face", tmp_path)
    good = PEOPLE / "alex_lacamoire/alex1.jpg"
    before = state(db)
    r = edge("enroll", "alex", good, bad, PEOPLE / "alex_lacamoire/alex3.jpg", *site.opts(db))
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert [line for line in lines if str(bad) in line] == [f"edge: {bad}: no face found"]
    assert not any(str(good) in line for line in lines)
    assert state(db) == before
    assert "alex" not in people(site, db)


def test_enroll_a_bad_name_is_refused(site: Site, db: Path):
    before = state(db)
    one_line(edge("enroll", "", PEOPLE / "alex_lacamoire/alex1.jpg", *site.opts(db)), 1, "name")
    assert state(db) == before


@pytest.mark.pi
def test_enroll_from_a_camera_source(site: Site, db: Path, tmp_path: Path):
    r = edge(
        "enroll", "lin", "--camera", "--source", VIDEO, "--frames", "3", "--json", *site.opts(db)
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"name": "lin", "added": 3, "skipped": 0}
    assert people(site, db)["lin"]["templates"] == 3

    before = state(db)
    missing = tmp_path / "gone.mp4"
    one_line(edge("enroll", "x", "--camera", "--source", missing, *site.opts(db)), 1, str(missing))
    assert state(db) == before
    r = edge("enroll", "x", "--camera", PEOPLE / "kit_harington/kit1.jpg", *site.opts(db))
    assert r.exit_code == 2
    r = edge("enroll", "x", "--camera", "--source", VIDEO, "--frames", "0", *site.opts(db))
    assert r.exit_code == 2
    assert state(db) == before


def test_re_enrolling_the_same_photo_changes_nothing(site: Site, db: Path):
    before = state(db)
    r = edge("enroll", "barack_obama", PEOPLE / "barack_obama/obama.jpg", *site.opts(db))
    assert r.exit_code == 0 and r.stderr == ""
    assert "already enrolled" in r.stdout
    assert r.stdout == "barack_obama: 0 template(s) added, 1 already enrolled\n"
    r = edge(
        "enroll",
        "barack_obama",
        *(PEOPLE / p for p in ENROLLED["barack_obama"]),
        "--json",
        *site.opts(db),
    )
    assert json.loads(r.stdout) == {"name": "barack_obama", "added": 0, "skipped": 2}
    assert state(db) == before
    assert people(site, db)["barack_obama"]["templates"] == 2


# --------------------------------------------------------------- people admin


def test_disable_enable_rename_remove(site: Site, db: Path):
    r = edge("disable", "kit_harington", *site.opts(db))
    assert (r.exit_code, r.stdout) == (0, "kit_harington: disabled\n")
    assert people(site, db)["kit_harington"]["active"] is False
    r = edge("enable", "kit_harington", "--json", *site.opts(db))
    assert json.loads(r.stdout) == {"name": "kit_harington", "active": True}
    assert people(site, db)["kit_harington"]["active"] is True
    r = edge("rename", "kit_harington", "jon_snow", *site.opts(db))
    assert (r.exit_code, r.stdout) == (0, "kit_harington: renamed to jon_snow\n")
    faces = identify(site, FACES / "group/kit_with_rose.jpg", db)
    assert {f["name"] for f in faces} == {"jon_snow", "rose_leslie"}
    r = edge("remove", "jon_snow", "--json", *site.opts(db))
    assert json.loads(r.stdout) == {"name": "jon_snow", "templates_removed": 2}
    assert sorted(people(site, db)) == ["barack_obama", "joe_biden", "rose_leslie"]
    faces = identify(site, FACES / "group/kit_with_rose.jpg", db)
    assert sorted(f["name"] or "" for f in faces) == ["", "rose_leslie"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["remove", "nobody"], "'nobody'"),
        (["rename", "nobody", "somebody"], "'nobody'"),
        (["rename", "kit_harington", "rose_leslie"], "'rose_leslie'"),
        (["disable", "nobody"], "'nobody'"),
        (["enable", "nobody"], "'nobody'"),
    ],
)
def test_unknown_names_are_refused(site: Site, db: Path, args: list[str], needle: str):
    before = state(db)
    one_line(edge(*args, *site.opts(db)), 1, needle)
    assert state(db) == before


@pytest.mark.parametrize(
    "args",
    [
        ["enroll"],
        ["enroll", "someone"],  # neither photos nor --camera
        ["verify", str(PEOPLE / "kit_harington/kit1.jpg")],
        ["verify"],
        ["verify", "a.jpg", "b.jpg", "--pairs", "p.csv"],
        ["identify"],
        ["remove"],
        ["rename", "only_one"],
        ["bench", "--repeat", "1"],
        ["events", "--limit", "0"],
        ["no-such-command"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(site: Site, db: Path, args: list[str]):
    before = state(db)
    r = edge(*args, *site.opts(db)) if args[0] != "no-such-command" else edge(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    assert r.stderr.strip()
    assert state(db) == before


# --------------------------------------------------------------- audit


def test_events_record_admin_changes_with_the_actor(site: Site, db: Path):
    env = {"SUDO_USER": "alice"}
    assert edge("rename", "kit_harington", "kit", *site.opts(db), env=env).exit_code == 0
    assert edge("remove", "rose_leslie", *site.opts(db), env=env).exit_code == 0
    r = edge("events", "--json", *site.opts(db))
    assert r.exit_code == 0 and r.stderr == ""
    events = json.loads(r.stdout)
    assert [(e["kind"], e["name"], e["actor"]) for e in events] == [
        *(("enroll", name, ADMIN) for name in ENROLLED),
        ("rename", "kit", "alice"),
        ("remove", "rose_leslie", "alice"),
    ]
    assert all("actor" in e and "ts" in e for e in events)
    assert events[-2]["detail"] == {"old": "kit_harington", "new": "kit"}
    assert events[-1]["detail"] == {"templates": 1}

    since = events[-2]["ts"]
    r = edge("events", "--json", "--since", since, *site.opts(db))
    assert [e["kind"] for e in json.loads(r.stdout)] == ["rename", "remove"]
    r = edge("events", "--json", "--kind", "enroll", *site.opts(db))
    assert [e["name"] for e in json.loads(r.stdout)] == list(ENROLLED)
    r = edge("events", "--json", "--limit", "1", *site.opts(db))
    assert [e["kind"] for e in json.loads(r.stdout)] == ["remove"]
    r = edge("events", "--json", "--since", "2000-01-01", *site.opts(db))
    assert len(json.loads(r.stdout)) == len(events)
    r = edge("events", "--json", "--since", "2999-01-01T00:00:00+00:00", *site.opts(db))
    assert json.loads(r.stdout) == []

    r = edge("events", *site.opts(db))
    assert r.exit_code == 0
    last = r.stdout.splitlines()[-1]
    assert " remove rose_leslie " in last and last.endswith("by alice")

    one_line(edge("events", "--since", "yesterday-ish", *site.opts(db)), 1, "yesterday-ish")


# --------------------------------------------------------------- export / import


def _without_ids(listing: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in p.items() if f != "id"} for k, p in listing.items()}


PASSPHRASE = "correct horse battery"
WITH_PASSPHRASE = {"EDGE_BUNDLE_PASSPHRASE": PASSPHRASE}


def test_export_import_round_trip(site: Site, db: Path, tmp_path: Path):
    from edge import crypto

    bundle = tmp_path / "backup.json"
    r = edge("export", bundle, "--json", *site.opts(db), env=WITH_PASSPHRASE)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"file": str(bundle), "people": len(ENROLLED)}
    assert bundle.stat().st_mode & 0o777 == 0o600
    assert b"barack_obama" not in bundle.read_bytes()  # sealed

    fresh = tmp_path / "fresh" / "gallery.db"
    r = edge("import", bundle, "--json", "--create", *site.opts(fresh), env=WITH_PASSPHRASE)
    assert r.exit_code == 0, r.output
    templates = sum(len(p) for p in ENROLLED.values())
    assert json.loads(r.stdout) == {
        "people_added": len(ENROLLED),
        "templates_added": templates,
        "skipped_duplicates": 0,
        "merged": [],
        "renamed": [],
        "warnings": [],
    }
    assert _without_ids(people(site, fresh)) == _without_ids(people(site, db))
    faces = identify(site, FACES / "group/obama_and_biden.jpg", fresh)
    assert {f["name"] for f in faces} == {"barack_obama", "joe_biden"}

    # Importing again adds nothing.
    r = edge("import", bundle, *site.opts(fresh), env=WITH_PASSPHRASE)
    assert r.exit_code == 0
    assert r.stdout == f"{bundle}: 0 people, 0 templates added, {templates} already present\n"

    # A bundle that does not open, or opens to something wrong, is refused whole.
    envelope = json.loads(bundle.read_bytes())
    data = json.loads(crypto.open_bundle(envelope, PASSPHRASE))
    data["people"].append({"name": "mallory", "templates": [{"embedding": "AAAA"}]})
    bad_embedding = tmp_path / "bad_embedding.json"
    bad_embedding.write_bytes(crypto.seal_bundle(json.dumps(data).encode(), PASSPHRASE))
    data["people"].pop()
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))
    ciphertext = bytearray(base64.b64decode(envelope["ciphertext"]))
    ciphertext[100] ^= 1
    tampered = tmp_path / "tampered.json"
    envelope["ciphertext"] = base64.b64encode(ciphertext).decode()
    tampered.write_text(json.dumps(envelope))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(os.urandom(2000))
    half = tmp_path / "half.json"
    half.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    wrong = {"EDGE_BUNDLE_PASSPHRASE": "not the passphrase"}
    before = state(fresh)
    for bad, why, env in [
        (garbage, "not JSON", WITH_PASSPHRASE),
        (half, "not JSON", WITH_PASSPHRASE),
        (bad_embedding, "embedding", WITH_PASSPHRASE),
        (tampered, "wrong passphrase, or the bundle was altered", WITH_PASSPHRASE),
        (bundle, "wrong passphrase, or the bundle was altered", wrong),
        (plain, "unencrypted bundle", WITH_PASSPHRASE),
        (tmp_path / "nothing.json", "not found", WITH_PASSPHRASE),
    ]:
        one_line(edge("import", bad, *site.opts(fresh), env=env), 1, str(bad), why)
        assert state(fresh) == before
    assert "mallory" not in people(site, fresh)
    # No passphrase and no terminal to ask on: a usage error, nothing touched.
    one_line(edge("import", bundle, *site.opts(fresh)), 2, "EDGE_BUNDLE_PASSPHRASE")
    one_line(edge("export", tmp_path / "b2.json", *site.opts(fresh)), 2, "EDGE_BUNDLE_PASSPHRASE")
    assert state(fresh) == before and not (tmp_path / "b2.json").exists()
    # An old plain bundle goes in only when asked to.
    r = edge("import", plain, "--allow-unencrypted", *site.opts(fresh))
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{plain}: 0 people, 0 templates added, {templates} already present\n"


def test_forget_erases_a_person(site: Site, db: Path):
    r = edge("forget", "rose_leslie", "--json", *site.opts(db), env={"SUDO_USER": "dpo"})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "name": "rose_leslie", "templates_erased": 1, "snapshots_erased": 0
    }
    assert "rose_leslie" not in people(site, db)
    r = edge("events", "--json", "--kind", "forget", *site.opts(db))
    (event,) = json.loads(r.stdout)
    assert (event["name"], event["actor"]) == ("rose_leslie", "dpo")
    assert event["detail"] == {"templates": 1}
    one_line(edge("forget", "rose_leslie", *site.opts(db)), 1, "'rose_leslie': no such person")


def test_key_rotation_keeps_everyone_recognised(site: Site, db: Path, tmp_path: Path):
    # A copy of the module's key for this copy of its gallery: the others keep theirs.
    key_file = tmp_path / "gallery.key"
    shutil.copyfile(site.config.parent / "data" / "gallery.key", key_file)
    key_file.chmod(0o600)
    own = make_site(tmp_path, **{"key_file: data/gallery.key": f"key_file: {key_file}"})
    old = key_file.read_bytes()
    r = edge("key", "rotate", "--json", *own.opts(db), env={"SUDO_USER": "ops"})
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["templates"] == sum(len(p) for p in ENROLLED.values()) and out["backup"]
    # The new key is the gallery's own, beside it; the key file it shared is left alone.
    own_key = db.with_name(db.name + ".key")
    assert key_file.read_bytes() == old
    assert own_key.read_bytes() != old and own_key.stat().st_mode & 0o777 == 0o600
    faces = identify(own, FACES / "group/obama_and_biden.jpg", db)
    assert {f["name"] for f in faces} == {"barack_obama", "joe_biden"}
    faces = identify(site, FACES / "group/obama_and_biden.jpg", db)  # either config finds it
    assert {f["name"] for f in faces} == {"barack_obama", "joe_biden"}


def test_backup_and_restore(site: Site, db: Path, tmp_path: Path):
    r = edge("backup", "--json", *site.opts(db))
    assert r.exit_code == 0, r.output
    made = Path(json.loads(r.stdout)["file"])
    assert made.stat().st_mode & 0o777 == 0o600
    r = edge("backup", "--list", "--json", *site.opts(db))
    assert str(made) in json.loads(r.stdout)
    assert edge("remove", "rose_leslie", *site.opts(db)).exit_code == 0
    r = edge("restore", made, "--json", *site.opts(db), env={"SUDO_USER": "ops"})
    assert r.exit_code == 0, r.output
    assert "rose_leslie" in people(site, db)
    r = edge("events", "--json", "--kind", "restore", *site.opts(db))
    (event,) = json.loads(r.stdout)
    assert event["actor"] == "ops" and event["detail"]["backup"] == str(made)


# --------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("match:\n  thresold: 0.4\n", "match.thresold: unknown key"),
        ("match:\n  threshold: high\n", "match.threshold"),
        ("enroll:\n  max_yaw: 7\n", "enroll.max_yaw"),
        ("bogus: 1\n", "bogus: unknown key"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["identify", str(PEOPLE / "kit_harington/kit1.jpg")],
        ["models", "check"],
        ["run", "--validate-config"],
    ],
    ids=" ".join,
)
def test_config_errors_exit_2_naming_the_key(
    tmp_path: Path, yaml_text: str, needle: str, command: list[str]
):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    one_line(edge(*command, "--config", config), 2, str(config), needle)
    assert not (tmp_path / "data").exists()  # nothing created from a bad config


def test_validate_config_of_a_good_config(site: Site):
    r = edge("run", "--validate-config", *site.opts())
    assert (r.exit_code, r.stdout, r.stderr) == (0, "config ok\n", "")


def test_status_without_a_daemon(site: Site):
    one_line(edge("status", *site.opts()), 1, "status.json", "no status")


def test_a_missing_config_exits_2(tmp_path: Path):
    one_line(edge("list", "--config", tmp_path / "none.yaml"), 2, "none.yaml", "not found")


# --------------------------------------------------------------- operations


def test_doctor_json(tmp_path: Path, site: Site):
    s = make_site(tmp_path, **{'source: "0"': f'source: "{VIDEO}"'})
    shutil.copyfile(site.db, s.db)
    (tmp_path / "data").mkdir()  # the gallery's key goes with it
    shutil.copy2(site.config.parent / "data" / "gallery.key", tmp_path / "data" / "gallery.key")
    r = edge("doctor", "--json", *s.opts())
    checks = json.loads(r.stdout)
    assert isinstance(checks, list) and checks
    for c in checks:
        assert set(c) == {"name", "ok", "detail"}
        assert isinstance(c["ok"], bool) and c["detail"]
    by_name = {c["name"]: c for c in checks}
    models = [c for c in checks if c["name"].startswith("model ")]
    assert models and all(c["ok"] for c in models), models
    assert by_name["camera"]["ok"], by_name["camera"]
    assert by_name["database"]["ok"] and "4 people" in by_name["database"]["detail"]
    assert r.exit_code == (0 if all(c["ok"] for c in checks) else 1)


@pytest.mark.pi
def test_models_check(site: Site):
    r = edge("models", "check", *site.opts())
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines and all(line.endswith(": ok") for line in lines)
    r = edge("models", "check", "--json", *site.opts())
    assert all(s["ok"] and s["reason"] == "ok" for s in json.loads(r.stdout))


def test_bench_json(site: Site):
    r = edge("bench", "--json", "--repeat", "3", *site.opts())
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert set(result["per_face_ms"]) == {"detect", "align", "embed", "total"}
    assert set(result["match_ms"]) == {"1000", "10000", "100000"}
    for v in [*result["per_face_ms"].values(), *result["match_ms"].values()]:
        assert isinstance(v, int | float) and v > 0
    assert isinstance(result["peak_rss_mb"], int | float) and result["peak_rss_mb"] > 0


def _commands_to_run() -> list[list[str]]:
    out = [[sys.executable, "-m", "edge.cli"]]
    script = Path(sys.executable).parent / "edge"
    if script.is_file():
        out.append([str(script)])
    return out


@pytest.mark.pi
@pytest.mark.parametrize("command", _commands_to_run(), ids=lambda c: Path(c[-1]).name)
def test_identify_json_in_a_real_process_prints_only_json(site: Site, command: list[str]):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    p = subprocess.run(
        [*command, "identify", "--json", str(FACES / "group/obama_and_biden.jpg"), *site.opts()],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert p.stdout.endswith("\n") and p.stdout.count("\n") == 1
    faces = json.loads(p.stdout)["faces"]
    assert {f["name"] for f in faces} == {"barack_obama", "joe_biden"}


def test_set_changes_details_and_window_in_one_audited_change(tmp_path):
    from click.testing import CliRunner

    from edge.cli import main
    from edge.gallery import Gallery

    from .conftest import PEOPLE

    db = tmp_path / "g.db"
    config = tmp_path / "config.yaml"  # relative paths (the key) land in tmp_path
    config.write_text((ROOT / "config.yaml").read_text().replace(
        "  dir: models ", f"  dir: {MODELS} "))
    env = {"EDGE_DB": str(db), "EDGE_CONFIG": str(config)}
    r = CliRunner().invoke(main, ["enroll", "rose", str(PEOPLE / "rose_leslie/rose1.jpg")], env=env)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["set", "rose", "--display-name", "Rose", "--notes", "night shift",
                                  "--valid-from", "2026-01-01T00:00:00+00:00", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert '"display_name": "Rose"' in r.output
    r = CliRunner().invoke(main, ["set", "rose", "--valid-until", "2027-01-01T00:00:00+00:00"],
                           env=env)
    assert r.exit_code == 0, r.output
    with Gallery(db, key_file=tmp_path / "data/gallery.key") as g:
        p = g.person("rose")
        events = g.events(kind="update")
    assert (p.display_name, p.notes) == ("Rose", "night shift")
    assert p.valid_from.startswith("2026-01-01") and p.valid_until.startswith("2027-01-01")
    assert len(events) == 2 and events[0].actor
    # A window that ends before it starts is refused, the gallery unchanged.
    before = db.read_bytes()
    r = CliRunner().invoke(main, ["set", "rose", "--valid-until", "2025-01-01"], env=env)
    assert r.exit_code == 1 and "valid_until" in r.stderr and db.read_bytes() == before
    r = CliRunner().invoke(main, ["set", "rose"], env=env)
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["set", "rose", "--notes", "none", "--valid-from", "none"],
                           env=env)
    with Gallery(db, key_file=tmp_path / "data/gallery.key") as g:
        p = g.person("rose")
    assert r.exit_code == 0 and p.notes is None and p.valid_from is None


@pytest.mark.parametrize(
    "stamp, running",
    [
        ({}, True),  # fresh, this (live) pid
        ({"stopped": True}, False),
        ({"age": 60}, False),  # stale
        ({"before_boot": True}, False),  # monotonic stamp ahead of the clock: an earlier boot
        ({"pid": 2**22 + 12345}, False),  # no such process
    ],
)
def test_status_and_restore_agree_on_whether_the_daemon_runs(tmp_path: Path, stamp, running):
    site = make_site(tmp_path)
    status = tmp_path / "data" / "status.json"
    status.parent.mkdir()
    now = time.monotonic()
    mono = now + 3600 if stamp.get("before_boot") else now - stamp.get("age", 0)
    status.write_text(json.dumps({
        "pid": stamp.get("pid", os.getpid()), "updated": time.time(), "updated_mono": mono,
        "stopped": stamp.get("stopped", False), "last_decision": None,
    }))
    result = edge("status", "--json", *site.opts())
    assert result.exit_code == (0 if running else 1)
    assert json.loads(result.stdout)["running"] is running
    backup = tmp_path / "backup.db"
    backup.write_bytes(b"")
    restored = edge("restore", backup, *site.opts())
    if running:
        one_line(restored, 1, "daemon is running", "stop it first")
    else:
        assert "daemon is running" not in restored.output


@pytest.mark.pi
def test_camera_enrollment_reads_a_file_to_the_end_however_slow(engine, tmp_path: Path):
    """A video file is not held to the live camera's wall-clock limit: with no
    time at all (as on a CPU far slower than this one) it still yields every face asked."""
    from edge.camera import OpenCVSource
    from edge.enroll import templates_from_camera

    templates = templates_from_camera(engine, OpenCVSource(str(VIDEO), "file"), 3, timeout=0.0)
    assert len(templates) == 3
    assert len({t.source for t in templates}) == 3
