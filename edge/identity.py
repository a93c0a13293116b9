"""Who a person is: one name however it is typed, and one face under one name.

Names are compared by :func:`name_key`: NFC-normalised and case-folded, so
``Rose``, ``rose`` and ``ROSE`` are one person, and "José" typed with a
combining accent (NFD, as macOS and some keyboards send it) is the José
already enrolled (NFC). A name is stored as given, in NFC, so two names that
list identically are never two people.

No unique index backs this: the key is computed in Python (SQLite's NOCASE
folds ASCII only), and every lookup and every insert or rename runs inside
the gallery's ``BEGIN IMMEDIATE`` write transaction, so the check and the
write cannot interleave with another process's. A gallery written before
this rule may hold two names with one key; they stay reachable by their
exact spelling, and a folded lookup that fits both is refused as ambiguous.

A face is one person too: :func:`look_alike` finds an enrolled person whom
new templates would already be recognised as, so ``edge enroll`` refuses to
give a second name to a face (which would lock the real person out through
the match margin) and ``edge import`` warns when a bundle's person does not
look like the local person of that name.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import GalleryError
from .match import DIM

if TYPE_CHECKING:
    from .gallery import Gallery
    from .sealing import SealedTemplates


def nfc(name: str) -> str:
    """``name`` in Unicode NFC, the one form names are stored in."""
    return unicodedata.normalize("NFC", name)


def name_key(name: str) -> str:
    """The form two names are compared in: NFC, case-folded (folding can denormalise: NFC again)."""
    return nfc(nfc(name).casefold())


def find(db: sqlite3.Connection, name: str) -> tuple[int, str] | None:
    """(id, stored name) of the person ``name`` means, or None; GalleryError if ambiguous.

    The exact (NFC) spelling wins; otherwise the one person whose name has
    the same :func:`name_key`.
    """
    row = db.execute("SELECT id, name FROM people WHERE name = ?", [nfc(name)]).fetchone()
    if row is not None:
        return int(row[0]), str(row[1])
    key = name_key(name)
    rows = db.execute("SELECT id, name FROM people")
    hits = [(int(i), str(n)) for i, n in rows if name_key(n) == key]
    if len(hits) > 1:
        spelled = ", ".join(repr(n) for _, n in hits)
        raise GalleryError(f"{name!r}: ambiguous ({spelled}); give the exact name")
    return hits[0] if hits else None


def taken(db: sqlite3.Connection, name: str, except_id: int | None = None) -> str | None:
    """The stored name of another person (not ``except_id``) that ``name`` would collide with."""
    key = name_key(name)
    for i, n in db.execute("SELECT id, name FROM people"):
        if i != except_id and name_key(n) == key:
            return str(n)
    return None


@dataclass(frozen=True)
class LookAlike:
    """An enrolled person some new templates match: who, how closely, and which template."""

    person_id: int
    name: str
    similarity: float
    template: int  # index into the templates offered, from 0


def _embeddings(
    gallery: SealedTemplates, where: str, args: Sequence[object]
) -> tuple[np.ndarray, list[int]]:
    """Plain embeddings (rows) and their person ids, of the templates ``where`` selects."""
    rows = gallery.db.execute(
        f"SELECT id, person_id, embedding FROM templates WHERE {where}", list(args)
    ).fetchall()
    plain = b"".join(gallery._unseal(rows))
    return np.frombuffer(plain, dtype="<f4").reshape(-1, DIM), [int(r[1]) for r in rows]


def look_alike(
    gallery: SealedTemplates,
    embeddings: Sequence[bytes],
    threshold: float,
    except_id: int | None = None,
    *,
    model_id: str,
) -> LookAlike | None:
    """The enrolled person (other than ``except_id``) most like any of ``embeddings``, if at or
    above ``threshold``; call inside the gallery's transaction. Embeddings are packed unit rows.

    Only templates of ``model_id`` (the embedder that made ``embeddings``) are
    compared: a similarity between two models' embeddings means nothing.
    """
    if not embeddings:
        return None
    theirs, owners = _embeddings(
        gallery, "person_id IS NOT ? AND model_id = ?", [except_id, model_id]
    )
    if not owners:
        return None
    mine = np.frombuffer(b"".join(embeddings), dtype="<f4").reshape(-1, DIM)
    sims = mine.astype(np.float32) @ theirs.astype(np.float32).T
    t, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    best = float(sims[t, j])
    if best < threshold:
        return None
    name = gallery.db.execute("SELECT name FROM people WHERE id = ?", [owners[j]]).fetchone()[0]
    return LookAlike(owners[j], str(name), best, int(t))


def best_similarity(
    gallery: Gallery, person_id: int, embeddings: Sequence[bytes], *, model_id: str
) -> float | None:
    """The highest similarity between ``embeddings`` and person ``person_id``'s templates.

    Only templates of ``model_id`` (the embedder that made ``embeddings``) are
    compared, as in :func:`look_alike`; None when the person has none of them
    (a similarity between two models' embeddings means nothing).
    """
    theirs, owners = _embeddings(gallery, "person_id = ? AND model_id = ?", [person_id, model_id])
    if not owners or not embeddings:
        return None
    mine = np.frombuffer(b"".join(embeddings), dtype="<f4").reshape(-1, DIM)
    return float(np.max(mine.astype(np.float32) @ theirs.astype(np.float32).T))


def former_names(gallery: Gallery, name: str) -> list[str]:
    """The names person ``name`` had before, newest first, from the log's ``rename`` events."""
    current, out = name_key(name), []
    for e in reversed(gallery.events(kind="rename")):
        d = e.detail or {}
        new, old = d.get("new"), d.get("old")
        if isinstance(new, str) and isinstance(old, str) and name_key(new) == current:
            out.append(old)
            current = name_key(old)
    return out
