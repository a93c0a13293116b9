"""Shared fixtures: the real models, the real photos in ../shared/faces, real SQLite files."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.config import Config, load_config
from edge.models import PROJECT_ROOT

ROOT = PROJECT_ROOT
FACES = Path(os.environ.get("EDGE_FACES", ROOT.parent / "shared" / "faces"))
PEOPLE = FACES / "people"
MODELS = ROOT / "models"


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (its last answer)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def photos_of(person: str) -> list[Path]:
    return sorted((PEOPLE / person).iterdir())


def all_people_photos() -> list[tuple[str, Path]]:
    return [(d.name, p) for d in sorted(PEOPLE.iterdir()) for p in sorted(d.iterdir())]


@pytest.fixture(scope="session", autouse=True)
def _repo_stays_clean():
    """No test may write the project's own data/ folder (gallery, key, backups)."""
    before = (ROOT / "data").exists()
    yield
    if not before:
        assert not (ROOT / "data").exists(), "a test wrote into the project's data/ folder"


@pytest.fixture(autouse=True)
def _no_default_gallery(tmp_path_factory, monkeypatch):
    """No test may touch the project's own data/ folder: default the gallery to a tmp file."""
    monkeypatch.setenv("EDGE_DB", str(tmp_path_factory.mktemp("default") / "gallery.db"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    assert PEOPLE.is_dir(), f"the shared test photos are missing: {FACES}"
    return FACES


@pytest.fixture(scope="session")
def cfg(tmp_path_factory) -> Config:
    """The project's default config.yaml, as the daemon and CLI read it, except
    that what it would write (gallery, key, backups, status) lands in a tmp folder."""
    project = load_config(ROOT / "config.yaml")
    return project.model_copy(update={
        "base_dir": tmp_path_factory.mktemp("site"),
        "models": project.models.model_copy(update={"dir": MODELS}),
    })


@pytest.fixture(scope="session")
def engine(cfg: Config):
    from edge.engine import Engine

    return Engine(cfg)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder: config.yaml (models from the project) and a fresh gallery path."""
    text = (ROOT / "config.yaml").read_text()
    text = text.replace("  dir: models ", f"  dir: {MODELS} ")
    text = text.replace("  db: data/gallery.db", f"  db: {tmp_path / 'gallery.db'}")
    # The key beside the database, where a Gallery given no key looks for it.
    text = text.replace("  key_file: data/gallery.key", f"  key_file: {tmp_path / 'gallery.key'}")
    status = tmp_path / "status.json"
    text = text.replace("  status_file: data/status.json", f"  status_file: {status}")
    (tmp_path / "config.yaml").write_text(text)
    return tmp_path


@pytest.fixture
def photo_copy(tmp_path: Path):
    """Copy a shared photo into tmp_path (tests never write into ../shared)."""

    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copyfile(src, dst)
        return dst

    return copy


@pytest.fixture
def notify_socket(tmp_path: Path):
    """A real systemd notify socket (unix datagram) in tmp_path: (socket, path)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, path
    sock.close()


@pytest.fixture
def broker(tmp_path: Path):
    """A real mosquitto broker (:class:`tests.helpers.Broker`), stopped after the test."""
    from .helpers import Broker

    b = Broker(tmp_path / "broker")
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL cluster of this worker's own (tests/pg.py), stopped and removed after.

    Session-scoped: under pytest-xdist each worker process starts its own.
    Tests that stop it (the offline tests) must start it again before they end.
    """
    from tests.pg import PgServer

    server = PgServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_db(pg_server) -> str:
    """The name of a fresh, empty database in :func:`pg_server`, for one test."""
    if not pg_server.running():  # a test that stopped it and failed before restarting
        pg_server.start()
    return pg_server.new_database()
