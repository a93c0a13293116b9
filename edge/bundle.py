"""Export and import: a gallery's people and templates as one sealed, portable file.

A bundle is JSON (format :data:`BUNDLE_FORMAT`, version :data:`BUNDLE_VERSION`)
sealed under a key derived from a passphrase (:func:`edge.crypto.seal_bundle`),
so templates can move between sites with different gallery keys. It is read
(:mod:`edge.bundle_file`) through the same checks as an enrollment
(:mod:`edge.records`) and merged in
one transaction of the :class:`~edge.gallery.Gallery`, whose transaction and
sealing helpers this module uses as a friend.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import crypto, identity
from .bundle_file import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    BundleTemplate,
    is_sealed_bundle,
    read_bundle,
)
from .errors import GalleryError
from .files import write_temp
from .gallery import Gallery
from .records import check_name, now_iso

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "ImportResult", "check_target", "export_bundle",
    "import_bundle", "is_sealed_bundle",
]


@dataclass(frozen=True)
class ImportResult:
    """What an import did: new people, templates added, templates already present, and
    the names merged into a local person, renamed (``"bundle name -> new name"``) or warned of."""

    people_added: int
    templates_added: int
    skipped_duplicates: int
    merged: tuple[str, ...] = ()
    renamed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def export_bundle(
    gallery: Gallery, path: str | os.PathLike[str], passphrase: str, *, force: bool = False
) -> int:
    """Write every person and template of ``gallery`` to a sealed bundle (mode 0600).

    Returns how many people it holds. An existing file is replaced only with
    ``force``; a folder, device, FIFO or symlink never is (as root, renaming
    over ``/dev/full`` would replace the device node).

    The bundle is JSON sealed under a key derived from ``passphrase``
    (scrypt, then AES-256-GCM: :func:`edge.crypto.seal_bundle`), so it can
    move to a site with another gallery key. Written to a temporary file
    and renamed, so a failed export leaves no half-written bundle. An
    ``export`` event records who took the templates out, and where to.
    """
    crypto.check_passphrase(passphrase)
    path = Path(path)
    check_target(path, force)
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
    merge: bool = False,
    rename: Sequence[str] = (),
    threshold: float | None = None,
) -> ImportResult:
    """Merge a bundle from :func:`export_bundle` into ``gallery``, in one transaction.

    The whole bundle is opened (wrong passphrase or altered file: one
    GalleryError) and checked before the database is touched. A plain
    JSON bundle from an older edge-access is refused unless
    ``allow_unencrypted``: nothing vouches that it was not altered.

    A person not here is added with the bundle's fields. A bundle person
    whose name (ignoring case and accent form, :mod:`edge.identity`) is
    already here is a *collision* when the bundle would add templates to
    them: two sites' "kit" may be two humans, and merging them lets both
    in as one. A collision refuses the whole import unless ``merge`` (the
    same person: they gain the bundle's templates they lack and keep their
    local fields, so an import never re-enables someone disabled here) or
    ``rename`` names it ``"OLD=NEW"`` (or just ``"NEW"`` when only one
    name collides): then the bundle's person is added as NEW. With
    ``threshold`` (the match threshold) the faces are compared too:
    ``warnings`` says when a collision's templates do not look like the
    local person, or a new person looks like someone already here.

    A template is already present when the person has one with the same
    source_sha256 or, lacking a sha, the same embedding. Nothing is ever
    deleted by an import.

    Each template keeps the ``model_id`` of the embedder that made it (a
    bundle without one is from before model ids: MobileFaceNet), so
    templates of another model are imported but never match here until
    re-enrolled. Bundles carry no face crops.
    """
    path = Path(path)
    people, sealed = read_bundle(path, passphrase, allow_unencrypted)
    explicit, bare = _renames(path, people, rename)
    people_added = added = skipped = 0
    new_names: list[str] = []
    merged: list[str] = []
    renamed: list[str] = []
    warnings: list[str] = []
    with gallery._write("import"):
        key = gallery._sealing_key()
        plan = [_plan(gallery, person, templates, explicit) for person, templates in people]
        collisions = [e for e in plan if e.collides]
        if bare:
            if len(collisions) != 1:
                raise GalleryError(
                    f"{path}: --rename NEW needs exactly one colliding name"
                    f" ({len(collisions)} collide); use --rename OLD=NEW"
                )
            e = collisions.pop()
            target = check_name(bare)
            plan[plan.index(e)] = replace(
                e, target=target, found=identity.find(gallery.db.conn, target),
                fresh=e.templates, present=0,
            )
        new_keys: set[str] = set()
        for e in plan:
            if e.target != e.incoming and e.found is not None:
                raise GalleryError(
                    f"{path}: --rename {e.incoming}={e.target}: {e.found[1]!r} is already"
                    " a person here"
                )
            if e.found is None and identity.name_key(e.target) in new_keys:
                raise GalleryError(f"{path}: two bundle people would be named {e.target!r}")
            new_keys.add(identity.name_key(e.target))
        if collisions and not merge:
            raise GalleryError(_collision_message(gallery, path, collisions, threshold))
        for e in plan:
            skipped += e.present
            if e.found is None:
                row = e.person | {"name": e.target}
                person_id = gallery._insert("people", row)
                people_added += 1
                new_names.append(e.target)
                if e.target != e.incoming:
                    renamed.append(f"{e.incoming} -> {e.target}")
                warnings += _look_alike(gallery, path, e.incoming, person_id, e.fresh, threshold)
            else:
                person_id = e.found[0]
                if e.fresh:  # a collision the admin said to merge
                    warnings += _mismatch(gallery, path, e.incoming, e.found, e.fresh, threshold)
                    merged.append(e.found[1])
            for plain, quality, sha, created, model_id in e.fresh:
                gallery._insert_template(
                    key, person_id, plain, quality, sha, created, model_id=model_id
                )
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
            merged=merged,
            renamed=renamed,
        )
    return ImportResult(
        people_added, added, skipped, tuple(merged), tuple(renamed), tuple(warnings)
    )


@dataclass(frozen=True)
class _Incoming:
    """One bundle person on its way in: under which name, onto whom, with which templates."""

    person: dict[str, Any]  # the checked people row from the bundle
    templates: list[BundleTemplate]
    incoming: str  # the bundle's name
    target: str  # the name it goes in under (a --rename, else the bundle's)
    found: tuple[int, str] | None  # the local person of that name: (id, name)
    fresh: list[BundleTemplate]  # templates the local person lacks (all, for a new person)
    present: int  # templates the local person already has

    @property
    def collides(self) -> bool:
        """A local person of the same name would gain templates: maybe another human."""
        return self.found is not None and bool(self.fresh) and self.target == self.incoming


def _plan(
    gallery: Gallery,
    person: dict[str, Any],
    templates: list[BundleTemplate],
    explicit: dict[str, str],
) -> _Incoming:
    incoming = person["name"]
    target = explicit.get(identity.name_key(incoming), incoming)
    found = identity.find(gallery.db.conn, target)
    have: set[bytes] = set()
    if found is not None:
        mine = gallery.db.execute(
            "SELECT id, person_id, embedding FROM templates WHERE person_id = ?", [found[0]]
        ).fetchall()
        have = set(gallery._unseal(mine))
    fresh = [t for t in templates if not _present(gallery, found, have, t)]
    return _Incoming(person, templates, incoming, target, found, fresh, len(templates) - len(fresh))


def _renames(
    path: Path, people: Sequence[tuple[dict[str, Any], list[Any]]], rename: Sequence[str]
) -> tuple[dict[str, str], str | None]:
    """``--rename`` values: {name key of a bundle name: new name}, and a bare NEW (or None)."""
    in_bundle = {identity.name_key(p["name"]) for p, _ in people}
    explicit: dict[str, str] = {}
    bare = None
    for value in rename:
        if "=" in value:
            old, new = (v.strip() for v in value.split("=", 1))
            if identity.name_key(old) not in in_bundle:
                raise GalleryError(f"{path}: --rename {value}: no {old!r} in the bundle")
            explicit[identity.name_key(old)] = check_name(new)
        elif bare is None:
            bare = value
        else:
            raise GalleryError("--rename NEW may be given once; use --rename OLD=NEW for more")
    return explicit, bare


def _present(
    gallery: Gallery, found: tuple[int, str] | None, have: set[bytes], t: BundleTemplate
) -> bool:
    """Whether local person ``found`` already has bundle template ``t`` (by sha, else bytes)."""
    plain, sha = t[0], t[2]
    if found is None:
        return False
    if sha is None:
        return plain in have
    return (
        gallery.db.execute(
            "SELECT 1 FROM templates WHERE person_id = ? AND source_sha256 = ?", [found[0], sha]
        ).fetchone()
        is not None
    )


def _mismatch(
    gallery: Gallery,
    path: Path,
    name: str,
    found: tuple[int, str],
    fresh: list[BundleTemplate],
    threshold: float | None,
) -> list[str]:
    """A warning when a colliding bundle person's faces do not look like the local person.

    Each bundle template is compared with the local person's templates of its
    own model; with none of any bundle template's model there is nothing to say.
    """
    if threshold is None:
        return []
    sims = [
        identity.best_similarity(
            gallery, found[0], [t[0] for t in fresh if t[4] == model_id], model_id=model_id
        )
        for model_id in sorted({t[4] for t in fresh})
    ]
    sim = max((s for s in sims if s is not None), default=None)
    if sim is None or sim >= threshold:
        return []
    return [
        f"{path}: the bundle's {name!r} does not look like the {found[1]!r} here (best"
        f" similarity {sim:.2f}, threshold {threshold:.2f}): probably two different people"
    ]


def _look_alike(
    gallery: Gallery,
    path: Path,
    name: str,
    person_id: int,
    fresh: list[BundleTemplate],
    threshold: float | None,
) -> list[str]:
    """A warning when a person the import adds already looks like someone here.

    Each bundle template is compared with the templates here of its own model.
    """
    if threshold is None:
        return []
    found = [
        identity.look_alike(
            gallery, [t[0] for t in fresh if t[4] == model_id], threshold, person_id,
            model_id=model_id,
        )
        for model_id in sorted({t[4] for t in fresh})
    ]
    other = max((f for f in found if f is not None), key=lambda f: f.similarity, default=None)
    if other is None:
        return []
    return [
        f"{path}: the bundle's {name!r} looks like {other.name!r} here (similarity"
        f" {other.similarity:.2f}); if they are one person, import with --merge instead"
    ]


def _collision_message(
    gallery: Gallery, path: Path, collisions: list[_Incoming], threshold: float | None
) -> str:
    """One line naming every collision, whether its faces match, and the way out."""
    parts = []
    for e in collisions:
        assert e.found is not None
        mismatch = _mismatch(gallery, path, e.incoming, e.found, e.fresh, threshold)
        faces = " (its faces do NOT look like theirs)" if mismatch else ""
        parts.append(f"{e.incoming!r} is already a person here{faces}")
    return (
        f"{path}: nothing imported: {'; '.join(parts)}; give --merge if they are the same"
        " person, or --rename OLD=NEW to add the bundle's as someone new"
    )


def check_target(path: Path, force: bool) -> None:
    """Refuse to write a bundle over anything but a regular file, and over one without ``force``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise GalleryError(f"{path}: cannot write ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise GalleryError(f"{path}: is a folder; give a file name for the bundle")
    if not stat.S_ISREG(st.st_mode):
        raise GalleryError(f"{path}: not a regular file (a device, FIFO or symlink); refused")
    if not force:
        raise GalleryError(f"{path}: already exists; give --force to replace it")


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
