"""The gallery on real SQLite files in tmp_path: no mocks.

"Unchanged" is checked the strict way: close the gallery (which checkpoints
the WAL into the main file) and compare the file's bytes before and after.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import crypto
from edge.bundle import is_sealed_bundle
from edge.errors import GalleryError
from edge.gallery import (
    LEGACY_MODEL_ID,
    SCHEMA_VERSION,
    Event,
    Gallery,
    KeyRotation,
    open_gallery,
)
from edge.keys import own_key_file
from edge.match import DIM, NO_ONE

# The tests marked pi run on the emulated Pi too (scripts/test-arm64.sh): the
# SQLite file and its sealing on cryptography's aarch64 wheel, one of each kind.

M = LEGACY_MODEL_ID


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def sha(i: int | str) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def digest(path: Path) -> str:
    """The file's sha256, after checking no WAL is left beside it."""
    assert not Path(f"{path}-wal").exists()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gallery.db"


@pytest.fixture
def gallery(db_path: Path) -> Iterator[Gallery]:
    with Gallery(db_path, actor="tester") as g:
        yield g


def raw(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Query the file through a separate plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# ------------------------------------------------------------------ people


@pytest.mark.pi
def test_new_gallery_is_private_and_current(db_path: Path, gallery: Gallery) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert gallery.people() == []
    assert gallery.integrity_check() == "ok"


@pytest.mark.pi
def test_enroll_list_and_look_up(gallery: Gallery, rng: np.random.Generator) -> None:
    r = gallery.enroll("alice", [(unit(rng), 0.9, sha(1)), (unit(rng), 0.8, sha(2))], "Alice A.")
    assert (r.added, r.skipped_duplicates) == (2, 0)
    gallery.enroll("bob", [(unit(rng), None, None)])
    people = gallery.people()
    assert [(p.name, p.display_name, p.templates, p.active) for p in people] == [
        ("alice", "Alice A.", 2, True),
        ("bob", None, 1, True),
    ]
    assert gallery.person("alice") == people[0]
    t = gallery.templates()
    assert t.embeddings.shape == (3, DIM) and t.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(t.embeddings, axis=1), 1.0, atol=1e-6)
    events = gallery.events(kind="enroll")
    assert [(e.name, e.actor, e.detail) for e in events] == [
        ("alice", "tester", {"added": 2, "skipped": 0, "display_name": "Alice A.", "model_id": M}),
        ("bob", "tester", {"added": 1, "skipped": 0, "model_id": M}),
    ]


def test_add_person_then_enroll_and_refuse_duplicates(gallery: Gallery) -> None:
    p = gallery.add_person("carol", "Carol", notes="night shift", valid_until="2030-01-01T00:00Z")
    assert (p.templates, p.notes, p.valid_until) == (
        0,
        "night shift",
        "2030-01-01T00:00:00.000000+00:00",
    )
    with pytest.raises(GalleryError, match="already exists"):
        gallery.add_person("carol")
    with pytest.raises(GalleryError, match="not after"):
        gallery.add_person("dave", valid_from="2030-01-02T00:00Z", valid_until="2030-01-01T00:00Z")


def test_reenrolling_the_same_photo_is_a_no_op(gallery: Gallery, rng: np.random.Generator) -> None:
    e = unit(rng)
    assert gallery.enroll("alice", [(e, 0.9, sha(1))]).added == 1
    again = gallery.enroll("alice", [(e, 0.9, sha(1)), (unit(rng), 0.7, sha(1))])
    assert (again.added, again.skipped_duplicates) == (0, 2)
    assert gallery.person("alice").templates == 1
    # The same photo may still be a template of someone else (it is their sha, not ours).
    assert gallery.enroll("bob", [(e, 0.9, sha(1))]).added == 1


def test_remove_cascades_to_templates(
    db_path: Path, gallery: Gallery, rng: np.random.Generator
) -> None:
    gallery.enroll("alice", [(unit(rng), 0.9, sha(i)) for i in range(3)])
    gallery.enroll("bob", [(unit(rng), 0.9, sha(9))])
    assert gallery.remove("alice") == 3
    assert [p.name for p in gallery.people()] == ["bob"]
    assert raw(db_path, "SELECT count(*) FROM templates") == [(1,)]
    assert gallery.events(kind="remove")[0].name == "alice"  # the log keeps history
    with pytest.raises(GalleryError, match="'alice': no such person"):
        gallery.remove("alice")


def test_rename(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.enroll("alice", [(unit(rng), 0.9, sha(1))])
    gallery.enroll("bob", [(unit(rng), 0.9, sha(2))])
    assert gallery.rename("alice", "alicia").templates == 1
    assert [p.name for p in gallery.people()] == ["alicia", "bob"]
    with pytest.raises(GalleryError, match="'bob': a person of that name already exists"):
        gallery.rename("alicia", "bob")
    with pytest.raises(GalleryError, match="'nobody': no such person"):
        gallery.rename("nobody", "somebody")
    assert gallery.events(kind="rename")[-1].detail == {"old": "alice", "new": "alicia"}


def test_disable_enable_and_validity_reach_the_matcher(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    e = unit(rng)
    gallery.enroll("alice", [(e, 0.9, sha(1))])
    assert not gallery.set_active("alice", False).active
    got = gallery.matcher().match(e)
    assert got.accepted and got.name == "alice" and got.refusal() == "inactive"

    assert gallery.set_active("alice", True).active
    gallery.set_validity("alice", "2030-01-01T00:00:00+00:00", None)
    got = gallery.matcher().match(e)
    assert got.refusal() == "outside validity window"
    assert got.refusal("2030-01-01T00:00:00+00:00") is None
    assert [e.kind for e in gallery.events()][-3:] == ["disable", "enable", "validity"]


@pytest.mark.parametrize(
    "bad", ["", "x" * 65, "bob\n", "tab\there", "\u202eevil", "zero\u200bwidth", " bob", 7, None]
)
def test_bad_names_are_refused(gallery: Gallery, rng: np.random.Generator, bad: Any) -> None:
    with pytest.raises(GalleryError):
        gallery.enroll(bad, [(unit(rng), 0.9, None)])
    with pytest.raises(GalleryError):
        gallery.add_person(bad)
    assert gallery.people() == []


def test_names_may_be_any_script(gallery: Gallery, rng: np.random.Generator) -> None:
    for name in ("Zoë", "Łukasz", "李小龍", "O'Brien-Smith", "x" * 64):
        gallery.enroll(name, [(unit(rng), 0.9, None)])
    assert len(gallery.people()) == 5


# ------------------------------------------------------------------ atomicity


@pytest.mark.pi
def test_failed_enroll_leaves_the_file_byte_for_byte_unchanged(
    db_path: Path, rng: np.random.Generator
) -> None:
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
    before = digest(db_path)
    with Gallery(db_path) as g:
        # A new person whose second template has the wrong shape.
        with pytest.raises(GalleryError, match=r"'bob': template 2: .*shape"):
            g.enroll("bob", [(unit(rng), 0.9, sha(2)), (np.ones(DIM - 1), 0.9, sha(3))])
        # An existing person: the first template would be new, the second is NaN.
        with pytest.raises(GalleryError, match="'alice': template 2"):
            g.enroll("alice", [(unit(rng), 0.9, sha(4)), (np.full(DIM, np.nan), 0.9, sha(5))])
        assert [p.name for p in g.people()] == ["alice"]
    assert digest(db_path) == before


@pytest.mark.pi
def test_an_sqlite_error_mid_enroll_rolls_everything_back(
    db_path: Path, rng: np.random.Generator
) -> None:
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
    # Make SQLite itself fail on the second template of the next enrollment.
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON templates WHEN NEW.source_sha256 = ?"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END".replace("?", f"'{sha('boom')}'")
    )
    conn.commit()
    conn.close()
    before = digest(db_path)
    with Gallery(db_path) as g:
        with pytest.raises(GalleryError, match=r"enroll failed .*injected failure"):
            g.enroll("bob", [(unit(rng), 0.9, sha(2)), (unit(rng), 0.9, sha("boom"))])
        assert [p.name for p in g.people()] == ["alice"]
        assert g.generation() == 1
    assert digest(db_path) == before


# ------------------------------------------------------------------ export / import


def _populate(g: Gallery, rng: np.random.Generator) -> None:
    g.enroll("alice", [(unit(rng), 0.9, sha(1)), (unit(rng), None, None)], "Alice")
    g.add_person(
        "bob",
        notes="contractor",
        valid_from="2025-01-01T00:00Z",
        valid_until="2025-12-31T18:00+02:00",
    )
    g.enroll("bob", [(unit(rng), 0.5, sha(2))])
    g.enroll("carol", [(unit(rng), 0.7, sha(3))])
    g.set_active("carol", False)


def _snapshot(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """People and templates as stored (templates sealed), by name."""
    people = raw(
        path,
        "SELECT name, display_name, active, valid_from, valid_until, notes, created"
        " FROM people ORDER BY name",
    )
    templates = raw(
        path,
        "SELECT p.name, t.embedding, t.quality, t.source_sha256, t.created"
        " FROM templates t JOIN people p ON p.id = t.person_id ORDER BY p.name, t.id",
    )
    return people, templates


def _contents(g: Gallery) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """People and templates as the gallery reads them (templates opened), by name."""
    people = raw(
        g.path,
        "SELECT name, display_name, active, valid_from, valid_until, notes, created"
        " FROM people ORDER BY name",
    )
    t = g.templates()
    names = {p.id: p.name for p in g.people()}
    meta = dict(
        (row[0], row[1:])
        for row in raw(g.path, "SELECT id, quality, source_sha256, created FROM templates")
    )
    templates = sorted(
        (names[int(pid)], e.tobytes(), *meta[int(tid)])
        for e, pid, tid in zip(t.embeddings, t.person_ids, t.ids, strict=True)
    )
    return people, templates


PASS = "correct horse battery"


@pytest.mark.pi
def test_export_import_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    # Two sites, two gallery keys: the bundle's passphrase is all they share.
    src, dst = tmp_path / "a" / "gallery.db", tmp_path / "b" / "gallery.db"
    bundle = tmp_path / "out" / "b.json"
    with Gallery(src, actor="admin") as g:
        _populate(g, rng)
        assert g.export(bundle, PASS) == 3
        assert g.events(kind="export")[-1].detail == {
            "bundle": str(bundle), "people": 3, "templates": 4
        }
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert json.loads(bundle.read_bytes())["format"] == "edge-gallery-sealed"
    assert is_sealed_bundle(bundle) and not is_sealed_bundle(tmp_path / "missing.json")
    with Gallery(dst) as g:
        r = g.import_(bundle, PASS)
        assert (r.people_added, r.templates_added, r.skipped_duplicates) == (3, 4, 0)
        again = g.import_(bundle, PASS)  # idempotent, even for the template without a sha
        assert (again.people_added, again.templates_added, again.skipped_duplicates) == (0, 0, 4)
        assert g.events(kind="import")[0].detail["encrypted"] is True
        with Gallery(src) as s:
            assert _contents(g) == _contents(s)


def test_bundle_holds_no_plain_embedding(tmp_path: Path, rng: np.random.Generator) -> None:
    e = unit(rng)
    bundle = tmp_path / "b.json"
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("alice", [(e, 0.9, sha(1))])
        g.export(bundle, PASS)
    data = bundle.read_bytes()
    plain = e.astype("<f4").tobytes()
    assert b"alice" not in data and plain[:16] not in data
    assert base64.b64encode(plain)[:16] not in data


def test_import_merges_and_local_decisions_win(tmp_path: Path, rng: np.random.Generator) -> None:
    src, dst, bundle = tmp_path / "src.db", tmp_path / "dst.db", tmp_path / "b.json"
    with Gallery(src) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1)), (unit(rng), 0.9, sha(2))], "Alice")
        g.export(bundle, PASS)
    with Gallery(dst) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))], "Ally")
        g.set_active("alice", False)
        g.enroll("zed", [(unit(rng), 0.9, sha(9))])
        with pytest.raises(GalleryError, match="'alice' is already a person here"):
            g.import_(bundle, PASS)  # a collision: the same person only when the admin says so
        assert g.person("alice").templates == 1
        r = g.import_(bundle, PASS, merge=True)
        assert (r.people_added, r.templates_added, r.skipped_duplicates) == (0, 1, 1)
        assert r.merged == ("alice",)
        alice = g.person("alice")
        assert (alice.active, alice.display_name, alice.templates) == (False, "Ally", 2)
        assert g.person("zed").templates == 1  # nothing is deleted


def test_export_needs_a_real_passphrase(gallery: Gallery, tmp_path: Path) -> None:
    for bad in ("", "short", None):
        with pytest.raises(GalleryError, match="at least 8 characters"):
            gallery.export(tmp_path / "b.json", bad)  # type: ignore[arg-type]
    assert not (tmp_path / "b.json").exists()


def _bundle(rng: np.random.Generator) -> dict[str, Any]:
    emb = base64.b64encode(unit(rng).astype("<f4").tobytes()).decode()
    person = {"name": "ann", "active": True, "templates": [{"embedding": emb, "quality": 0.9}]}
    return {"format": "edge-gallery", "version": 1, "people": [person, dict(person, name="ben")]}


def _nan_embedding(b: dict[str, Any]) -> None:
    nan = np.full(DIM, np.nan, dtype="<f4").tobytes()
    b["people"][1]["templates"][0]["embedding"] = base64.b64encode(nan).decode()


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain"])
@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda b: b.update(format="zip"), "format"),
        (lambda b: b.update(version=2), "version"),
        (lambda b: b.update(people={}), "people"),
        (lambda b: b["people"][1].update(name="ann"), r"people\[1\]: 'ann' appears twice"),
        (lambda b: b["people"][1].update(name="bad\x07"), r"people\[1\]"),
        (lambda b: b["people"][1].update(active="yes"), "active"),
        (lambda b: b["people"][1].update(valid_from="soon"), "valid_from"),
        (lambda b: b["people"][1]["templates"][0].update(embedding="!!"), "base64"),
        (lambda b: b["people"][1]["templates"][0].update(embedding="AAAA"), "bytes"),
        (_nan_embedding, "unit vector"),
        (lambda b: b["people"][1]["templates"][0].update(source_sha256="abc"), "source_sha256"),
        (lambda b: b["people"][1]["templates"][0].update(quality="high"), "quality"),
    ],
)
def test_bad_bundle_is_refused_and_the_file_unchanged(
    db_path: Path, tmp_path: Path, rng: np.random.Generator, spoil: Any, message: str, sealed: bool
) -> None:
    with Gallery(db_path) as g:
        g.enroll("zed", [(unit(rng), 0.9, sha(9))])
    before = digest(db_path)
    b = _bundle(rng)
    spoil(b)
    path = tmp_path / "bad.json"
    text = json.dumps(b).encode()
    path.write_bytes(crypto.seal_bundle(text, PASS) if sealed else text)
    with Gallery(db_path) as g, pytest.raises(GalleryError, match=f"bad bundle: .*{message}"):
        g.import_(path, PASS, allow_unencrypted=True)
    assert digest(db_path) == before


def _tamper(path: Path) -> None:
    envelope = json.loads(path.read_bytes())
    ct = bytearray(base64.b64decode(envelope["ciphertext"]))
    ct[len(ct) // 2] ^= 1
    envelope["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    path.write_text(json.dumps(envelope))


def _weaker_kdf(path: Path) -> None:
    envelope = json.loads(path.read_bytes())
    envelope["kdf"]["n"] = 2**14
    path.write_text(json.dumps(envelope))


@pytest.mark.parametrize(
    ("passphrase", "spoil", "message"),
    [
        ("wrong horse battery", None, "wrong passphrase, or the bundle was altered"),
        (None, None, "sealed: a passphrase is needed"),
        (PASS, _tamper, "wrong passphrase, or the bundle was altered"),
        (PASS, _weaker_kdf, "wrong passphrase, or the bundle was altered"),
        (PASS, lambda p: p.write_bytes(p.read_bytes()[:-40]), "not JSON"),
    ],
)
def test_a_bundle_that_does_not_open_changes_nothing(
    db_path: Path, tmp_path: Path, rng: np.random.Generator,
    passphrase: str | None, spoil: Any, message: str,
) -> None:
    bundle = tmp_path / "b.json"
    with Gallery(tmp_path / "other" / "g.db") as g:
        g.enroll("mallory", [(unit(rng), 0.9, sha(1))])
        g.export(bundle, PASS)
    if spoil:
        spoil(bundle)
    with Gallery(db_path) as g:
        g.enroll("zed", [(unit(rng), 0.9, sha(9))])
    before = digest(db_path)
    with Gallery(db_path) as g, pytest.raises(GalleryError) as err:
        g.import_(bundle, passphrase)
    assert str(err.value).startswith(f"{bundle}: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    assert digest(db_path) == before


def test_a_plain_bundle_is_refused_unless_allowed(
    db_path: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_bundle(rng)))
    with Gallery(db_path) as g:
        g.enroll("zed", [(unit(rng), 0.9, sha(9))])
    before = digest(db_path)
    with Gallery(db_path) as g, pytest.raises(GalleryError, match="unencrypted bundle .* refused"):
        g.import_(path, PASS)
    assert digest(db_path) == before
    with Gallery(db_path, actor="admin") as g:
        assert g.import_(path, allow_unencrypted=True).people_added == 2
        assert g.events(kind="import")[-1].detail["encrypted"] is False


def test_non_json_bundle(gallery: Gallery, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b"\x89PNG not json")
    with pytest.raises(GalleryError, match="bad bundle: not JSON"):
        gallery.import_(path, PASS)
    with pytest.raises(GalleryError, match="bundle not found"):
        gallery.import_(tmp_path / "missing.json", PASS)


# ------------------------------------------------------------------ schema and files

V1_SCHEMA = """
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, display_name TEXT,
    active INTEGER NOT NULL DEFAULT 1, created TEXT NOT NULL);
CREATE TABLE templates (id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL, quality REAL, source_sha256 TEXT, created TEXT NOT NULL,
    UNIQUE (person_id, source_sha256));
CREATE TABLE events (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL, name TEXT,
    similarity REAL, liveness REAL, decision TEXT, reason TEXT);
CREATE INDEX events_ts ON events(ts);
PRAGMA user_version = 1;
"""


@pytest.mark.pi
def test_a_version_1_gallery_is_migrated_and_keeps_its_data(
    db_path: Path, rng: np.random.Generator
) -> None:
    db_path.parent.mkdir(parents=True)
    e = unit(rng).astype("<f4")
    conn = sqlite3.connect(db_path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO people VALUES (7, 'old', 'Old Timer', 0, '2024-01-01T00:00:00Z')")
    conn.execute(
        "INSERT INTO templates VALUES (1, 7, ?, 0.8, ?, '2024-01-01T00:00:00Z')",
        (e.tobytes(), sha(1)),
    )
    conn.execute(
        "INSERT INTO events (ts, kind, name, decision) VALUES ('2024-01-02T00:00:00Z', 'access',"
        " 'old', 'granted')"
    )
    conn.commit()
    conn.close()

    with Gallery(db_path, actor="root") as g:
        old = g.person("old")
        assert (old.id, old.display_name, old.active, old.templates) == (7, "Old Timer", False, 1)
        assert (old.valid_from, old.valid_until, old.notes) == (None, None, None)
        assert np.array_equal(g.templates().embeddings[0], e)
        events = [(x.kind, x.name, x.decision, x.actor) for x in g.events()]
        assert events == [
            ("access", "old", "granted", None),
            ("migrate", None, None, "root"),
            ("migrate", None, None, "root"),
        ]
        key = crypto.read_key(db_path.parent / "gallery.key")
        assert [x.detail for x in g.events(kind="migrate")] == [
            {"schema": 3, "templates_sealed": 1, "key": crypto.fingerprint(key)},
            {"schema": 4, "templates_tagged": 1, "model_id": M},
        ]
        assert g.generation() == 0
        g.set_validity("old", "2024-06-01T00:00Z", None)  # the new columns work
        g.log_event("door", detail={"state": "open"}, mono=12.5)
        assert g.generation() == 1
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    # Sealed in place, and the plain bytes are gone from the file.
    (blob,) = raw(db_path, "SELECT embedding FROM templates")[0]
    assert len(blob) == e.nbytes + crypto.OVERHEAD and blob[1:5] == crypto.key_id(key)
    assert e.tobytes()[:32] not in db_path.read_bytes()


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    Gallery(db_path).close()
    raw(db_path, "PRAGMA user_version = 99")
    with pytest.raises(GalleryError, match="schema v99 is newer"):
        Gallery(db_path)


def test_someone_elses_sqlite_file_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw(db_path, "CREATE TABLE songs (title TEXT)")
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    with pytest.raises(GalleryError, match="not an edge gallery"):
        Gallery(db_path)
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    path.write_bytes(b"this is a photo, not a database\n" * 64)
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=r"gallery\.db: not a usable SQLite database"):
        Gallery(path)
    assert path.read_bytes() == before


def test_a_corrupt_gallery_does_not_pass_as_ok(db_path: Path, rng: np.random.Generator) -> None:
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(i)) for i in range(200)])
    data = bytearray(db_path.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xff" * (2 * page)  # wreck two pages in the middle
    db_path.write_bytes(bytes(data))
    try:
        g = Gallery(db_path)
    except GalleryError:
        return  # refused at open: fine
    with g:
        assert g.integrity_check() != "ok"
        for read in (g.people, g.templates, g.events, g.matcher):
            with contextlib.suppress(GalleryError):  # never a bare sqlite3 error
                read()


def test_changed_sees_other_connections_and_own_writes(
    db_path: Path, rng: np.random.Generator
) -> None:
    with Gallery(db_path) as daemon, Gallery(db_path, actor="admin") as admin:
        m = daemon.matcher()
        assert len(m) == 0 and not daemon.changed(m.generation)
        daemon.log_event("access", decision="denied", reason="unknown")
        assert not daemon.changed(m.generation)  # events do not touch the gallery
        admin.enroll("alice", [(unit(rng), 0.9, sha(1))])
        assert daemon.changed(m.generation)
        m = daemon.matcher()
        assert len(m) == 1 and not daemon.changed(m.generation)
        daemon.set_active("alice", False)
        assert daemon.changed(m.generation)


@pytest.mark.pi
def test_matcher_from_the_gallery_recognises_enrolled_people(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    faces = {name: [unit(rng) for _ in range(3)] for name in ("ann", "ben", "cat", "dan")}
    for name, embs in faces.items():
        gallery.enroll(name, [(e, 0.9, sha(f"{name}{i}")) for i, e in enumerate(embs)])
    m = gallery.matcher()
    for name, embs in faces.items():
        got = m.match(embs[1] + 0.1 * unit(rng))
        assert got.accepted and got.name == name and got.refusal() is None
    stranger = m.match(unit(rng))
    assert not stranger.accepted and stranger.name is None
    empty = Gallery(gallery.path.with_name("empty.db"))
    with empty:
        got = empty.matcher().match(unit(rng))
        assert (got.accepted, got.similarity) == (False, NO_ONE)


def test_events_since_kind_and_limit(gallery: Gallery) -> None:
    for i in range(6):
        gallery.log_event(
            "access" if i % 2 == 0 else "door",
            ts=f"2025-03-0{i + 1}T12:00:00+00:00",
            name=f"n{i}",
            similarity=0.5,
            decision="granted" if i % 2 == 0 else None,
        )

    def names(events: list[Event]) -> list[str | None]:
        return [e.name for e in events]

    assert names(gallery.events(since="2025-03-04T00:00Z")) == ["n3", "n4", "n5"]
    # A since with another zone is compared as the same instant.
    assert names(gallery.events(since="2025-03-04T13:00:00+01:00")) == ["n3", "n4", "n5"]
    assert names(gallery.events(kind="access")) == ["n0", "n2", "n4"]
    assert names(gallery.events(limit=2)) == ["n4", "n5"]
    assert names(gallery.events(since="2025-03-02T00:00Z", kind="door", limit=1)) == ["n5"]
    with pytest.raises(GalleryError):
        gallery.log_event("Not A Kind")
    with pytest.raises(GalleryError):
        gallery.log_event("access", decision="maybe")


def test_backup_is_a_sound_private_copy(
    db_path: Path, tmp_path: Path, gallery: Gallery, rng: np.random.Generator
) -> None:
    _populate(gallery, rng)
    target = tmp_path / "backups" / "gallery-backup.db"
    gallery.backup(target)
    gallery.backup(target)  # replacing an older backup is fine
    assert sorted(p.name for p in target.parent.iterdir()) == ["gallery-backup.db"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert raw(target, "PRAGMA integrity_check") == [("ok",)]
    assert _snapshot(target) == _snapshot(db_path)
    with Gallery(target) as copy:
        assert copy.integrity_check() == "ok"
    with pytest.raises(GalleryError, match="onto itself"):
        gallery.backup(db_path)


# ------------------------------------------------------------------ sealing at rest


def test_a_copied_gallery_yields_no_embedding(tmp_path: Path, rng: np.random.Generator) -> None:
    site = tmp_path / "site" / "gallery.db"
    e = unit(rng)
    with Gallery(site) as g:
        g.enroll("alice", [(e, 0.9, sha(1))])
    data = site.read_bytes()
    plain = e.astype("<f4").tobytes()
    assert all(plain[i : i + 16] not in data for i in range(0, len(plain), 16))

    stolen = tmp_path / "elsewhere" / "gallery.db"
    stolen.parent.mkdir()
    stolen.write_bytes(data)
    with Gallery(stolen) as g:
        assert [p.name for p in g.people()] == ["alice"]  # names are not secret
        with pytest.raises(GalleryError, match="gallery.key: key file not found"):
            g.templates()
    with Gallery(stolen) as g, pytest.raises(GalleryError, match="key file not found"):
        g.enroll("mallory", [(unit(rng), 0.9, sha(2))])
    assert not (stolen.parent / "gallery.key").exists()  # a new key would open nothing here
    with Gallery(stolen, key=crypto.new_key()) as g:
        with pytest.raises(GalleryError, match="sealed under key .* but the given key holds"):
            g.matcher()
        with pytest.raises(GalleryError, match="sealed under key"):
            g.enroll("mallory", [(unit(rng), 0.9, sha(2))])  # never two keys in one gallery


@pytest.mark.pi
def test_blobs_cannot_be_swapped_or_altered(db_path: Path, rng: np.random.Generator) -> None:
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
        g.enroll("mallory", [(unit(rng), 0.9, sha(2))])
    conn = sqlite3.connect(db_path)
    # Mallory's template moved onto Alice's row: it opens only where it was sealed.
    conn.execute(
        "UPDATE templates SET embedding = (SELECT embedding FROM templates WHERE id = 2)"
        " WHERE id = 1"
    )
    conn.commit()
    conn.close()
    with Gallery(db_path) as g, pytest.raises(GalleryError, match=r"template 1 \(person 1\): auth"):
        g.matcher()

    with Gallery(db_path) as g:
        g.remove("alice")
    conn = sqlite3.connect(db_path)
    (blob,) = conn.execute("SELECT embedding FROM templates").fetchone()
    conn.execute("UPDATE templates SET embedding = ?", [blob[:-1] + bytes([blob[-1] ^ 1])])
    conn.commit()
    conn.close()
    with Gallery(db_path) as g, pytest.raises(GalleryError, match="altered"):
        g.templates()


def test_events_only_never_touch_the_key(db_path: Path) -> None:
    with Gallery(db_path) as g:
        g.log_event("access", decision="denied", reason="unknown")
        assert g.matcher().person_count == 0
        g.add_person("carol")
    assert not (db_path.parent / "gallery.key").exists()


def test_open_gallery_uses_the_configured_key(tmp_path: Path, rng: np.random.Generator) -> None:
    from edge.config import Config

    cfg = Config(base_dir=tmp_path)
    with open_gallery(cfg, actor="admin") as g:
        assert g.path == tmp_path / "data" / "gallery.db" and g.actor == "admin"
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
    key_file = tmp_path / "data" / "gallery.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    other = tmp_path / "other.db"
    with open_gallery(cfg, other) as g:
        g.enroll("bob", [(unit(rng), 0.9, sha(2))])
    with Gallery(other, key=crypto.read_key(key_file)) as g:
        assert len(g.templates().ids) == 1


@pytest.mark.pi
def test_database_wal_and_shm_are_private(db_path: Path, rng: np.random.Generator) -> None:
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
        for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    db_path.chmod(0o644)  # made by hand, or by an older version
    with Gallery(db_path):
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


@pytest.mark.pi
def test_rotate_key_reseals_everything_in_one_go(db_path: Path, rng: np.random.Generator) -> None:
    key_file = db_path.parent / "gallery.key"
    with Gallery(db_path, actor="admin") as g:
        _populate(g, rng)
        before = _contents(g)
        old_key = crypto.read_key(key_file)
        old_blobs = raw(db_path, "SELECT embedding FROM templates")
        generation = g.generation()
        rotation = g.rotate_key()
        # The new key is this gallery's own; the key file it shared is left alone.
        own = own_key_file(db_path)
        new_key = crypto.read_key(own)
        assert crypto.read_key(key_file) == old_key
        assert rotation == KeyRotation(crypto.fingerprint(old_key), crypto.fingerprint(new_key), 4)
        assert new_key != old_key and not crypto.staged_path(own).exists()
        assert stat.S_IMODE(own.stat().st_mode) == 0o600
        assert _contents(g) == before and g.generation() == generation + 1
        event = g.events(kind="key_rotation")[-1]
        assert (event.actor, event.detail) == (
            "admin",
            {"old": crypto.fingerprint(old_key), "new": crypto.fingerprint(new_key),
             "templates": 4, "crops": 0},
        )
    blobs = raw(db_path, "SELECT embedding FROM templates")
    assert all(b[0][1:5] == crypto.key_id(new_key) for b in blobs)
    assert not set(blobs) & set(old_blobs)
    with Gallery(db_path, key=old_key) as g, pytest.raises(GalleryError, match="sealed under"):
        g.templates()
    with Gallery(db_path) as g:
        assert _contents(g) == before


def test_rotate_key_with_a_key_in_hand(db_path: Path, rng: np.random.Generator) -> None:
    k1, k2 = crypto.new_key(), crypto.new_key()
    with Gallery(db_path, key=k1) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
        with pytest.raises(GalleryError, match="give the new key"):
            g.rotate_key()
        with pytest.raises(GalleryError, match="32 bytes"):
            g.rotate_key(b"short")
        assert g.rotate_key(k2).templates == 1
        assert len(g.templates().ids) == 1
    assert not (db_path.parent / "gallery.key").exists()
    with Gallery(db_path, key=k2) as g:
        assert len(g.templates().ids) == 1


def test_another_process_rotating_the_key_is_followed(
    db_path: Path, rng: np.random.Generator
) -> None:
    with Gallery(db_path) as daemon, Gallery(db_path, actor="admin") as admin:
        daemon.enroll("alice", [(unit(rng), 0.9, sha(1))])
        m = daemon.matcher()
        admin.rotate_key()
        assert daemon.changed(m.generation)
        assert daemon.matcher().person_count == 1  # re-reads the key file
        daemon.enroll("bob", [(unit(rng), 0.9, sha(2))])  # sealed under the new key
    assert len({b[0][1:5] for b in raw(db_path, "SELECT embedding FROM templates")}) == 1


def test_a_rotation_cut_short_loses_no_key(db_path: Path, rng: np.random.Generator) -> None:
    key_file = db_path.parent / "gallery.key"
    with Gallery(db_path) as g:
        g.enroll("alice", [(unit(rng), 0.9, sha(1))])
        before = _contents(g)
    old = crypto.read_key(key_file)

    # Staged, but the transaction never committed: the old key stays in charge.
    own = own_key_file(db_path)  # where a rotation writes the gallery's own new key
    crypto.stage_key(own, crypto.new_key())
    with Gallery(db_path) as g:
        assert _contents(g) == before
        g.enroll("bob", [(unit(rng), 0.9, sha(2))])
        before = _contents(g)
    assert crypto.read_key(key_file) == old

    # Committed, then the power went before the rename: whoever opens next installs it.
    new = crypto.new_key()
    with Gallery(db_path, key=old) as g:
        g.rotate_key(new)
    crypto.stage_key(own, new)
    with Gallery(db_path) as g:
        assert _contents(g) == before
    assert crypto.read_key(own) == new and not crypto.staged_path(own).exists()


# ------------------------------------------------------------------ accountability


def test_forget_erases_a_person_and_keeps_the_history(
    db_path: Path, rng: np.random.Generator
) -> None:
    e = unit(rng)
    with Gallery(db_path, actor="dpo") as g:
        g.add_person("alice", notes="a note only alice has")
        g.enroll("alice", [(e, 0.9, sha(1)), (unit(rng), 0.8, sha(2))])
        g.enroll("bob", [(unit(rng), 0.9, sha(3))])
        g.log_event("access", name="alice", decision="granted")
        generation = g.generation()
        assert g.forget("alice") == 2
        assert [p.name for p in g.people()] == ["bob"]
        assert g.generation() == generation + 1
        event = g.events(kind="forget")[-1]
        assert (event.name, event.actor, event.detail) == ("alice", "dpo", {"templates": 2})
        assert [x.name for x in g.events(kind="access")] == ["alice"]
        with pytest.raises(GalleryError, match="'alice': no such person"):
            g.forget("alice")
    assert raw(db_path, "SELECT count(*) FROM templates") == [(1,)]
    assert b"a note only alice has" not in db_path.read_bytes()


def test_every_admin_change_names_its_actor(tmp_path: Path, rng: np.random.Generator) -> None:
    db, bundle = tmp_path / "g.db", tmp_path / "b.json"
    with Gallery(tmp_path / "src" / "g.db") as g:
        g.enroll("zoe", [(unit(rng), 0.9, sha(9))])
        g.export(bundle, PASS)
    with Gallery(db, actor="ops") as g:
        g.add_person("ann")
        g.enroll("ann", [(unit(rng), 0.9, sha(1))])
        g.rename("ann", "anna")
        g.set_active("anna", False)
        g.set_active("anna", True)
        g.set_validity("anna", None, "2030-01-01T00:00Z")
        g.import_(bundle, PASS)
        g.export(tmp_path / "out.json", PASS)
        g.rotate_key()
        g.remove("zoe")
        g.forget("anna")
        events = g.events()
    assert [e.kind for e in events] == [
        "enroll", "enroll", "rename", "disable", "enable", "validity", "import", "export",
        "key_rotation", "remove", "forget",
    ]
    assert {e.actor for e in events} == {"ops"}
    assert all(e.detail for e in events[1:])
    assert events[3].detail == {"active": False}
    assert events[6].detail["people"] == ["zoe"]
