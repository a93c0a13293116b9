"""A bundle file read and checked: opened (sealed, or plain when allowed), every entry checked.

What :func:`edge.bundle.import_bundle` merges comes from here, already in
the shape the gallery stores: person rows through the same checks as an
enrollment (:mod:`edge.records`) and templates as their exact bytes. Anything
wrong is a :class:`~edge.errors.GalleryError` naming the bundle, the entry
and the fault, before the gallery is touched.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import crypto, identity
from .errors import GalleryError
from .records import EMBEDDING_BYTES, check_quality_and_sha, now_iso, person_row
from .sealing import LEGACY_MODEL_ID

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "BundleTemplate", "is_sealed_bundle", "read_bundle"]

BUNDLE_FORMAT = "edge-gallery"
BUNDLE_VERSION = 1
_MODEL_ID = re.compile(r"[0-9a-f]{64}")

#: ``(embedding, quality, source_sha256, created, model_id)``
BundleTemplate = tuple[bytes, float | None, str | None, str, str]


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


def read_bundle(
    path: Path, passphrase: str | None, allow_unencrypted: bool
) -> tuple[list[tuple[dict[str, Any], list[BundleTemplate]]], bool]:
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


def _check_bundle(path: Path, data: Any) -> list[tuple[dict[str, Any], list[BundleTemplate]]]:
    """Every entry of a decoded bundle checked: (person row, templates) pairs ready to insert."""

    def bad(where: str, why: str) -> GalleryError:
        return GalleryError(f"{path}: bad bundle: {where}: {why}")

    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise bad("format", f"not an {BUNDLE_FORMAT} bundle")
    if data.get("version") != BUNDLE_VERSION:
        raise bad("version", f"expected {BUNDLE_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("people"), list):
        raise bad("people", "expected a list")
    out: list[tuple[dict[str, Any], list[BundleTemplate]]] = []
    seen: set[str] = set()
    for i, p in enumerate(data["people"]):
        where = f"people[{i}]"
        if not isinstance(p, dict):
            raise bad(where, "expected an object")
        try:
            fields = ("name", "display_name", "notes", "valid_from", "valid_until", "created")
            row = person_row(**{k: p.get(k) for k in fields}, active=p.get("active", True))
            if identity.name_key(row["name"]) in seen:
                raise GalleryError(f"{row['name']!r} appears twice")
            seen.add(identity.name_key(row["name"]))
            if not isinstance(p.get("templates"), list):
                raise GalleryError("templates: expected a list")
        except GalleryError as e:
            raise bad(where, str(e)) from None
        templates: list[BundleTemplate] = []
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
