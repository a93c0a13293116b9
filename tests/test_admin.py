"""Issue 7's admin defects, each as a new site admin would meet it.

Real models, real photos from ../shared/faces, real SQLite files in tmp_path,
the ``edge`` command through click's CliRunner (see tests/test_cli.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from .conftest import FACES, PEOPLE
from .test_cli import Site, edge, make_site, one_line, state
from .test_daemon import config, enroll_photos, folder_of, run_daemon

ME = FACES / "spoof/image_T1.jpg"


@pytest.fixture
def s(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def enroll(site: Site, name: str, *photos: Path, extra: tuple[str, ...] = ()):
    return edge("enroll", name, *photos, *extra, *site.opts())


def names(site: Site, db: Path | None = None) -> list[str]:
    r = edge("list", "--json", *site.opts(db))
    assert r.exit_code == 0, r.output
    return [p["name"] for p in json.loads(r.stdout)]


# --------------------------------------------------------------- 13: status file


def test_status_file_is_private(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"})
    enroll_photos(cfg, "her", ME, engine=engine)
    old = os.umask(0o022)
    try:
        run_daemon(cfg, folder_of(tmp_path, "f", ME, 3), tmp_path)
    finally:
        os.umask(old)
    status = cfg.path(cfg.daemon.status_file)
    assert "her" in status.read_text()
    assert stat.S_IMODE(status.stat().st_mode) == 0o600
