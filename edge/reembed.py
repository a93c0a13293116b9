"""Following a new embedder: which templates are stale, and ``edge reembed``.

Embeddings of two models are not comparable (their spaces differ), so the
gallery tags each template with the ``model_id`` of the embedder that made it
(the model file's sha256) and the matcher reads only the running model's
(:meth:`edge.gallery.Gallery.matcher`). When the embedder changes, a template
of the old model silently stops matching. This module says who is affected
(:func:`coverage`: ``edge doctor`` and ``edge list`` show it) and recomputes
templates from the face crops kept at enrollment (:func:`reembed`).

Someone whose crops were not kept (enrolled before schema v4, or with
``gallery.keep_crops: false``) and who has no template of the running model
"needs re-enrollment": only new photos can bring them back.

Like :mod:`edge.bundle`, this uses the gallery's transaction and sealing
helpers as a friend, so all of a re-embedding is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Config
from .crops import FaceCrop
from .errors import GalleryError
from .records import pack_embedding

if TYPE_CHECKING:
    from .embed import Embedder
    from .gallery import Gallery


def configured_model_id(cfg: Config) -> str:
    """The ``model_id`` of the embedder the config runs, without loading it.

    The manifest's sha256 of the model file (the file is checked against it
    before it is ever loaded, so this is what :class:`~edge.embed.Embedder`
    reports too).
    """
    from .embed import EMBED_MODELS
    from .models import entry

    return entry(EMBED_MODELS[cfg.embed.model].role).sha256


@dataclass(frozen=True)
class Coverage:
    """How the gallery stands for one embedder.

    ``current``: templates of ``model_id``; ``stale``: templates of other
    models; ``reembeddable``: stale ones with a kept crop (``edge reembed``
    fixes them); ``needs_reenrollment``: names of people with templates but
    none of ``model_id`` and no crop to make one from.
    """

    model_id: str
    current: int
    stale: int
    reembeddable: int
    needs_reenrollment: tuple[str, ...]


def coverage(gallery: Gallery, model_id: str) -> Coverage:
    """Where the gallery's templates stand for the embedder ``model_id`` (one snapshot)."""
    with gallery._read("read template models"):
        current, stale, reembeddable = gallery.db.execute(
            "SELECT coalesce(sum(t.model_id = ?), 0), coalesce(sum(t.model_id IS NOT ?), 0),"
            " coalesce(sum(t.model_id IS NOT ? AND c.template_id IS NOT NULL), 0)"
            " FROM templates t LEFT JOIN crops c ON c.template_id = t.id",
            [model_id, model_id, model_id],
        ).fetchone()
        names = [
            r[0]
            for r in gallery.db.execute(
                "SELECT p.name FROM people p JOIN templates t ON t.person_id = p.id"
                " LEFT JOIN crops c ON c.template_id = t.id GROUP BY p.id"
                " HAVING sum(t.model_id = ?) = 0 AND count(c.template_id) = 0"
                " ORDER BY p.name",
                [model_id],
            )
        ]
    return Coverage(model_id, int(current), int(stale), int(reembeddable), tuple(names))


@dataclass(frozen=True)
class Reembedding:
    """What :func:`reembed` did: templates recomputed, and templates left without a crop."""

    model_id: str
    recomputed: int
    without_crop: int
    needs_reenrollment: tuple[str, ...]


def reembed(gallery: Gallery, embedder: Embedder) -> Reembedding:
    """Recompute every template that has a kept crop with ``embedder``, in ONE transaction.

    Each crop is unsealed, aligned for ``embedder`` from its stored keypoints,
    embedded, and the template's embedding and ``model_id`` replaced in its
    row (re-sealed). All or nothing: a crop that does not open or decode, or
    any other error, rolls everything back, so the gallery is never half one
    model and half another. A ``reembed`` event records the model and counts.
    Templates without a crop are left as they are (those of another model
    never match; their people are in ``needs_reenrollment``).
    """
    model_id = embedder.model_id
    with gallery._write("reembed"):
        key = gallery._sealing_key()
        rows = gallery.db.execute(
            "SELECT t.id, t.person_id, c.crop FROM templates t"
            " JOIN crops c ON c.template_id = t.id ORDER BY t.id"
        ).fetchall()
        plains = gallery._unseal_crops(rows)
        for (tid, person_id, _), plain in zip(rows, plains, strict=True):
            try:
                crop = FaceCrop.from_bytes(plain)
            except GalleryError as e:
                raise GalleryError(f"{gallery.path}: template {tid}: {e}") from None
            emb = embedder.embed(embedder.crop(crop.image, crop.keypoints))
            gallery._replace_template(key, person_id, tid, pack_embedding(emb), model_id)
        without = gallery.db.execute(
            "SELECT count(*) FROM templates t LEFT JOIN crops c ON c.template_id = t.id"
            " WHERE c.template_id IS NULL AND t.model_id IS NOT ?",
            [model_id],
        ).fetchone()[0]
        gallery._audit(
            "reembed",
            None,
            model_id=model_id,
            model=getattr(embedder, "name", None),
            recomputed=len(rows),
            without_crop=int(without),
        )
    gallery._checkpoint()  # old embeddings out of the WAL
    return Reembedding(
        model_id, len(rows), int(without), coverage(gallery, model_id).needs_reenrollment
    )
