"""Which key files belong to which gallery: a rotation never strands another gallery.

Why: several galleries may sit beside one config (a copy, a test site, a
second door) and so start out sealed under the one ``security.key_file``.
Rotating that file in place for one of them made the others unreadable, and
the old key was kept nowhere, so older backups could not be restored either.

So a gallery's first rotation writes its new key to a file of its own,
``<gallery file name>.key`` beside it, and leaves the shared key file as it
was. From then on that own file is the gallery's key; the shared file is
still read, to open what is sealed under it (a backup from before). Each
later rotation keeps the key it replaces as ``<own key>.old-<fingerprint>``,
removed by :func:`prune_retired` once no backup on disk is sealed under it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from . import crypto
from .crypto import Keyring, fingerprint, key_id
from .errors import GalleryError
from .files import fsync_dir, write_temp


def own_key_file(db: Path) -> Path:
    """The key file that belongs to gallery ``db`` alone: ``<name>.key`` beside it."""
    return db.with_name(db.name + ".key")


def retired_key_files(db: Path) -> list[Path]:
    """The keys a rotation of ``db`` replaced and kept for its older backups."""
    own = own_key_file(db)
    try:
        return sorted(own.parent.glob(own.name + ".old-*"))
    except OSError:
        return []


def load_keyring(db: Path, key_file: Path, *, create: bool) -> Keyring:
    """The keyring of gallery ``db`` whose config names ``key_file``.

    The systemd credential wins, as before. Else the gallery's own key file
    if it has one (the shared ``key_file`` and retired keys then only
    open); else ``key_file``, with the gallery's own file as where a
    rotation will write (and where a rotation that crashed left its key).
    """
    own = own_key_file(db)
    if crypto.credential_path() is not None:
        return crypto.load_keyring(key_file, create=create)
    retired = tuple(crypto.read_key(p) for p in retired_key_files(db))
    if own.exists():
        ring = crypto.load_keyring(own, create=False)
        shared = (crypto.read_key(key_file),) if key_file != own and key_file.exists() else ()
        return replace(ring, others=shared + retired)
    ring = crypto.load_keyring(key_file, create=create)
    staged = crypto.staged_path(own)
    return Keyring(
        ring.current, ring.source, own,
        crypto.read_key(staged) if staged.exists() else None, retired,
    )


def retire_key(db: Path, key: bytes) -> Path:
    """Keep ``key`` (being replaced in ``db``'s own key file) for the backups sealed under it."""
    target = own_key_file(db).with_name(f"{own_key_file(db).name}.old-{fingerprint(key)}")
    try:
        os.replace(write_temp(target, key), target)
        fsync_dir(target.parent)
    except OSError as e:
        raise GalleryError(f"{target}: cannot keep the old key ({e.strerror})") from None
    return target


def sealed_under(backup: Path) -> bytes | None:
    """The id of the key ``backup``'s templates are sealed under (b"": none; None: unreadable)."""
    try:
        conn = sqlite3.connect(backup.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT substr(embedding, 2, ?) FROM templates LIMIT 1", [crypto.KEY_ID_BYTES]
            ).fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return b"" if row is None else bytes(row[0])


def prune_retired(db: Path, backups: Iterable[Path]) -> list[Path]:
    """Delete ``db``'s retired keys that none of ``backups`` needs; what went.

    Called right after a backup, so the gallery's own current key is among
    the needed. The galleries a restore set aside (``<name>.replaced-*``, ``.corrupt-*``)
    count as backups. One that cannot be read keeps every retired key:
    better an old key kept too long than a backup that can never be opened.
    """
    retired = retired_key_files(db)
    if not retired:
        return []
    aside = [p for p in db.parent.glob(db.name + ".*-*") if not p.name.endswith(("-wal", "-shm"))
             and p.name.split(".")[-1].startswith(("replaced-", "corrupt-"))]
    needed = set()
    for b in [*backups, *aside]:
        kid = sealed_under(b)
        if kid is None:
            return []
        needed.add(kid)
    removed = []
    for path in retired:
        with contextlib.suppress(OSError, GalleryError):
            if key_id(crypto.read_key(path)) not in needed:
                path.unlink()
                removed.append(path)
    return removed
