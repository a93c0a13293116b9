"""A fleet for the tests: a real PostgreSQL database (tests/pg.py), its schema, door roles,
and door sites whose config points at it.

Centre-side writes here are plain SQL as the database's superuser, through the
real triggers (so the change log, its order and NOTIFY are PostgreSQL's own):
what the admin commands write, without their CLI.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from edge import crypto
from edge.config import Config, load_config
from edge.fleet import schema, vault
from edge.records import pack_embedding

from .conftest import MODELS, ROOT


@dataclass
class Centre:
    """One fleet database: its server, name, fleet key, and an admin connection."""

    server: Any
    db: str
    key: bytes
    key_file: Path

    def url(self, user: str) -> str:
        return self.server.url(self.db, user=user)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.url(self.db), autocommit=True)

    def sql(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.admin() as c:
            cur = c.execute(query, args)
            return cur.fetchall() if cur.description else []

    def enroll(
        self,
        name: str,
        embeddings: Any,
        *,
        model_id: str = "test-model",
        doors: list[str] | None = None,
        schedule: str | None = None,
    ) -> int:
        """Add a person and their templates at the centre in one transaction; their id."""
        with self.admin() as c, c.transaction():
            c.execute("SELECT edge_begin_change()")
            row = c.execute(
                "INSERT INTO people (name, name_key, doors, schedule) VALUES (%s, %s, %s, %s)"
                " RETURNING id", [name, name.casefold(), doors, schedule]).fetchone()
            assert row is not None
            pid = int(row[0])
            add_templates(c, self.key, pid, embeddings, model_id)
        return pid


def add_templates(c: psycopg.Connection[Any], key: bytes, pid: int, embeddings: Any,
                  model_id: str) -> None:
    rows = []
    for e in np.atleast_2d(np.asarray(embeddings, dtype=np.float32)):
        plain = pack_embedding(e)
        row = c.execute("SELECT nextval(pg_get_serial_sequence('templates', 'id'))").fetchone()
        assert row is not None
        tid = int(row[0])
        rows.append((tid, pid, vault.seal(key, pid, tid, plain), 0.9,
                     hashlib.sha256(plain).hexdigest(), model_id))
    with c.cursor() as cur:
        cur.executemany(
            "INSERT INTO templates (id, person_id, embedding, quality, source_sha256, model_id)"
            " VALUES (%s, %s, %s, %s, %s, %s)", rows)


def make_centre(server: Any, db: str, folder: Path, doors: tuple[str, ...] = ("front",)) -> Centre:
    """The schema in ``db``, a fleet key in ``folder``, a login role per door."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "fleet.key"
    crypto._create_key_file(key_file)
    key = crypto.read_key(key_file)
    with psycopg.connect(server.url(db), autocommit=True) as c:
        schema.init(c)
        vault.record_key(c, key, str(key_file))
    roles = " ".join(
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{d}') THEN"
        f" CREATE ROLE \"{d}\" LOGIN IN ROLE {schema.DOOR_ROLE}; END IF;" for d in doors)
    server.psql(f"DO $$BEGIN {roles} END$$")
    return Centre(server, db, key, key_file)


def door_site(folder: Path, centre: Centre, door: str, **extra: str) -> Path:
    """A door's site folder: config.yaml naming the fleet and the door, the fleet key copied."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {MODELS} ")
    text = text.replace("  db: data/gallery.db", f"  db: {folder / 'gallery.db'}")
    text = text.replace("  key_file: data/gallery.key", f"  key_file: {folder / 'gallery.key'}")
    text = text.replace("  status_file: data/status.json",
                        f"  status_file: {folder / 'status.json'}")
    text = text.replace("  name: null ", f"  name: {door} ", 1)
    text = text.replace("  url: null ", f"  url: \"{centre.url(door)}\" ", 1)
    text = text.replace("  key_file: data/fleet.key", f"  key_file: {folder / 'fleet.key'}")
    for k, v in extra.items():
        pattern = re.compile(rf"^(\s+{k}:) [^\n#]*", re.M)
        assert len(pattern.findall(text)) == 1, k
        text = pattern.sub(rf"\1 {v} ", text)
    (folder / "config.yaml").write_text(text)
    shutil.copyfile(centre.key_file, folder / "fleet.key")
    (folder / "fleet.key").chmod(0o600)
    return folder


def admin_site(folder: Path, centre: Centre) -> Path:
    """The admin's site: config.yaml with the project's models and the fleet key (no fleet.url:
    each command names the fleet with --fleet)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {MODELS} ")
    text = text.replace("  db: data/gallery.db", f"  db: {folder / 'admin-gallery.db'}")
    text = text.replace("  key_file: data/fleet.key", f"  key_file: {centre.key_file}")
    (folder / "config.yaml").write_text(text)
    return folder


def site_config(folder: Path) -> Config:
    return load_config(folder / "config.yaml")


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
