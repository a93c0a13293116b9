"""The gallery's schema and its migrations: every table of the SQLite file, in one place.

The schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in
order by :class:`~edge.gallery.Gallery` when it opens a file, each in the
transaction that bumps the version. The DDL is written out in SQL so the
schema can be read in one place (sqlite-utils is used only for its table
helpers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .crypto import fingerprint, seal
from .errors import GalleryError
from .records import EMBEDDING_BYTES
from .sealing import LEGACY_MODEL_ID, _aad

if TYPE_CHECKING:  # edge.gallery imports this module
    from .gallery import Gallery

_V1 = """
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    quality REAL,
    source_sha256 TEXT,
    created TEXT NOT NULL,
    UNIQUE (person_id, source_sha256)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    similarity REAL,
    liveness REAL,
    decision TEXT,
    reason TEXT
);
CREATE INDEX events_ts ON events(ts);
"""
# No separate index on templates(person_id): the UNIQUE (person_id, source_sha256)
# index starts with person_id, so it already serves lookups and cascades.

_V2 = """
ALTER TABLE people ADD COLUMN valid_from TEXT;
ALTER TABLE people ADD COLUMN valid_until TEXT;
ALTER TABLE people ADD COLUMN notes TEXT;
ALTER TABLE events ADD COLUMN mono REAL;
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN detail TEXT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('generation', 0);
"""


def _v1_initial(g: Gallery) -> None:
    """People, templates and an access log."""
    g.db.executescript(_V1)


def _v2_validity_and_audit(g: Gallery) -> None:
    """Validity windows and notes on people; monotonic time, actor and detail on
    events; a generation counter for the daemon to notice changes."""
    g.db.executescript(_V2)


def _v3_seal_templates(g: Gallery) -> None:
    """Seal every plain template (see :mod:`edge.crypto`); a ``migrate`` event says how many.

    The key is loaded (or created) only if there is a template to seal. The
    plain bytes are gone from the file once the WAL is checkpointed (pages are
    zeroed as they are freed), but not from backups or bundles made before.
    """
    rows = g.db.execute("SELECT id, person_id, embedding FROM templates").fetchall()
    if not rows:
        return
    key = g._keys(create=True).current
    for tid, person_id, blob in rows:
        if len(blob) != EMBEDDING_BYTES:
            raise GalleryError(f"{g.path}: template {tid} is {len(blob)} bytes, not an embedding")
        g.db.execute(
            "UPDATE templates SET embedding = ? WHERE id = ?",
            [seal(key, blob, _aad(person_id, tid)), tid],
        )
    g._audit("migrate", None, schema=3, templates_sealed=len(rows), key=fingerprint(key))


_V4 = """
ALTER TABLE templates ADD COLUMN model_id TEXT;
CREATE INDEX templates_model ON templates(model_id);
CREATE TABLE crops (
    template_id INTEGER PRIMARY KEY REFERENCES templates(id) ON DELETE CASCADE,
    crop BLOB NOT NULL
);
"""
# Crops live in their own table, not in a templates column: a 50 KB crop would
# spread every template row over its own pages and slow the matcher's load.


def _v4_templates_know_their_model(g: Gallery) -> None:
    """Each template names the embedder that made it (``model_id``: the model file's
    sha256); every existing one was made by :data:`LEGACY_MODEL_ID`. A ``crops`` table
    keeps the sealed face crop of each enrollment (:mod:`edge.crops`) for ``edge reembed``."""
    g.db.executescript(_V4)
    tagged = g.db.execute("UPDATE templates SET model_id = ?", [LEGACY_MODEL_ID]).rowcount
    if tagged:
        g._audit("migrate", None, schema=4, templates_tagged=tagged, model_id=LEGACY_MODEL_ID)


#: Schema migrations in order; after ``MIGRATIONS[i]`` the schema is version ``i + 1``.
MIGRATIONS: list[Callable[[Gallery], None]] = [
    _v1_initial,
    _v2_validity_and_audit,
    _v3_seal_templates,
    _v4_templates_know_their_model,
]
SCHEMA_VERSION = len(MIGRATIONS)
