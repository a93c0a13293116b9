"""People in the gallery: enrolling, removing, renaming, enabling and their details.

:class:`People` is a mixin of :class:`~edge.gallery.Gallery`: each change runs
in one of the gallery's write transactions (``_write``) and records its own
audit event in it, so a failed command leaves the file as it was. Names are
found ignoring case and accent form (:mod:`edge.identity`); rows are checked
before they reach SQL by :mod:`edge.records`; templates are sealed through
:class:`~edge.sealing.SealedTemplates`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from . import identity
from .errors import GalleryError
from .records import (
    check_name,
    check_notes,
    check_template,
    check_window,
    now_iso,
    person_row,
)
from .rules import Rule, Schedule, doors_column
from .sealing import LEGACY_MODEL_ID, SealedTemplates

#: ``(embedding, quality, source_sha256)``: one template offered to :meth:`People.enroll`.
TemplateIn = tuple[npt.ArrayLike, float | None, str | None]


@dataclass(frozen=True)
class Person:
    """One enrolled person; times are ISO-8601 UTC strings or None (no limit)."""

    id: int
    name: str
    display_name: str | None
    active: bool
    valid_from: str | None
    valid_until: str | None
    notes: str | None
    created: str
    templates: int
    #: Access rule (:mod:`edge.rules`): door names joined by commas (None = every
    #: door) and the canonical weekly schedule (None = always).
    doors: str | None = None
    schedule: str | None = None

    @property
    def rule(self) -> Rule:
        return Rule.from_columns(self.doors, self.schedule)


@dataclass(frozen=True)
class EnrollResult:
    """What an enrollment did: templates added, and ones skipped as already enrolled.

    ``replaced`` counts the added templates that took the place of another
    model's template of the same photo (a re-enrollment).
    """

    added: int
    skipped_duplicates: int
    replaced: int = 0


class _Unchanged(Exception):
    """Raised inside a write transaction to roll it back because it changed nothing."""


class _Keep:
    """The type of :data:`KEEP`: "leave this field as it is"."""


KEEP = _Keep()


def detail_changes(
    current: Any,
    display_name: str | _Keep | None,
    notes: str | _Keep | None,
    valid_from: str | datetime | _Keep | None,
    valid_until: str | datetime | _Keep | None,
) -> dict[str, Any]:
    """The checked columns an update of a person's details writes (KEEP: left out).

    Shared by the local gallery and the fleet's centre, so both refuse the same
    names, notes and windows the same way. ``current`` is the person as stored
    (anything with ``valid_from``/``valid_until``): one side of the window may
    change against the other as it is.
    """
    changes: dict[str, Any] = {}
    if not isinstance(display_name, _Keep):
        changes["display_name"] = (
            None if display_name is None else check_name(display_name, "display name"))
    if not isinstance(notes, _Keep):
        changes["notes"] = check_notes(notes)
    if not isinstance(valid_from, _Keep) or not isinstance(valid_until, _Keep):
        start, end = check_window(
            current.valid_from if isinstance(valid_from, _Keep) else valid_from,
            current.valid_until if isinstance(valid_until, _Keep) else valid_until,
        )
        changes |= {"valid_from": start, "valid_until": end}
    return changes


class People(SealedTemplates):
    """Who may enter: a mixin of :class:`~edge.gallery.Gallery` (its transactions, its key)."""

    if TYPE_CHECKING:  # provided by Gallery

        def _read(self, what: str) -> AbstractContextManager[None]: ...

    def _person_id(self, name: str) -> int:
        return self._find(name)[0]

    def _find(self, name: str) -> tuple[int, str]:
        """(id, stored name) of the person ``name`` means (:func:`edge.identity.find`)."""
        found = identity.find(self.db.conn, name)
        if found is None:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return found

    def _refuse_taken(self, name: str, except_id: int | None = None) -> None:
        other = identity.taken(self.db.conn, name, except_id)
        if other is not None:
            why = "" if other == name else f" ({other!r}: names ignore case and accent form)"
            raise GalleryError(f"{name!r}: a person of that name already exists{why}")

    def add_person(
        self,
        name: str,
        display_name: str | None = None,
        notes: str | None = None,
        valid_from: str | datetime | None = None,
        valid_until: str | datetime | None = None,
    ) -> Person:
        """Add a person with no templates yet; GalleryError if the name is taken."""
        row = person_row(name, display_name, notes, valid_from, valid_until)
        name = row["name"]
        with self._write("add person"):
            self._refuse_taken(name)
            self._insert("people", row)
            self._audit("enroll", name, templates=0)
        return self.person(name)

    def enroll(
        self,
        name: str,
        templates: Sequence[TemplateIn],
        display_name: str | None = None,
        *,
        refuse_look_alike: float | None = None,
        model_id: str = LEGACY_MODEL_ID,
        crops: Sequence[bytes | None] | None = None,
    ) -> EnrollResult:
        """Add templates to ``name``, creating the person if new; all or nothing.

        ``model_id`` names the embedder that made the templates (its file's
        sha256); ``crops``, if given, holds each template's face crop
        (:meth:`edge.crops.FaceCrop.to_bytes`, or None), sealed and kept for
        ``edge reembed``. A template whose ``source_sha256`` this person
        already has from the same model (or that repeats one earlier in
        ``templates``) is skipped, so enrolling the same photos twice changes
        nothing; one from another model is replaced (a re-enrollment).
        ``display_name``, if given, is set. Templates are checked as they are
        written; a bad one anywhere rolls the whole enrollment back, the new
        person included. ``name`` means the person whose name matches it
        ignoring case and accent form.

        With ``refuse_look_alike`` (the match threshold), a template that
        already matches someone else at that similarity is refused naming
        them: one face under two names locks the real person out through the
        match margin.
        """
        if crops is not None and len(crops) != len(templates):
            raise GalleryError(f"{name!r}: {len(crops)} crops for {len(templates)} templates")
        name = check_name(name)
        if display_name is not None:
            check_name(display_name, "display name")
        if not templates:
            raise GalleryError(f"{name!r}: nothing to enroll (no templates)")
        added = skipped = replaced = 0
        with contextlib.suppress(_Unchanged), self._write("enroll"):
            key = self._sealing_key()
            row = identity.find(self.db.conn, name)
            if row is not None:
                name = row[1]
            checked = []
            for i, t in enumerate(templates):
                try:
                    checked.append(check_template(t))
                except GalleryError as e:
                    raise GalleryError(f"{name!r}: template {i + 1}: {e}") from None
            if refuse_look_alike is not None:
                other = identity.look_alike(
                    self, [c[0] for c in checked], refuse_look_alike, row and row[0],
                    model_id=model_id,
                )
                if other is not None:
                    raise GalleryError(
                        f"{name!r}: photo {other.template + 1} is already enrolled as"
                        f" {other.name!r} (similarity {other.similarity:.2f}); add it to"
                        f" {other.name!r}, or give --force if they really are two people"
                    )
            if row is None:
                person_id = self._insert("people", person_row(name, display_name))
            else:
                person_id = row[0]
                if display_name is not None:
                    self.db.table("people").update(person_id, {"display_name": display_name})
            for i, (blob, quality, sha) in enumerate(checked):
                crop = None if crops is None else crops[i]
                same = None if sha is None else self.db.execute(
                    "SELECT id, model_id FROM templates WHERE person_id = ? AND source_sha256 = ?",
                    [person_id, sha],
                ).fetchone()
                if same is not None and same[1] == model_id:
                    skipped += 1
                    continue
                if same is not None:  # this photo, embedded by another model: re-enrolled
                    self._replace_template(key, person_id, same[0], blob, model_id, quality)
                    self.db.execute("DELETE FROM crops WHERE template_id = ?", [same[0]])
                    if crop is not None:
                        self._put_crop(key, person_id, same[0], crop)
                    replaced += 1
                else:
                    self._insert_template(
                        key, person_id, blob, quality, sha, now_iso(), model_id=model_id, crop=crop
                    )
                added += 1
            if added == 0 and row is not None and display_name is None:
                # Nothing new: undo the transaction so the file is untouched.
                raise _Unchanged
            names = {} if display_name is None else {"display_name": display_name}
            extra = names | ({"replaced": replaced} if replaced else {})
            self._audit("enroll", name, added=added, skipped=skipped, model_id=model_id, **extra)
        return EnrollResult(added, skipped, replaced)

    def remove(self, name: str) -> int:
        """Remove a person and (by cascade) their templates; returns how many templates went.

        Past events keep the name: the log is history.
        """
        with self._write("remove"):
            person_id, name = self._find(name)
            count = self.db.table("templates").count_where("person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._audit("remove", name, templates=count)
        return count

    def forget(self, name: str) -> int:
        """Erase a person on request: their templates and their row; how many templates went.

        Unlike :meth:`remove` (which revokes), this is erasure: the freed pages
        are zeroed and the WAL is checkpointed, so the rows do not linger in
        the file. A ``forget`` event keeps the name, as the log is the history
        of who came and went. Not erased here: snapshots and any other file
        outside the gallery (the caller erases those), and backups, which
        hold the person until they are pruned (``backup.keep``).
        """
        with self._write("forget"):
            person_id, name = self._find(name)
            count = self.db.table("templates").count_where("person_id = ?", [person_id])
            self.db.execute("DELETE FROM templates WHERE person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._audit("forget", name, templates=count)
        self._checkpoint()
        return count

    def rename(self, old: str, new: str) -> Person:
        """Give a person a new name (past events keep the old one)."""
        new = check_name(new)
        with self._write("rename"):
            person_id, old = self._find(old)
            self._refuse_taken(new, except_id=person_id)  # "rose" -> "Rose" is fine
            self.db.table("people").update(person_id, {"name": new})
            self._audit("rename", new, old=old, new=new)
        return self.person(new)

    def set_active(self, name: str, active: bool) -> Person:
        """Enable or disable a person; a disabled person is recognised but refused."""
        with self._write("enable" if active else "disable"):
            self.db.table("people").update(self._person_id(name), {"active": int(bool(active))})
            self._audit("enable" if active else "disable", name, active=bool(active))
        return self.person(name)

    def set_validity(
        self,
        name: str,
        valid_from: str | datetime | None,
        valid_until: str | datetime | None,
    ) -> Person:
        """Set when a person may enter (None = no limit); outside it they are refused."""
        start, end = check_window(valid_from, valid_until)
        with self._write("set validity"):
            person_id = self._person_id(name)
            self.db.table("people").update(person_id, {"valid_from": start, "valid_until": end})
            self._audit("validity", name, valid_from=start, valid_until=end)
        return self.person(name)

    def update(
        self,
        name: str,
        *,
        display_name: str | _Keep | None = KEEP,
        notes: str | _Keep | None = KEEP,
        valid_from: str | datetime | _Keep | None = KEEP,
        valid_until: str | datetime | _Keep | None = KEEP,
        doors: frozenset[str] | _Keep | None = KEEP,
        schedule: Schedule | _Keep | None = KEEP,
    ) -> Person:
        """Change a person's details in one transaction; what is not given is kept.

        None clears a field (no display name, no notes, no limit on that side
        of the validity window, every door, no schedule). ``doors`` and
        ``schedule`` are the access rule (:func:`edge.rules.parse_doors`,
        :func:`edge.rules.parse_schedule`).
        """
        current = self.person(name)
        changes: dict[str, Any] = {}
        changes |= detail_changes(current, display_name, notes, valid_from, valid_until)
        if not isinstance(doors, _Keep):
            changes["doors"] = doors_column(doors)
        if not isinstance(schedule, _Keep):
            changes["schedule"] = None if schedule is None else schedule.column()
        if not changes:
            return current
        with self._write("update"):
            self.db.table("people").update(self._person_id(name), changes)
            self._audit("update", name, **changes)
        return self.person(name)

    _PEOPLE_SQL = """
        SELECT p.*, count(t.id) AS templates
        FROM people p LEFT JOIN templates t ON t.person_id = p.id
        {where} GROUP BY p.id ORDER BY p.name
    """

    @staticmethod
    def _to_person(r: dict[str, Any]) -> Person:
        return Person(**r | {"active": bool(r["active"])})

    def person(self, name: str) -> Person:
        """One person by name (ignoring case and accent form); GalleryError if there is none."""
        with self._read("read person"):
            found = identity.find(self.db.conn, name)
            sql = self._PEOPLE_SQL.format(where="WHERE p.id = ?")
            rows = list(self.db.query(sql, [found[0]])) if found else []
        if not rows:
            raise GalleryError(f"{name!r}: no such person in the gallery")
        return self._to_person(rows[0])

    def people(self) -> list[Person]:
        """Everyone, by name, with their template counts."""
        with self._read("list people"):
            rows = list(self.db.query(self._PEOPLE_SQL.format(where="")))
        return [self._to_person(r) for r in rows]

