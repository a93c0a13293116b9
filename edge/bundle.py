"""Export and import: a gallery's people and templates as one sealed, portable file.

A bundle is JSON (format :data:`BUNDLE_FORMAT`, version :data:`BUNDLE_VERSION`)
sealed under a key derived from a passphrase (:func:`edge.crypto.seal_bundle`),
so templates can move between sites with different gallery keys. It is read
through the same checks as an enrollment (:mod:`edge.records`) and merged in
one transaction of the :class:`~edge.gallery.Gallery`, whose transaction and
sealing helpers this module uses as a friend.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import crypto
from .errors import GalleryError
from .files import write_temp
from .gallery import LEGACY_MODEL_ID, Gallery
from .records import EMBEDDING_BYTES, check_quality_and_sha, now_iso, person_row

BUNDLE_FORMAT = "edge-gallery"
BUNDLE_VERSION = 1
_MODEL_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ImportResult:
    """What an import did: new people, templates added, templates already present."""

    people_added: int
    templates_added: int
    skipped_duplicates: int


def export_bundle(gallery: Gallery, path: str | os.PathLike[str], passphrase: str) -> int:
    """Write every person and template of ``gallery`` to a sealed bundle (mode 0600).

    Returns how many people it holds.

    The bundle is JSON sealed under a key derived from ``passphrase``
    (scrypt, then AES-256-GCM: :func:`edge.crypto.seal_bundle`), so it can
    move to a site with another gallery key. Written to a temporary file
    and renamed, so a failed export leaves no half-written bundle. An
    ``export`` event records who took the templates out, and where to.
    """
    crypto.check_passphrase(passphrase)
    path = Path(path)
    with gallery._read("export"):
        people = gallery.people()
        rows = gallery.db.execute(
            "SELECT id, person_id, embedding, quality, source_sha256, created, model_id"
            " FROM templates ORDER BY person_id, id"
        ).fetchall()
        plains = gallery._unseal([r[:3] for r in rows])
    by_person: dict[int, list[dict[str, Any]]] = {}
    for (_, person_id, _, quality, sha, created, model), plain in zip(rows, plains, strict=True):
        by_person.setdefault(person_id, []).append(
            {
                "embedding": base64.b64encode(plain).decode("ascii"),
                "quality": quality,
                "source_sha256": sha,
                "created": created,
                "model_id": model,
            }
        )
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "exported": now_iso(),
        "people": [
            {
                "name": p.name,
                "display_name": p.display_name,
                "active": p.active,
                "valid_from": p.valid_from,
                "valid_until": p.valid_until,
                "notes": p.notes,
                "created": p.created,
                "templates": by_person.get(p.id, []),
            }
            for p in people
        ],
    }
    plain_bundle = json.dumps(bundle, separators=(",", ":")).encode("utf-8")
    _write_private(path, crypto.seal_bundle(plain_bundle, passphrase))
    with gallery._write("export", content=False):
        gallery._audit("export", None, bundle=str(path), people=len(people), templates=len(rows))
    return len(people)


def import_bundle(
    gallery: Gallery,
    path: str | os.PathLike[str],
    passphrase: str | None = None,
    *,
    allow_unencrypted: bool = False,
) -> ImportResult:
    """Merge a bundle from :func:`export_bundle` into ``gallery``, in one transaction.

    The whole bundle is opened (wrong passphrase or altered file: one
    GalleryError) and checked before the database is touched. A plain
    JSON bundle from an older edge-access is refused unless
    ``allow_unencrypted``: nothing vouches that it was not altered. Merge rules:
    a person not here is added with the bundle's fields; a person already
    here keeps their local fields (active, validity, names, notes: local
    decisions win, so an import never re-enables someone disabled here) and
    gains the bundle's templates they lack. A template is already present
    when the person has one with the same source_sha256 (whatever its
    model: the local one wins) or, lacking a sha, the same embedding.
    Each template keeps the ``model_id`` of the embedder that made it (a
    bundle without one is from before model ids: MobileFaceNet), so
    templates of another model are imported but never match here until
    re-enrolled. Bundles carry no face crops. Nothing is ever deleted by an import.
    """
    path = Path(path)
    people, sealed = _read_bundle(path, passphrase, allow_unencrypted)
    people_added = added = skipped = 0
    new_names = []
    with gallery._write("import"):
        key = gallery._sealing_key()
        for person, templates in people:
            row = gallery.db.execute(
                "SELECT id FROM people WHERE name = ?", [person["name"]]
            ).fetchone()
            if row is None:
                person_id = gallery._insert("people", person)
                people_added += 1
                new_names.append(person["name"])
                have: set[bytes] = set()
            else:
                person_id = row[0]
                mine = gallery.db.execute(
                    "SELECT id, person_id, embedding FROM templates WHERE person_id = ?",
                    [person_id],
                ).fetchall()
                have = set(gallery._unseal(mine))
            for plain, quality, sha, created, model_id in templates:
                if (
                    gallery.db.execute(
                        "SELECT 1 FROM templates WHERE person_id = ? AND source_sha256 = ?",
                        [person_id, sha],
                    ).fetchone()
                    if sha is not None
                    else plain in have
                ):
                    skipped += 1
                    continue
                gallery._insert_template(
                    key, person_id, plain, quality, sha, created, model_id=model_id
                )
                have.add(plain)
                added += 1
        gallery._audit(
            "import",
            None,
            bundle=str(path),
            encrypted=sealed,
            people_added=people_added,
            people=new_names,
            templates_added=added,
            skipped=skipped,
        )
    return ImportResult(people_added, added, skipped)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a synced temporary file and a rename."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = write_temp(path, data)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)
        raise GalleryError(f"{path}: cannot write ({e.strerror})") from None


#: ``(embedding, quality, source_sha256, created, model_id)``
_BundleTemplate = tuple[bytes, float | None, str | None, str, str]


def is_sealed_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a sealed bundle (so the CLI knows to ask for a passphrase).

    False for anything else, a missing file included; :func:`import_bundle`
    then says what is wrong with it.
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == crypto.SEALED_BUNDLE_FORMAT


def _json_bytes(path: Path, data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise GalleryError(f"{path}: bad bundle: {what}not JSON") from None


def _read_bundle(
    path: Path, passphrase: str | None, allow_unencrypted: bool
) -> tuple[list[tuple[dict[str, Any], list[_BundleTemplate]]], bool]:
    """Open and check a whole bundle: ((person row, templates) pairs ready to insert, sealed?).

    A sealed bundle is opened with ``passphrase`` first; a plain one is
    refused unless ``allow_unencrypted``. Embeddings are kept byte for byte
    (they were stored normalised), so an export/import round trip is exact;
    anything wrong is a GalleryError that names the bundle, the entry and
    the fault.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GalleryError(f"{path}: bundle not found") from None
    except OSError as e:
        raise GalleryError(f"{path}: cannot read bundle ({e.strerror})") from None
    data = _json_bytes(path, raw, "")
    sealed = isinstance(data, dict) and data.get("format") == crypto.SEALED_BUNDLE_FORMAT
    if sealed:
        try:
            plain = crypto.open_bundle(data, passphrase or "")
        except GalleryError as e:
            raise GalleryError(f"{path}: {e}") from None
        data = _json_bytes(path, plain, "sealed content is ")
    elif isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT and not allow_unencrypted:
        raise GalleryError(
            f"{path}: an unencrypted bundle (from an older edge-access) is refused: nothing"
            " shows it was not altered; import it with --allow-unencrypted only if you trust it"
        )
    return _check_bundle(path, data), sealed


def _check_bundle(path: Path, data: Any) -> list[tuple[dict[str, Any], list[_BundleTemplate]]]:
    """Every entry of a decoded bundle checked: (person row, templates) pairs ready to insert."""

    def bad(where: str, why: str) -> GalleryError:
        return GalleryError(f"{path}: bad bundle: {where}: {why}")

    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise bad("format", f"not an {BUNDLE_FORMAT} bundle")
    if data.get("version") != BUNDLE_VERSION:
        raise bad("version", f"expected {BUNDLE_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("people"), list):
        raise bad("people", "expected a list")
    out: list[tuple[dict[str, Any], list[_BundleTemplate]]] = []
    seen: set[str] = set()
    for i, p in enumerate(data["people"]):
        where = f"people[{i}]"
        if not isinstance(p, dict):
            raise bad(where, "expected an object")
        try:
            fields = ("name", "display_name", "notes", "valid_from", "valid_until", "created")
            row = person_row(**{k: p.get(k) for k in fields}, active=p.get("active", True))
            if row["name"] in seen:
                raise GalleryError(f"{row['name']!r} appears twice")
            seen.add(row["name"])
            if not isinstance(p.get("templates"), list):
                raise GalleryError("templates: expected a list")
        except GalleryError as e:
            raise bad(where, str(e)) from None
        templates: list[_BundleTemplate] = []
        for j, t in enumerate(p["templates"]):
            try:
                if not isinstance(t, dict) or not isinstance(t.get("embedding"), str):
                    raise GalleryError("expected an object with a base64 embedding")
                try:
                    raw = base64.b64decode(t["embedding"], validate=True)
                except (binascii.Error, ValueError):
                    raise GalleryError("embedding is not base64") from None
                if len(raw) != EMBEDDING_BYTES:
                    raise GalleryError(f"embedding is {len(raw)} bytes, not {EMBEDDING_BYTES}")
                norm = float(np.linalg.norm(np.frombuffer(raw, dtype="<f4").astype(np.float64)))
                if not abs(norm - 1.0) < 1e-3:
                    raise GalleryError("embedding is not a finite unit vector")
                quality, sha = check_quality_and_sha(t.get("quality"), t.get("source_sha256"))
                t_created = t.get("created")
                if t_created is not None and not isinstance(t_created, str):
                    raise GalleryError("created must be text")
                # Bundles from before model ids hold MobileFaceNet templates only.
                model_id = t.get("model_id", LEGACY_MODEL_ID)
                if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
                    raise GalleryError("model_id must be a sha256 in hex")
            except GalleryError as e:
                raise bad(f"{where}.templates[{j}]", str(e)) from None
            templates.append((raw, quality, sha, t_created or now_iso(), model_id))
        out.append((row, templates))
    return out
