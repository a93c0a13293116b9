"""Templates know their model: schema v4, kept face crops, ``edge reembed``.

Real models on the shared photos, real SQLite files. "Another model" is
simulated by tagging templates with a model id that is not the running
embedder's, which is exactly what a gallery looks like after the embedder
file changes.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge import crypto
from edge.align import align
from edge.bundle import export_bundle, import_bundle
from edge.cli import main
from edge.crops import SIZE, FaceCrop, face_crop
from edge.engine import Engine
from edge.enroll import enroll, templates_from_images
from edge.errors import GalleryError
from edge.gallery import _V1, _V2, LEGACY_MODEL_ID, SCHEMA_VERSION, Gallery, _aad
from edge.image import read_image
from edge.reembed import coverage, reembed

from .conftest import PEOPLE

OTHER = "0" * 64  # a model id that is not the running embedder's
OBAMA = [PEOPLE / "barack_obama" / "obama.jpg", PEOPLE / "barack_obama" / "obama2.jpg"]
OBAMA_PROBE = PEOPLE / "barack_obama" / "obama1.jpg"
BIDEN = [PEOPLE / "joe_biden" / "biden.jpg"]
BIDEN_PROBE = PEOPLE / "joe_biden" / "biden2.jpg"
KIT = [PEOPLE / "kit_harington" / "kit1.jpg"]
KIT_PROBE = PEOPLE / "kit_harington" / "kit2.jpg"
RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None, "SUDO_USER": None})


def probe(engine: Engine, path: Path) -> np.ndarray:
    face = engine.enrollment_face(read_image(path))
    assert face.embedding is not None
    return face.embedding


def enroll_photos(g: Gallery, engine: Engine, name: str, photos: list[Path], crops: bool = True):
    templates, bad = templates_from_images(engine, photos)
    assert not bad, bad
    if not crops:
        templates = [dataclasses.replace(t, crop=None) for t in templates]
    return enroll(g, name, templates)


def raw(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def edge(site: Path, *args: str):
    result = RUNNER.invoke(
        main, [*args, "--config", str(site / "config.yaml"), "--db", str(site / "gallery.db")]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def make_v3_gallery(db: Path, key_file: Path, embedding: np.ndarray) -> None:
    """A schema v3 gallery as the code before v4 wrote it: its DDL, one sealed template."""
    key = crypto.new_key()
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    conn = sqlite3.connect(db)
    conn.executescript(_V1)
    conn.executescript(_V2)
    conn.execute("INSERT INTO people (id, name, created) VALUES (3, 'kit', '2025-01-01T00:00Z')")
    plain = embedding.astype("<f4").tobytes()
    conn.execute(
        "INSERT INTO templates VALUES (5, 3, ?, 0.9, ?, '2025-01-01T00:00Z')",
        (crypto.seal(key, plain, _aad(3, 5)), "ab" * 32),
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_embedder_names_its_model(engine: Engine) -> None:
    from edge.embed import EMBED_MODELS
    from edge.models import entry, manifest, sha256_file

    embed = entry(EMBED_MODELS[engine.cfg.embed.model].role)
    assert engine.embedder.model_id == embed.sha256 == sha256_file(engine.models_dir / embed.file)
    assert engine.embedder.name == engine.cfg.embed.model
    # Every template before v4 was made by MobileFaceNet int8: the legacy tag is its sha256.
    (mfn,) = [m for m in manifest() if m.file == "mobilefacenet_int8.tflite"]
    assert mfn.sha256 == LEGACY_MODEL_ID


def test_a_v3_gallery_is_tagged_with_mobilefacenet_and_keeps_matching(
    site: Path, engine: Engine, cfg
) -> None:
    db = site / "gallery.db"
    make_v3_gallery(db, site / "gallery.key", probe(engine, KIT[0]))
    with Gallery(db, actor="root") as g:
        assert raw(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 4
        assert raw(db, "SELECT id, model_id FROM templates") == [(5, LEGACY_MODEL_ID)]
        assert raw(db, "SELECT count(*) FROM crops") == [(0,)]
        (event,) = g.events(kind="migrate")
        assert event.detail == {"schema": 4, "templates_tagged": 1, "model_id": LEGACY_MODEL_ID}
        # (The test's embeddings come from the running embedder; the gallery
        # only knows them as the legacy model's, which is what it is asked for.)
        m = g.matcher(cfg.match, LEGACY_MODEL_ID).match(probe(engine, KIT_PROBE))
        assert m.accepted and m.name == "kit"
        # Made before crops were kept: fine while the model is the same ...
        assert coverage(g, LEGACY_MODEL_ID).needs_reenrollment == ()
        # ... but under any other model, only new photos can bring kit back.
        assert coverage(g, OTHER).needs_reenrollment == ("kit",)


def test_a_template_of_another_model_never_matches(tmp_path: Path, engine: Engine, cfg) -> None:
    with Gallery(tmp_path / "g.db") as g:
        e = probe(engine, OBAMA[0])
        g.enroll("obama", [(e, 1.0, "cd" * 32)], model_id=OTHER)
        # The very embedding it was enrolled with: a perfect score, if it were compared.
        running = g.matcher(cfg.match, engine.embedder.model_id)
        assert len(running) == 0 and running.person_count == 0
        m = running.match(e)
        assert not m.accepted and m.name is None and m.nearest is None
        assert g.matcher(cfg.match, OTHER).match(e).name == "obama"
        assert len(g.templates(engine.embedder.model_id).ids) == 0
        assert len(g.templates(OTHER).ids) == 1


def test_reembed_brings_an_old_gallery_back(site: Path, engine: Engine, cfg) -> None:
    db = site / "gallery.db"
    model = engine.embedder.model_id
    with Gallery(db, actor="admin") as g:
        enroll_photos(g, engine, "obama", OBAMA)
        enroll_photos(g, engine, "biden", BIDEN)
        enroll_photos(g, engine, "kit", KIT, crops=False)
        assert g.matcher(cfg.match, model).match(probe(engine, OBAMA_PROBE)).name == "obama"
    # The embedder changed: every template is now of another model.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE templates SET model_id = ?", [OTHER])
    conn.commit()
    conn.close()
    with Gallery(db) as g:
        assert not g.matcher(cfg.match, model).match(probe(engine, OBAMA_PROBE)).accepted
        c = coverage(g, model)
        assert (c.current, c.stale, c.reembeddable, c.needs_reenrollment) == (0, 4, 3, ("kit",))

    r = edge(site, "reembed", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["recomputed"] == 3 and out["without_crop"] == 1
    assert out["model_id"] == model and out["needs_reenrollment"] == ["kit"]

    with Gallery(db) as g:
        matcher = g.matcher(cfg.match, model)
        assert matcher.match(probe(engine, OBAMA_PROBE)).name == "obama"
        assert matcher.match(probe(engine, BIDEN_PROBE)).name == "biden"
        assert not matcher.match(probe(engine, KIT_PROBE)).accepted  # no crop: not re-embedded
        (event,) = g.events(kind="reembed")
        assert event.detail is not None and event.detail["recomputed"] == 3
        assert event.detail["model_id"] == model and event.actor
    # Re-enrolling kit's photo under the running model replaces the stale template.
    with Gallery(db) as g:
        result = enroll_photos(g, engine, "kit", KIT)
        assert (result.added, result.replaced, result.skipped_duplicates) == (1, 1, 0)
        assert g.person("kit").templates == 1
        assert g.matcher(cfg.match, model).match(probe(engine, KIT_PROBE)).name == "kit"
        assert coverage(g, model).needs_reenrollment == ()


def test_reembed_is_all_or_nothing(site: Path, engine: Engine) -> None:
    db = site / "gallery.db"
    with Gallery(db) as g:
        enroll_photos(g, engine, "obama", OBAMA)
        enroll_photos(g, engine, "biden", BIDEN)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE templates SET model_id = ?", [OTHER])
    # Damage the last crop: the first ones re-embed fine before it fails.
    (tid, blob) = conn.execute("SELECT template_id, crop FROM crops ORDER BY 1 DESC").fetchone()
    conn.execute(
        "UPDATE crops SET crop = ? WHERE template_id = ?",
        [blob[:-1] + bytes([blob[-1] ^ 1]), tid],
    )
    conn.commit()
    conn.close()
    before = raw(db, "SELECT id, model_id, embedding FROM templates ORDER BY id")
    events_before = raw(db, "SELECT count(*) FROM events")

    r = edge(site, "reembed")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and f"crop of template {tid}" in r.stderr
    assert "Traceback" not in r.output
    assert raw(db, "SELECT id, model_id, embedding FROM templates ORDER BY id") == before
    assert raw(db, "SELECT count(*) FROM events") == events_before
    with Gallery(db) as g, pytest.raises(GalleryError, match="authentication failed"):
        reembed(g, engine.embedder)


def test_list_and_doctor_name_who_needs_reenrollment(site: Path, engine: Engine) -> None:
    db = site / "gallery.db"
    with Gallery(db) as g:
        enroll_photos(g, engine, "obama", OBAMA)
        enroll_photos(g, engine, "kit", KIT, crops=False)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE templates SET model_id = ?", [OTHER])
    conn.commit()
    conn.close()

    r = edge(site, "list")
    assert r.exit_code == 0, r.output
    lines = {line.split("\t")[0]: line for line in r.stdout.splitlines()}
    assert lines["kit"].endswith("\tneeds re-enrollment")
    assert "needs re-enrollment" not in lines["obama"]  # reembed can fix obama
    r = edge(site, "list", "--json")
    assert {p["name"]: p["needs_reenrollment"] for p in json.loads(r.stdout)} == {
        "kit": True, "obama": False,
    }

    r = edge(site, "doctor", "--json")
    by_name = {c["name"]: c for c in json.loads(r.stdout)}
    t = by_name["templates"]
    assert not t["ok"] and r.exit_code == 1
    assert "needs re-enrollment: kit" in t["detail"] and "fix: edge reembed" in t["detail"]

    assert edge(site, "reembed").exit_code == 0
    t = {c["name"]: c for c in json.loads(edge(site, "doctor", "--json").stdout)}["templates"]
    assert not t["ok"] and "fix: edge reembed" not in t["detail"]
    assert "needs re-enrollment: kit" in t["detail"]


def test_crops_are_sealed_and_follow_key_rotation(site: Path, engine: Engine, cfg) -> None:
    db = site / "gallery.db"
    image = read_image(OBAMA[0])
    face = engine.enrollment_face(image)
    assert face.crop is not None and face.crop.image.shape == (SIZE, SIZE, 3)
    png = face.crop.to_bytes()[48:]
    with Gallery(db) as g:
        enroll_photos(g, engine, "obama", OBAMA[:1])
        g._checkpoint()
        data = db.read_bytes()
        pixels = face.crop.image.tobytes()
        for i in range(0, len(png) - 64, 997):  # no run of the PNG in the file
            assert png[i : i + 64] not in data
        for row in range(40, 120, 10):  # nor a row of raw pixels
            assert pixels[row * SIZE * 3 : (row + 1) * SIZE * 3] not in data
        (blob,) = raw(db, "SELECT crop FROM crops")[0]
        old_kid = crypto.sealed_key_id(blob)
        rotation = g.rotate_key()
        assert (rotation.templates, rotation.crops) == (1, 1)
        (blob,) = raw(db, "SELECT crop FROM crops")[0]
        assert crypto.sealed_key_id(blob) != old_kid
        from edge.keys import own_key_file  # a rotation writes the gallery's own key

        assert crypto.sealed_key_id(blob) == crypto.key_id(crypto.read_key(own_key_file(db)))
        assert reembed(g, engine.embedder).recomputed == 1  # the re-sealed crop opens
        assert g.matcher(cfg.match, engine.embedder.model_id).match(
            probe(engine, OBAMA_PROBE)
        ).name == "obama"


def test_forgetting_a_person_erases_their_crops(tmp_path: Path, engine: Engine) -> None:
    db = tmp_path / "g.db"
    with Gallery(db) as g:
        enroll_photos(g, engine, "obama", OBAMA)
        assert raw(db, "SELECT count(*) FROM crops") == [(2,)]
        g.forget("obama")
        assert raw(db, "SELECT count(*) FROM crops") == [(0,)]


def test_a_crop_realigns_to_what_the_embedder_saw(engine: Engine) -> None:
    for path in [*OBAMA, *BIDEN, *KIT, PEOPLE / "rose_leslie" / "rose1.jpg"]:
        rgb = cv2.cvtColor(read_image(path).bgr, cv2.COLOR_BGR2RGB)
        det = max(engine.detect(rgb, still=True), key=lambda d: d.eye_distance)
        direct = engine.embedder.embed(align(rgb, det.keypoints))
        crop = FaceCrop.from_bytes(face_crop(rgb, det.keypoints).to_bytes())
        again = engine.embedder.embed(align(crop.image, crop.keypoints))
        assert float(direct @ again) >= 0.9, path


def test_bundles_carry_the_model_id(tmp_path: Path, engine: Engine, cfg) -> None:
    with Gallery(tmp_path / "a.db", key_file=tmp_path / "a.key") as a:
        enroll_photos(a, engine, "obama", OBAMA[:1])
        a.enroll("biden", [(probe(engine, BIDEN[0]), 1.0, "ef" * 32)], model_id=OTHER)
        export_bundle(a, tmp_path / "b.bundle", "a long passphrase")
    with Gallery(tmp_path / "b.db", key_file=tmp_path / "b.key") as b:
        assert import_bundle(b, tmp_path / "b.bundle", "a long passphrase").templates_added == 2
        rows = raw(tmp_path / "b.db",
                   "SELECT p.name, t.model_id FROM templates t JOIN people p ON p.id = t.person_id")
        assert sorted(rows) == [("biden", OTHER), ("obama", engine.embedder.model_id)]
        matcher = b.matcher(cfg.match, engine.embedder.model_id)
        assert not matcher.match(probe(engine, BIDEN_PROBE)).accepted  # another model's
        assert coverage(b, engine.embedder.model_id).needs_reenrollment == ("biden",)


def test_keep_crops_off_keeps_none(site: Path, cfg) -> None:
    off = cfg.model_copy(update={"gallery": cfg.gallery.model_copy(update={"keep_crops": False})})
    engine = Engine(off)
    templates, _ = templates_from_images(engine, OBAMA[:1])
    assert templates[0].crop is None and templates[0].model_id == engine.embedder.model_id
    with Gallery(site / "gallery.db") as g:
        enroll(g, "obama", templates)
    assert raw(site / "gallery.db", "SELECT count(*) FROM crops") == [(0,)]


def test_a_look_alike_is_sought_among_templates_of_the_same_model(
    tmp_path: Path, engine: Engine, cfg
) -> None:
    running = engine.embedder.model_id
    threshold = cfg.match.threshold
    with Gallery(tmp_path / "g.db") as g:
        e = probe(engine, OBAMA[0])
        g.enroll("obama", [(e, 1.0, "cd" * 32)], model_id=OTHER)
        # The very same embedding, but the template here is another model's: not comparable.
        r = g.enroll("barack", [(e, 1.0, "ef" * 32)], model_id=running,
                     refuse_look_alike=threshold)
        assert r.added == 1
        # Against a template of its own model it is refused, naming whom it looks like.
        with pytest.raises(GalleryError, match="already enrolled as 'barack'"):
            g.enroll("obama2", [(e, 1.0, "ab" * 32)], model_id=running,
                     refuse_look_alike=threshold)
        assert [p.name for p in g.people()] == ["barack", "obama"]


def test_an_import_says_faces_differ_only_comparing_templates_of_the_same_model(
    tmp_path: Path, engine: Engine, cfg
) -> None:
    running, threshold = engine.embedder.model_id, cfg.match.threshold
    obama, biden = probe(engine, OBAMA[0]), probe(engine, BIDEN[0])
    with Gallery(tmp_path / "a.db", key_file=tmp_path / "a.key") as a:
        a.enroll("obama", [(obama, 1.0, "aa" * 32)], model_id=running)
        export_bundle(a, tmp_path / "b.bundle", "a long passphrase")

    def warnings(local: list[tuple[np.ndarray, str]], db: str) -> tuple[str, ...]:
        with Gallery(tmp_path / db, key_file=tmp_path / f"{db}.key") as g:
            for k, (embedding, model_id) in enumerate(local):
                g.enroll("obama", [(embedding, 1.0, f"{k:02d}" * 32)], model_id=model_id)
            return import_bundle(g, tmp_path / "b.bundle", "a long passphrase", merge=True,
                                 threshold=threshold).warnings

    # The local obama's face under this model is Biden's: they differ, even though an
    # old model's template here holds the very same numbers as the bundle's.
    (said,) = warnings([(obama, OTHER), (biden, running)], "b.db")
    assert "does not look like the 'obama' here" in said, said
    # Only another model's template here: nothing comparable, so nothing to say.
    assert warnings([(biden, OTHER)], "c.db") == ()
