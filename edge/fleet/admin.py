"""The admin commands at the centre: enroll, remove, forget, rename, enable/disable, set.

The same rules as the local gallery (:mod:`edge.gallery`): names checked by
:mod:`edge.records` and compared by :func:`edge.identity.name_key` (a unique
index at the centre backs it), templates checked and packed the same way, an
enrollment all or nothing, a face already enrolled under another name refused,
nothing written when nothing changes. Each change is one transaction that
takes the change lock first (:data:`edge.fleet.schema.CHANGE_LOCK`), records
the admin as ``edge.actor`` (the triggers put it on the change-log rows) and
writes its audit event (``door`` NULL) in the same transaction, so a failed
command leaves the centre as it was and a done one is logged for every door.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from ..errors import EdgeError, GalleryError
from ..identity import name_key
from ..match import DIM
from ..people import KEEP, EnrollResult, _Keep, detail_changes
from ..records import check_name, check_template
from . import store, vault
from .connect import FleetError, FleetSettings, connect, describe

if TYPE_CHECKING:
    from ..enroll import Template
    from .schema import InitResult

_DOOR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Unchanged(Exception):
    """Raised inside a change to roll it back because it changed nothing."""


def _scalar(c: psycopg.Connection[Any], sql: str, args: Sequence[Any] = ()) -> int:
    """The one integer a query returns."""
    row = c.execute(sql, args).fetchone()
    if row is None:
        raise FleetError(f"fleet: no answer to {sql.split()[0]}")
    return int(row[0])


def _why(e: psycopg.Error, what: str, user: str) -> FleetError:
    """A database error during a change as one line; a permission error names the fix."""
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return FleetError(
            f"fleet: {what}: permission denied for role {user} (admins connect as a member"
            " of edge_admin)")
    return describe(e, what)


class FleetAdmin:
    """An admin's session with the centre. A context manager; ``actor`` is on every change.

    ``key`` is called when the fleet key is first needed (an enrollment, an
    import or export), so a command that needs no key never reads it.
    """

    def __init__(
        self, settings: FleetSettings, actor: str, key: Callable[[], bytes] | None = None
    ) -> None:
        self.settings = settings
        self.actor = actor
        self._key_source = key
        self._key: bytes | None = None
        self.conn = connect(settings, application="edge admin")
        self.user = str(self.conn.info.user)
        from .schema import current_version

        if current_version(self.conn) == 0:
            self.conn.close()
            raise FleetError(f"fleet {settings.where}: no fleet schema there; run edge fleet init")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> FleetAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- plumbing

    def key(self) -> bytes:
        """The fleet key, checked against the centre's ``meta.key_id``."""
        if self._key is None:
            if self._key_source is None:
                raise FleetError("this command needs the fleet key (fleet.key_file)")
            key = self._key_source()
            vault.check_key(self.conn, key, "fleet.key_file")
            self._key = key
        return self._key

    @contextmanager
    def _change(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One change: a transaction, the change lock, the actor; errors as one line."""
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT set_config('edge.actor', %s, true)", [self.actor])
                self.conn.execute("SELECT edge_begin_change()")
                yield self.conn
        except _Unchanged:
            pass
        except psycopg.Error as e:
            raise _why(e, what, self.user) from None

    def _audit(self, kind: str, name: str | None, **detail: Any) -> None:
        self.conn.execute(
            "INSERT INTO events (ts, kind, name, actor, detail) VALUES (now(), %s, %s, %s, %s)",
            [kind, name, self.actor, Jsonb(detail) if detail else None])

    def _lookup(self, name: str) -> tuple[int, str] | None:
        row = self.conn.execute("SELECT id, name FROM people WHERE name_key = %s",
                                [name_key(name)]).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _find(self, name: str) -> tuple[int, str]:
        found = self._lookup(name)
        if found is None:
            raise GalleryError(f"{name!r}: no such person in the fleet")
        return found

    def _refuse_taken(self, name: str, except_id: int | None = None) -> None:
        found = self._lookup(name)
        if found is not None and found[0] != except_id:
            raise GalleryError(f"{name!r}: already enrolled as {found[1]!r}")

    def _look_alike(
        self, blobs: Sequence[bytes], threshold: float, except_id: int | None, model_id: str
    ) -> tuple[str, float, int] | None:
        """(name, similarity, index of the new template) of someone else the new
        templates already match at ``threshold``, if any. Only templates of
        ``model_id`` are compared (as :func:`edge.identity.look_alike`): a
        similarity between two models' embeddings means nothing."""
        rows = self.conn.execute(
            "SELECT t.id, t.person_id, t.embedding, p.name FROM templates t"
            " JOIN people p ON p.id = t.person_id"
            " WHERE t.person_id IS DISTINCT FROM %s AND t.model_id = %s",
            [except_id, model_id]).fetchall()
        if not rows or not blobs:
            return None
        key = self.key()
        theirs = np.frombuffer(
            b"".join(vault.open_(key, int(pid), int(tid), bytes(b)) for tid, pid, b, _ in rows),
            dtype="<f4").reshape(-1, DIM)
        mine = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, DIM)
        sims = mine.astype(np.float32) @ theirs.astype(np.float32).T
        t, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        best = float(sims[t, j])
        return (str(rows[j][3]), best, int(t)) if best >= threshold else None

    # ------------------------------------------------------------- people

    def enroll(
        self,
        name: str,
        templates: Sequence[Template],
        display_name: str | None = None,
        *,
        refuse_look_alike: float | None = None,
    ) -> EnrollResult:
        """Add ``templates`` to ``name`` at the centre, creating them if new; all or nothing.

        As :meth:`edge.gallery.Gallery.enroll`: a photo this person already has
        from the same embedder is skipped, one from another embedder is
        replaced in place, a face already enrolled as someone else is refused.
        """
        models = {t.model_id for t in templates}
        if len(models) > 1:
            raise GalleryError(f"{name!r}: templates of {len(models)} embedders in one enrollment")
        if not templates:
            raise GalleryError(f"{name!r}: nothing to enroll (no templates)")
        model_id = models.pop()
        name = check_name(name)
        if display_name is not None:
            check_name(display_name, "display name")
        checked = []
        for i, t in enumerate(templates):
            try:
                checked.append(check_template((t.embedding, t.quality, t.source_sha256)))
            except GalleryError as e:
                raise GalleryError(f"{name!r}: template {i + 1}: {e}") from None
        key = self.key()
        added = skipped = replaced = 0
        with self._change("enroll") as c:
            row = self._lookup(name)
            if row is not None:
                name = row[1]
            if refuse_look_alike is not None:
                other = self._look_alike([b for b, _, _ in checked], refuse_look_alike,
                                         row and row[0], model_id)
                if other is not None:
                    who, sim, i = other
                    raise GalleryError(
                        f"{name!r}: photo {i + 1} is already enrolled as {who!r} (similarity"
                        f" {sim:.2f}); add it to {who!r}, or give --force if they really are"
                        " two people")
            if row is None:
                pid = _scalar(c, "INSERT INTO people (name, name_key, display_name)"
                              " VALUES (%s, %s, %s) RETURNING id",
                              [name, name_key(name), display_name])
            else:
                pid = row[0]
                if display_name is not None:
                    c.execute("UPDATE people SET display_name = %s WHERE id = %s",
                              [display_name, pid])
            for blob, quality, sha in checked:
                same = None if sha is None else c.execute(
                    "SELECT id, model_id FROM templates WHERE person_id = %s"
                    " AND source_sha256 = %s", [pid, sha]).fetchone()
                if same is not None and same[1] == model_id:
                    skipped += 1
                    continue
                if same is not None:  # this photo, embedded by another model: re-enrolled
                    c.execute(
                        "UPDATE templates SET embedding = %s, model_id = %s,"
                        " quality = coalesce(%s, quality) WHERE id = %s",
                        [vault.seal(key, pid, int(same[0]), blob), model_id, quality, same[0]])
                    replaced += 1
                else:
                    tid = _scalar(c, "SELECT nextval(pg_get_serial_sequence('templates', 'id'))")
                    c.execute(
                        "INSERT INTO templates (id, person_id, embedding, quality,"
                        " source_sha256, model_id) VALUES (%s, %s, %s, %s, %s, %s)",
                        [tid, pid, vault.seal(key, pid, tid, blob), quality, sha, model_id])
                added += 1
            if added == 0 and row is not None and display_name is None:
                raise _Unchanged
            names = {} if display_name is None else {"display_name": display_name}
            extra = names | ({"replaced": replaced} if replaced else {})
            self._audit("enroll", name, added=added, skipped=skipped, model_id=model_id, **extra)
        return EnrollResult(added, skipped, replaced)

    def _delete(self, name: str, *, forget: bool) -> int:
        kind = "forget" if forget else "remove"
        count = 0
        with self._change(kind) as c:
            pid, name = self._find(name)
            count = _scalar(c, "SELECT count(*) FROM templates WHERE person_id = %s", [pid])
            if forget:
                c.execute("SELECT set_config('edge.forget', 'on', true)")
            c.execute("DELETE FROM people WHERE id = %s", [pid])
            self._audit(kind, name, templates=count)
        return count

    def remove(self, name: str) -> int:
        """Remove a person and their templates at the centre (every door follows);
        how many templates went. Past events keep the name."""
        return self._delete(name, forget=False)

    def forget(self, name: str) -> int:
        """Erase a person at the centre; every door erases them as ``edge forget`` does.

        The centre's rows are deleted in the transaction; PostgreSQL reclaims
        their space at its next (auto)vacuum, and the templates were sealed."""
        return self._delete(name, forget=True)

    def rename(self, old: str, new: str) -> store.FleetPerson:
        """Give a person a new name (past events keep the old one)."""
        new = check_name(new)
        with self._change("rename") as c:
            pid, old = self._find(old)
            self._refuse_taken(new, except_id=pid)
            c.execute("UPDATE people SET name = %s, name_key = %s WHERE id = %s",
                      [new, name_key(new), pid])
            self._audit("rename", new, old=old, new=new)
        return self.person(new)

    def set_active(self, name: str, active: bool) -> store.FleetPerson:
        """Enable or disable a person at every door."""
        kind = "enable" if active else "disable"
        with self._change(kind) as c:
            pid, name = self._find(name)
            c.execute("UPDATE people SET active = %s WHERE id = %s", [active, pid])
            self._audit(kind, name, active=active)
        return self.person(name)

    def update(
        self,
        name: str,
        *,
        display_name: str | _Keep | None = KEEP,
        notes: str | _Keep | None = KEEP,
        valid_from: str | datetime | _Keep | None = KEEP,
        valid_until: str | datetime | _Keep | None = KEEP,
        card: str | _Keep | None = KEEP,
        card_bits: int = 26,
        doors: str | _Keep | None = KEEP,
        schedule: str | _Keep | None = KEEP,
    ) -> store.FleetPerson:
        """Change a person's details in one transaction; what is not given is kept,
        None clears it. ``doors`` is a comma list of door names (None: every door);
        ``schedule`` is kept as typed once :func:`edge.rules.parse_schedule` accepts it."""
        current = self.person(name)
        changes: dict[str, Any] = {}
        changes |= detail_changes(current, display_name, notes, valid_from, valid_until)
        if not isinstance(card, _Keep):
            from ..wiegand import parse_card

            got = None if card is None else parse_card(card, card_bits)
            changes |= {"card_facility": None if got is None else got.facility,
                        "card_number": None if got is None else got.number}
        if not isinstance(doors, _Keep):
            changes["doors"] = None if doors is None else list(check_doors(doors))
        if not isinstance(schedule, _Keep):
            changes["schedule"] = None if schedule is None else check_schedule(schedule)
        if not changes:
            return current
        with self._change("update") as c:
            pid, name = self._find(name)
            sets = ", ".join(f"{k} = %s" for k in changes)
            c.execute(f"UPDATE people SET {sets} WHERE id = %s", [*changes.values(), pid])
            shown = {k: v for k, v in changes.items() if not k.startswith("card_")}
            if "card_facility" in changes:
                shown["card"] = (None if changes["card_facility"] is None
                                 else f"{changes['card_facility']}:{changes['card_number']}")
            self._audit("update", name, **shown)
        return self.person(name)

    # ------------------------------------------------------------- reads

    def person(self, name: str) -> store.FleetPerson:
        """One person by name (ignoring case and accent form)."""
        found = self._lookup(name)
        people = store.people(self.conn, [found[0]]) if found else []
        if not people:
            raise GalleryError(f"{name!r}: no such person in the fleet")
        return people[0]

    def people(self) -> list[store.FleetPerson]:
        """Everyone at the centre, by name."""
        return store.people(self.conn)

    def needs_reenrollment(self, model_id: str) -> list[str]:
        """The names of people with no template of ``model_id`` (they will not match)."""
        try:
            rows = self.conn.execute(
                "SELECT p.name FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t"
                " WHERE t.person_id = p.id AND t.model_id = %s) ORDER BY p.name_key",
                [model_id]).fetchall()
        except psycopg.Error as e:
            raise describe(e, "read templates") from None
        return [str(r[0]) for r in rows]


def check_doors(text: str) -> tuple[str, ...]:
    """A comma list of door names, each as ``door.name`` allows; RuleError-like one line."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise GalleryError("--doors: give door names (front,lab) or 'all'")
    for n in names:
        if not _DOOR.fullmatch(n):
            raise GalleryError(f"--doors: {n!r} is not a door name (letters, digits, - and _)")
    return tuple(dict.fromkeys(names))


def check_schedule(text: str) -> str:
    """``text`` as typed, once the door's own parser accepts it (edge.rules)."""
    from ..rules import parse_schedule

    try:
        parse_schedule(text)
    except EdgeError as e:
        raise GalleryError(f"--schedule: {e}") from None
    return text


def init_fleet(
    settings: FleetSettings, key_file: Callable[[], bytes]
) -> tuple[InitResult, str]:
    """``edge fleet init``: create or migrate the schema, then record (first time) or check
    the fleet key, all before anything is committed; (what init did, the key's id)."""
    from .schema import init

    conn = connect(settings, autocommit=True, application="edge fleet init")
    try:
        key = key_file()
        try:
            with conn.transaction():
                result = init(conn)
                vault.record_key(conn, key, "fleet.key_file")
        except psycopg.Error as e:
            raise _why(e, "init", str(conn.info.user)) from None
    finally:
        conn.close()
    return result, vault.key_id(key)
