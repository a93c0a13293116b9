"""Templates and face crops sealed at rest, and the gallery key: the gallery's vault.

Why apart from :mod:`edge.gallery`: this is one concept (what is secret in the
file, under which key, bound to which row) that the gallery, :mod:`edge.bundle`
and :mod:`edge.reembed` all go through. :class:`SealedTemplates` is a mixin of
:class:`~edge.gallery.Gallery`: its methods run inside the gallery's own
transactions (``_write``/``_read``) and use its connection and key state.

* Each template's embedding and each kept face crop is sealed (AES-256-GCM,
  :mod:`edge.crypto`) under the gallery key and bound to its person and
  template ids (:func:`_aad`, :func:`_crop_aad`), so blobs cannot be moved
  between rows or people.
* Each template row names the embedder that made it (``model_id``: the model
  file's sha256); a re-embedding or re-enrollment replaces the embedding and
  the tag in place, in the same row (so the binding to its ids holds).
* The key is loaded only when a template is read or written, and a rotation
  re-seals templates and crops in one transaction (:meth:`rotate_key`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import crypto, keys
from .crypto import Keyring, fingerprint, key_id, open_, seal, sealed_key_id
from .errors import GalleryError
from .records import EMBEDDING_BYTES

if TYPE_CHECKING:
    from sqlite_utils import Database

_SEALED_BYTES = EMBEDDING_BYTES + crypto.OVERHEAD

#: The embedder of every template made before schema v4 (and the default tag of
#: :meth:`~edge.gallery.Gallery.enroll`): the sha256 of ``mobilefacenet_int8.tflite``,
#: the only embedder edge-access had then (``models/manifest.toml``).
LEGACY_MODEL_ID = "fa77f06af74876b7a1b39403b093ee9c74c62f29a60005e13e445f74c06c445d"


@dataclass(frozen=True)
class KeyRotation:
    """What a key rotation did: old and new key fingerprints, templates and crops re-sealed."""

    old: str
    new: str
    templates: int
    crops: int = 0


def _aad(person_id: int, template_id: int) -> bytes:
    """What a template's sealed blob is bound to: its person and its own row."""
    return b"edge-access template\x00" + struct.pack(">qq", person_id, template_id)


def _crop_aad(person_id: int, template_id: int) -> bytes:
    """What a face crop's sealed blob is bound to: its person and its template."""
    return b"edge-access crop\x00" + struct.pack(">qq", person_id, template_id)


class SealedTemplates:
    """Sealing, key handling and template rows: a mixin of :class:`~edge.gallery.Gallery`."""

    path: Path
    db: Database
    _ring: Keyring | None
    _key_file: Path
    _keys_of: Path

    if TYPE_CHECKING:  # provided by Gallery

        def _write(self, what: str, *, content: bool = True) -> AbstractContextManager[None]: ...

        def _audit(self, kind: str, name: str | None, **detail: Any) -> None: ...

        def _insert(self, table: str, row: dict[str, Any]) -> int: ...

        def _checkpoint(self) -> None: ...

    def _keys(self, *, create: bool = False, reload: bool = False) -> Keyring:
        """The keyring, loaded on first need; ``reload`` re-reads a key file.

        A missing key file is created only for a gallery with nothing sealed
        yet: a new key could open nothing already there. A key staged by a
        rotation that committed but crashed before renaming it into place
        (the templates are sealed under it) is installed here.
        """
        if self._ring is None or (reload and self._ring.key_file is not None):
            create = create and self._key_in_use() is None
            self._ring = keys.load_keyring(self._keys_of, self._key_file, create=create)
        ring = self._ring
        if (
            ring.staged is not None
            and ring.key_file is not None
            and self._key_in_use() == key_id(ring.staged)
        ):
            crypto.commit_staged_key(ring.key_file, ring.staged)
            self._ring = ring = Keyring(ring.staged, ring.source, ring.key_file)
        return ring

    def _key_in_use(self) -> bytes | None:
        """The id of the key the templates are sealed under; None when there are none."""
        row = self.db.execute(
            "SELECT substr(embedding, 2, ?) FROM templates WHERE length(embedding) = ? LIMIT 1",
            [crypto.KEY_ID_BYTES, _SEALED_BYTES],
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _wrong_key(self, kid: bytes, ring: Keyring) -> GalleryError:
        return GalleryError(
            f"{self.path}: templates are sealed under key {kid.hex()}, but {ring.source}"
            f" holds key {fingerprint(ring.current)} (wrong key, or a gallery from elsewhere)"
        )

    def _sealing_key(self) -> bytes:
        """The key to seal new templates under: the one the gallery already uses."""
        ring = self._keys(create=True)
        in_use = self._key_in_use()
        if in_use is None:
            return ring.current
        key = ring.key_for(in_use)
        if key is None:  # another process may have rotated the key since we read it
            ring = self._keys(reload=True)
            key = ring.key_for(in_use)
        if key is None:
            raise self._wrong_key(in_use, ring)
        return key

    def _unseal(self, rows: Sequence[tuple[int, int, bytes]]) -> list[bytes]:
        """The plain embeddings of ``(template id, person id, blob)`` rows.

        GalleryError for the first that does not open: no key, the wrong key,
        or a blob altered or moved from another row. Never a partial answer.
        """
        if not rows:
            return []
        ring = self._keys()
        out = []
        for tid, person_id, blob in rows:
            kid = sealed_key_id(blob)
            if kid is None or len(blob) != _SEALED_BYTES:
                raise GalleryError(f"{self.path}: template {tid} is not a sealed embedding")
            key = ring.key_for(kid)
            if key is None and ring.key_file is not None:
                ring = self._keys(reload=True)
                key = ring.key_for(kid)
            if key is None:
                raise self._wrong_key(kid, ring)
            try:
                out.append(open_(key, blob, _aad(person_id, tid)))
            except GalleryError as e:
                where = f"{self.path}: template {tid} (person {person_id})"
                raise GalleryError(f"{where}: {e}") from None
        return out

    def _unseal_crops(self, rows: Sequence[tuple[int, int, bytes]]) -> list[bytes]:
        """The plain face crops of ``(template id, person id, blob)`` rows (as :meth:`_unseal`)."""
        if not rows:
            return []
        ring = self._keys()
        out = []
        for tid, person_id, blob in rows:
            kid = sealed_key_id(blob)
            key = None if kid is None else ring.key_for(kid)
            if kid is not None and key is None and ring.key_file is not None:
                ring = self._keys(reload=True)
                key = ring.key_for(kid)
            if kid is None:
                raise GalleryError(f"{self.path}: crop of template {tid} is not sealed")
            if key is None:
                raise self._wrong_key(kid, ring)
            try:
                out.append(open_(key, blob, _crop_aad(person_id, tid)))
            except GalleryError as e:
                raise GalleryError(f"{self.path}: crop of template {tid}: {e}") from None
        return out

    def _insert_template(
        self,
        key: bytes,
        person_id: int,
        plain: bytes,
        quality: float | None,
        sha: str | None,
        created: str,
        *,
        model_id: str = LEGACY_MODEL_ID,
        crop: bytes | None = None,
    ) -> int:
        """Seal and insert one template, and its crop if given (inside the caller's write
        transaction); its id.

        The row id is chosen here (the write lock makes ``max + 1`` safe) so
        the blob can be bound to it before it is written.
        """
        tid = int(self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM templates").fetchone()[0])
        self._insert(
            "templates",
            {
                "id": tid,
                "person_id": person_id,
                "embedding": seal(key, plain, _aad(person_id, tid)),
                "quality": quality,
                "source_sha256": sha,
                "created": created,
                "model_id": model_id,
            },
        )
        if crop is not None:
            self._put_crop(key, person_id, tid, crop)
        return tid

    def _put_crop(self, key: bytes, person_id: int, template_id: int, crop: bytes) -> None:
        """Seal and store (or replace) a template's face crop, inside the caller's write."""
        self.db.execute(
            "INSERT OR REPLACE INTO crops (template_id, crop) VALUES (?, ?)",
            [template_id, seal(key, crop, _crop_aad(person_id, template_id))],
        )

    def _replace_template(
        self,
        key: bytes,
        person_id: int,
        template_id: int,
        plain: bytes,
        model_id: str,
        quality: float | None = None,
    ) -> None:
        """Put a new embedding (of ``model_id``) into an existing template row, sealed."""
        self.db.execute(
            "UPDATE templates SET embedding = ?, model_id = ?, quality = coalesce(?, quality)"
            " WHERE id = ?",
            [seal(key, plain, _aad(person_id, template_id)), model_id, quality, template_id],
        )

    def rotate_key(self, new_key: bytes | None = None) -> KeyRotation:
        """Re-seal every template under a new key, in one transaction; what it did.

        With a key file, the new key (random unless given) is staged beside
        it inside the transaction and renamed into place after the commit;
        at every instant each template's key is on disk (:mod:`edge.crypto`).
        With a key handed in, or a systemd credential (read-only here),
        ``new_key`` is required and installing it is the caller's job.
        Backups made before keep the old key: take a fresh one.
        """
        if new_key is not None and (
            not isinstance(new_key, bytes) or len(new_key) != crypto.KEY_BYTES
        ):
            raise GalleryError(f"a gallery key is {crypto.KEY_BYTES} bytes")
        with self._write("rotate key"):
            ring = self._keys(create=True, reload=True)
            if ring.key_file is None and new_key is None:
                raise GalleryError(
                    f"{ring.source}: not a key file this command can replace; give the new"
                    " key and install it where this one comes from"
                )
            new = new_key if new_key is not None else crypto.new_key()
            rows = self.db.execute("SELECT id, person_id, embedding FROM templates").fetchall()
            plains = self._unseal(rows)
            crop_rows = self.db.execute(
                "SELECT c.template_id, t.person_id, c.crop"
                " FROM crops c JOIN templates t ON t.id = c.template_id"
            ).fetchall()
            crops = self._unseal_crops(crop_rows)
            if ring.key_file is not None:
                # Under the write lock no other rotation is staging: any temporary is stale.
                crypto.remove_stale_temporaries(ring.key_file, older_than=0)
                if ring.key_file.exists():  # the gallery's own key: keep it for old backups
                    keys.retire_key(self._keys_of, ring.current)
                crypto.stage_key(ring.key_file, new)
            try:
                for (tid, person_id, _), plain in zip(rows, plains, strict=True):
                    self.db.execute(
                        "UPDATE templates SET embedding = ? WHERE id = ?",
                        [seal(new, plain, _aad(person_id, tid)), tid],
                    )
                for (tid, person_id, _), crop in zip(crop_rows, crops, strict=True):
                    self._put_crop(new, person_id, tid, crop)
                self._audit(
                    "key_rotation",
                    None,
                    old=fingerprint(ring.current),
                    new=fingerprint(new),
                    templates=len(rows),
                    crops=len(crop_rows),
                )
            except BaseException:
                if ring.key_file is not None:
                    crypto.discard_staged_key(ring.key_file)
                raise
        if ring.key_file is not None:
            crypto.commit_staged_key(ring.key_file, new)
        self._ring = Keyring(new, ring.source, ring.key_file)
        self._checkpoint()  # old blobs out of the WAL
        return KeyRotation(fingerprint(ring.current), fingerprint(new), len(rows), len(crop_rows))
