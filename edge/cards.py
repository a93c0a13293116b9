"""Card numbers per person, for reader outputs (Wiegand): ``edge set NAME --card FACILITY:CARD``.

A table of its own, ``cards``, beside the gallery's people (created on first
use, removed with the person by a foreign key). Reading it needs no key: a card
number is what a badge would show anyway, and the reader output looks it up on
its own worker thread with a read-only connection, never on the frame loop.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .wiegand import Card, parse_card

__all__ = ["CardLookup", "set_card"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS cards (
    person_id INTEGER PRIMARY KEY REFERENCES people(id) ON DELETE CASCADE,
    facility INTEGER NOT NULL,
    number INTEGER NOT NULL
)"""


def set_card(gallery: Any, name: str, text: str | None, bits: int) -> Card | None:
    """Give ``name`` the card ``text`` (None clears it), checked for the ``bits``-bit format.

    One audited write in the gallery's own transaction; a bad card or an
    unknown name changes nothing.
    """
    card = None if text is None else parse_card(text, bits)
    pid, stored = gallery._find(name)
    with gallery._write("set card", content=False):
        gallery.db.execute(_SCHEMA)
        if card is None:
            gallery.db.execute("DELETE FROM cards WHERE person_id = ?", [pid])
        else:
            gallery.db.execute(
                "INSERT OR REPLACE INTO cards (person_id, facility, number) VALUES (?, ?, ?)",
                [pid, card.facility, card.number],
            )
        gallery._audit("card", stored, card=None if card is None else str(card))
    return card


class CardLookup:
    """Reads a person's card from the gallery file (read-only, a fresh connection each time)."""

    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)

    def card(self, person_id: int) -> Card | None:
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0)
        except sqlite3.Error:
            return None
        try:
            row = conn.execute(
                "SELECT facility, number FROM cards WHERE person_id = ?", [person_id]
            ).fetchone()
        except sqlite3.OperationalError:  # no cards table yet: nobody has a card
            return None
        finally:
            conn.close()
        return None if row is None else Card(int(row[0]), int(row[1]))
