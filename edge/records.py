"""Checked rows for the gallery's tables: names, notes, times, embeddings, events.

Pure functions, no database: each takes what a caller (the admin CLI, an
imported bundle, the daemon's event writer) offers and returns a row ready to
insert, or raises GalleryError naming the first bad field. The gallery and
:mod:`edge.bundle` both check through here, so a bundle is held to the same
rules as an enrollment.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import GalleryError
from .match import DIM, parse_time

MAX_NAME = 64
MAX_NOTES = 2000
#: The size of a packed embedding (:func:`pack_embedding`): DIM little-endian float32.
EMBEDDING_BYTES = DIM * 4
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z][a-z_]{0,31}")
#: Unicode categories refused in names: controls, format characters (bidi
#: overrides, zero-width), surrogates, private use, unassigned, line breaks.
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def now_iso() -> str:
    """The wall clock (``time.time()``) as fixed-width ISO-8601 UTC, so text order is time order."""
    return datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="microseconds")


def iso_time(value: str | datetime | None, what: str) -> str | None:
    """A time as fixed-width ISO-8601 UTC (naive times are local), or None."""
    try:
        t = parse_time(value)
    except (TypeError, ValueError):
        raise GalleryError(f"{what}: not an ISO-8601 time: {value!r}") from None
    return None if t is None else t.isoformat(timespec="microseconds")


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a usable name, else GalleryError saying why.

    Non-empty, at most 64 characters, no surrounding spaces, and nothing that
    hides in a terminal or a log (control, format or unassigned characters).
    Returned in Unicode NFC, the one form names are stored and compared in
    (:mod:`edge.identity`).
    """
    if not isinstance(name, str) or not name:
        raise GalleryError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME:
        raise GalleryError(f"{what} {name[:MAX_NAME]!r}...: longer than {MAX_NAME} characters")
    if name != name.strip():
        raise GalleryError(f"{what} {name!r}: leading or trailing whitespace")
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in name):
        raise GalleryError(f"{what} {name!r}: contains control or invisible characters")
    return unicodedata.normalize("NFC", name)


def check_notes(notes: object) -> str | None:
    """``notes`` if it is None or text of at most :data:`MAX_NOTES` characters."""
    if notes is None:
        return None
    if not isinstance(notes, str) or len(notes) > MAX_NOTES:
        raise GalleryError(f"notes must be text of at most {MAX_NOTES} characters")
    return notes


def check_window(
    valid_from: str | datetime | None, valid_until: str | datetime | None
) -> tuple[str | None, str | None]:
    """A validity window as ISO-8601 UTC ``(start, end)``; the end must follow the start."""
    start, end = iso_time(valid_from, "valid_from"), iso_time(valid_until, "valid_until")
    if start is not None and end is not None and end <= start:
        raise GalleryError(f"valid_until {end} is not after valid_from {start}")
    return start, end


def pack_embedding(embedding: npt.ArrayLike) -> bytes:
    """128 finite numbers, normalised to unit length, as little-endian float32 bytes."""
    try:
        e = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError):
        raise GalleryError("embedding is not an array of numbers") from None
    if e.shape != (DIM,):
        raise GalleryError(f"embedding must have shape ({DIM},), got {e.shape}")
    norm = float(np.linalg.norm(e)) if np.all(np.isfinite(e)) else math.nan
    if not math.isfinite(norm) or norm == 0.0:
        raise GalleryError("embedding has non-finite values or is all zeros")
    return (e / norm).astype("<f4").tobytes()


def person_row(
    name: object,
    display_name: object = None,
    notes: object = None,
    valid_from: str | datetime | None = None,
    valid_until: str | datetime | None = None,
    active: object = True,
    created: object = None,
) -> dict[str, Any]:
    """A checked ``people`` row; GalleryError naming the first bad field."""
    if display_name is not None:
        check_name(display_name, "display name")
    if not isinstance(active, bool):
        raise GalleryError("active must be true or false")
    if created is not None and not isinstance(created, str):
        raise GalleryError("created must be text")
    start, end = check_window(valid_from, valid_until)
    return {
        "name": check_name(name),
        "display_name": display_name,
        "active": int(active),
        "valid_from": start,
        "valid_until": end,
        "notes": check_notes(notes),
        "created": created or now_iso(),
    }


def check_template(t: object) -> tuple[bytes, float | None, str | None]:
    """One ``(embedding, quality, source_sha256)`` checked and packed for storage."""
    if not isinstance(t, (tuple, list)) or len(t) != 3:
        raise GalleryError("a template must be (embedding, quality, source_sha256)")
    embedding, quality, sha = t
    return (pack_embedding(embedding), *check_quality_and_sha(quality, sha))


def check_quality_and_sha(quality: object, sha: object) -> tuple[float | None, str | None]:
    """A template's quality (a finite number or None) and source sha (hex or None)."""
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, numbers.Real):
            raise GalleryError(f"quality must be a number or None, got {quality!r}")
        if not math.isfinite(quality):
            raise GalleryError("quality must be finite")
        quality = float(quality)
    if sha is not None and (not isinstance(sha, str) or not _SHA256.fullmatch(sha)):
        raise GalleryError(f"source_sha256 must be 64 lowercase hex digits, got {sha!r}")
    return quality, sha


def detail_json(value: dict[str, Any] | None) -> str | None:
    """``value`` as compact JSON text for the ``detail`` column, or None."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise GalleryError(f"event detail is not JSON-serialisable ({e})") from None


def event_row(
    kind: str,
    *,
    name: str | None = None,
    similarity: float | None = None,
    liveness: float | None = None,
    decision: str | None = None,
    reason: str | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    mono: float | None = None,
    ts: str | datetime | None = None,
) -> dict[str, Any]:
    """A checked ``events`` row; GalleryError for a bad kind or decision."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise GalleryError(f"event kind {kind!r}: expected a short lowercase word")
    if decision not in (None, "granted", "denied"):
        raise GalleryError(f"event decision {decision!r}: expected granted, denied or None")
    return {
        "ts": iso_time(ts, "ts") if ts is not None else now_iso(),
        "mono": mono,
        "kind": kind,
        "name": name,
        "similarity": similarity,
        "liveness": liveness,
        "decision": decision,
        "reason": reason,
        "actor": actor,
        "detail": detail_json(detail),
    }
