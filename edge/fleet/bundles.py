"""``edge export --fleet`` and ``edge import --fleet``: sealed bundles to and from the centre.

Why through a scratch gallery: a bundle's rules (the sealed format, what
counts as a collision, ``--merge``, ``--rename``, the look-alike warnings) live
in :mod:`edge.bundle` and are the same at the centre. So the centre's people
and templates are copied into a private, temporary SQLite gallery (sealed
under a throw-away key that never touches the disk), the bundle is exported
from it or imported into it by :mod:`edge.bundle` itself, and what the import
added is written back to the centre. All of it runs inside one centre
transaction that holds the change lock from the start, so nobody changes the
centre between the copy and the write-back, and a refused import writes nothing.

Access rules (``doors``, ``schedule``) and cards are not part of the bundle
format: an exported person goes without them, an imported one gets none.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import crypto
from ..bundle import ImportResult, export_bundle, import_bundle
from ..gallery import Gallery
from ..identity import name_key
from . import store, vault
from .admin import FleetAdmin, _scalar

#: Scratch gallery id -> centre id, for people and for templates.
_IdMap = dict[int, int]


@contextmanager
def _scratch(admin: FleetAdmin) -> Iterator[tuple[Gallery, _IdMap, _IdMap]]:
    """A temporary gallery holding a copy of the centre (call inside a change)."""
    key = admin.key()
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as tmp:
        os.chmod(tmp, 0o700)
        g = Gallery(Path(tmp) / "fleet.db", actor=admin.actor, key=crypto.new_key())
        people_map: _IdMap = {}
        template_map: _IdMap = {}
        try:
            people = store.people(admin.conn)
            temps = store.templates(admin.conn, key, [p.id for p in people])
            gkey = g._sealing_key()
            with g._write("copy the fleet"):
                for p in people:
                    local = g._insert("people", {
                        "name": p.name, "display_name": p.display_name, "active": int(p.active),
                        "valid_from": p.valid_from, "valid_until": p.valid_until,
                        "notes": p.notes, "created": p.created})
                    people_map[local] = p.id
                    for t in temps.get(p.id, ()):
                        tid = g._insert_template(gkey, local, t.embedding, t.quality,
                                                 t.source_sha256, t.created, model_id=t.model_id)
                        template_map[tid] = t.id
            yield g, people_map, template_map
        finally:
            g.close()


def export(admin: FleetAdmin, path: str | os.PathLike[str], passphrase: str,
           *, force: bool = False) -> int:
    """Write everyone at the centre to a sealed bundle; how many people. Audited at the centre."""
    crypto.check_passphrase(passphrase)
    n = 0
    with admin._change("export"), _scratch(admin) as (g, _, templates):
        n = export_bundle(g, path, passphrase, force=force)
        admin._audit("export", None, bundle=str(path), people=n, templates=len(templates))
    return n


def import_(
    admin: FleetAdmin,
    path: str | os.PathLike[str],
    passphrase: str | None,
    *,
    allow_unencrypted: bool = False,
    merge: bool = False,
    rename: tuple[str, ...] = (),
    threshold: float | None = None,
) -> ImportResult:
    """Add a bundle's people and templates at the centre, by :mod:`edge.bundle`'s rules."""
    result: ImportResult | None = None
    with admin._change("import") as c, _scratch(admin) as (g, people_map, template_map):
        result = import_bundle(g, path, passphrase, allow_unencrypted=allow_unencrypted,
                               merge=merge, rename=rename, threshold=threshold)
        key = admin.key()
        rows = g.db.execute(
            "SELECT p.id, p.name, p.display_name, p.active, p.valid_from, p.valid_until,"
            " p.notes, p.created FROM people p ORDER BY p.id").fetchall()
        for pid, name, display, active, start, end, notes, created in rows:
            if pid in people_map:
                continue
            people_map[pid] = _scalar(
                c, "INSERT INTO people (name, name_key, display_name, active, valid_from,"
                " valid_until, notes, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                [name, name_key(name), display, bool(active), start, end, notes, created])
        new = [r for r in g.db.execute(
            "SELECT id, person_id, embedding, quality, source_sha256, created, model_id"
            " FROM templates ORDER BY id").fetchall() if r[0] not in template_map]
        plains = g._unseal([r[:3] for r in new])
        for (_, pid, _, quality, sha, created, model_id), plain in zip(new, plains, strict=True):
            central = people_map[pid]
            tid = _scalar(c, "SELECT nextval(pg_get_serial_sequence('templates', 'id'))")
            c.execute(
                "INSERT INTO templates (id, person_id, embedding, quality, source_sha256,"
                " model_id, created) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [tid, central, vault.seal(key, central, tid, plain), quality, sha, model_id,
                 created])
        admin._audit(
            "import", None, bundle=str(path), people_added=result.people_added,
            templates_added=result.templates_added, skipped=result.skipped_duplicates,
            merged=list(result.merged), renamed=list(result.renamed))
    assert result is not None
    return result
