"""Issue 7's admin defects, each as a new site admin would meet it.

Real models, real photos from ../shared/faces, real SQLite files in tmp_path,
the ``edge`` command through click's CliRunner (see tests/test_cli.py).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from .conftest import FACES
from .test_cli import Site, edge, make_site, one_line
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


# --------------------------------------------------------------- 11: export targets

PASS = {"EDGE_BUNDLE_PASSPHRASE": "correct horse battery"}


@pytest.fixture
def enrolled(s: Site) -> Site:
    """A site with one person (the spoof set's live face) enrolled."""
    r = enroll(s, "mei", ME)
    assert r.exit_code == 0, r.output
    return s


def test_export_refuses_to_overwrite_without_force(enrolled: Site, tmp_path: Path):
    bundle = tmp_path / "out.json"
    bundle.write_text("precious")
    one_line(edge("export", bundle, *enrolled.opts(), env=PASS), 1, str(bundle), "--force")
    assert bundle.read_text() == "precious"
    r = edge("export", bundle, "--force", *enrolled.opts(), env=PASS)
    assert r.exit_code == 0, r.output
    assert bundle.read_text() != "precious" and stat.S_IMODE(bundle.stat().st_mode) == 0o600


@pytest.mark.parametrize("target", ["device", "folder", "fifo", "link"])
def test_export_refuses_what_is_not_a_regular_file(enrolled: Site, tmp_path: Path, target):
    path = tmp_path / target
    if target == "device":  # a twin of /dev/full (never the real one: old code replaced it)
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/full").st_rdev)
    elif target == "folder":
        path.mkdir()
    elif target == "fifo":
        os.mkfifo(path)
    elif target == "link":
        (tmp_path / "real.json").write_text("x")
        path.symlink_to(tmp_path / "real.json")
    before = os.lstat(path)
    for force in ((), ("--force",)):
        r = edge("export", path, *force, *enrolled.opts(), env=PASS)
        one_line(r, 1, str(path))
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_export_fails_loudly_on_a_write_error(enrolled: Site, tmp_path: Path):
    import subprocess
    import sys

    # The gallery is opened first (SQLite writes too); then files may not exceed 200 bytes.
    script = (
        "import resource, signal, sys\n"
        "from edge.bundle import export_bundle\n"
        "from edge.errors import GalleryError\n"
        "from edge.config import load_config\n"
        "from edge.gallery import open_gallery\n"
        "g = open_gallery(load_config(sys.argv[1]))\n"
        "g.people()\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    export_bundle(g, sys.argv[2], 'correct horse battery')\n"
        "except GalleryError as e:\n"
        "    sys.exit(f'edge: {e}')\n"
    )
    bundle = tmp_path / "out" / "b.json"
    bundle.parent.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", script, str(enrolled.config), str(bundle)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"edge: {bundle}: cannot write") and "Traceback" not in r.stderr
    assert list(bundle.parent.iterdir()) == []  # no bundle and no temporary file left
