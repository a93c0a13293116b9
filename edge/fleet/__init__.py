"""The fleet: many doors, one gallery and one audit trail, on a PostgreSQL server.

Each door keeps its own SQLite gallery as an offline replica and decides on
its own; the central store (this package, psycopg 3) holds the people, their
templates and access rules, every door's events, the doors themselves, and a
change log. Nothing here is imported unless a fleet is configured
(``--fleet``, ``$EDGE_FLEET_URL`` or ``fleet.url``): a plain door never loads
psycopg.

Modules: :mod:`~edge.fleet.connect` (where the URL, password and TLS settings
come from; one-line errors), :mod:`~edge.fleet.schema` (versioned migrations,
the two group roles, ``edge fleet init``), :mod:`~edge.fleet.vault` (the fleet
key and sealing), :mod:`~edge.fleet.store` (reads: changes since a revision, a
person's state, templates), :mod:`~edge.fleet.admin` (the admin commands'
writes).

The change-log contract (stable; a change to it is announced in a commit
message starting ``CONTRACT:``)
------------------------------------------------------------------------------

``changes(revision bigserial PRIMARY KEY, ts, kind, person_id, name, actor)``.
A row says "person ``person_id`` changed at ``revision``"; it carries no
payload: the state itself is read from ``people`` and ``templates``. The rows
are written by triggers on ``people`` and ``templates`` (SECURITY DEFINER: no
role can write or forge the log directly), in the transaction of the change,
so a committed change always has its row and a rolled-back one never does.

* ``kind = 'person'``: the person's row (name, display name, state, validity
  window, notes, card, ``doors``, ``schedule``) and/or their set of templates
  changed, or the person is new. The door reads the person's *current* row and
  *all* their templates and replaces its own copy of that person with them
  (matched by the central ``people.id``, which never changes; a rename keeps
  it). If the row is no longer there, a later ``person_removed``/``forget``
  row follows: skip it.
* ``kind = 'person_removed'``: ``edge remove`` at the centre: the door removes
  the person and their templates (past events keep the name).
* ``kind = 'forget'``: ``edge forget`` at the centre: the door erases the
  person as a local ``edge forget`` does (rows deleted, pages zeroed, WAL
  checkpointed).

``name`` is the person's name after the change (for a removal, their last
name); ``actor`` who made it (the admin's user name, else the database role).

Revisions commit in order: every change first takes one transaction-scoped
advisory lock (:data:`~edge.fleet.schema.CHANGE_LOCK`), so a door that has
seen revision *r* committed has seen every revision below *r*: it holds "the
highest revision applied" and asks for ``revision > held``. Several rows for
one person may follow each other; applying only the last row of each person
(in revision order) is equivalent, because each is state, not delta. The
door reads the changes and the state in one REPEATABLE READ transaction
(:func:`edge.fleet.store.pull`), so both come from one snapshot.

On commit the trigger's ``NOTIFY edge_changes, '<highest revision>'`` wakes
every listening door; a door that missed it (offline) finds the rows on its
next poll.

Templates are sealed with AES-256-GCM (:mod:`edge.crypto`) under the *fleet
key*, bound to ``(person_id, template id)`` (:func:`edge.fleet.vault.aad`),
and tagged with their ``model_id`` as local templates are: a dump of the
database holds no embedding. The door unseals with its copy of the fleet key
(``fleet.key_file``, or the systemd credential ``fleet-key``) and re-seals
under its own gallery key. ``meta.key_id`` holds the fleet key's id, so a
wrong key is named, not mistaken for tampering.

Events: a door pushes each of its events with its ``door`` name and its
``local_id`` (the local ``events.id``); ``UNIQUE (door, local_id)`` with
``ON CONFLICT DO NOTHING`` makes a retried push a no-op. Admin commands at the
centre write their audit events with ``door`` NULL. A door reports its state in
its ``doors`` row (last contact, revision held, events waiting, software
version) on each sync.
"""
