"""The fleet key: where it lives, and templates sealed under it at the centre.

Why a key of its own: the central database and its dumps must hold no
embedding, and each door's gallery has its own key. So the centre seals each
template under the *fleet key* (AES-256-GCM, :mod:`edge.crypto`), bound to its
person and template ids with an AAD distinct from a gallery's (a central blob
cannot be passed off as a local one); a door opens it with its copy of the
fleet key and re-seals it under its gallery key.

Where the key is: the systemd credential ``fleet-key`` if present, else
``fleet.key_file`` (default ``data/fleet.key``, mode 0600, 32 raw bytes or 64
hex digits, as a gallery key). ``edge fleet init`` creates it on the admin's
machine if missing and records its id in the centre's ``meta`` table
(``key_id``); the admin copies the file to each door (``scp``, then
``chmod 600``), or installs it as the credential. A door or admin whose key
does not match ``meta.key_id`` is told so in one line.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import crypto
from ..errors import GalleryError
from .connect import FleetError

if TYPE_CHECKING:
    import psycopg

    from ..config import Config

#: The systemd credential holding the fleet key (``LoadCredential=fleet-key:...``).
CREDENTIAL = "fleet-key"


def aad(person_id: int, template_id: int) -> bytes:
    """What a central template's sealed blob is bound to: its person and its own row."""
    return b"edge-access fleet template\x00" + struct.pack(">qq", person_id, template_id)


def _credential() -> Path | None:
    """``$CREDENTIALS_DIRECTORY/fleet-key`` if systemd passed that credential, else None."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(folder) / CREDENTIAL if folder else None
    return path if path is not None and path.is_file() else None


def key_path(cfg: Config) -> Path:
    """Where the fleet key comes from: the credential, else ``fleet.key_file``."""
    return _credential() or cfg.path(cfg.fleet.key_file)


def load_key(cfg: Config, *, create: bool = False) -> bytes:
    """The fleet key; with ``create``, a missing key file is made (32 random bytes, 0600).

    A credential is read as systemd gives it (its mode is systemd's business);
    a key file must be private.
    """
    cred = _credential()
    path = cred or cfg.path(cfg.fleet.key_file)
    try:
        if not path.exists():
            if not create:
                raise FleetError(
                    f"{path}: fleet key not found; copy it from the admin's machine"
                    " (edge fleet init made it) and chmod 600 it")
            crypto._create_key_file(path)
        return crypto.read_key(path, private=cred is None)
    except GalleryError as e:
        raise FleetError(str(e).replace("gallery key", "fleet key")) from None


def key_id(key: bytes) -> str:
    """The id recorded in ``meta.key_id`` (hex of :func:`edge.crypto.key_id`)."""
    return crypto.key_id(key).hex()


def check_key(conn: psycopg.Connection[Any], key: bytes, source: str) -> None:
    """FleetError unless ``key`` is the key the fleet's templates are sealed under."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
    if row is not None and row[0] != key_id(key):
        raise FleetError(
            f"{source}: not this fleet's key (the fleet's is {row[0]}, this is"
            f" {key_id(key)}); copy the key edge fleet init made")


def record_key(conn: psycopg.Connection[Any], key: bytes, source: str) -> None:
    """Record ``key`` as the fleet's in ``meta`` (first init), or check it is (later ones)."""
    check_key(conn, key, source)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('key_id', %s) ON CONFLICT (key) DO NOTHING",
        [key_id(key)])


def seal(key: bytes, person_id: int, template_id: int, plain: bytes) -> bytes:
    """A packed embedding sealed for the centre's ``templates`` row ``template_id``."""
    return crypto.seal(key, plain, aad(person_id, template_id))


def open_(key: bytes, person_id: int, template_id: int, blob: bytes) -> bytes:
    """The packed embedding of a central template; FleetError naming it if it does not open."""
    try:
        return crypto.open_(key, blob, aad(person_id, template_id))
    except GalleryError as e:
        raise FleetError(f"fleet template {template_id} (person {person_id}): {e}") from None
