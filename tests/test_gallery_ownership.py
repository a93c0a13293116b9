"""A gallery's key is its own, and a gallery is made only when asked (issue 7, item 3).

Two galleries beside one config start out sealed under its one key file:
rotating one must leave the other readable, and keep every key that a
backup on disk still needs. An admin command pointed at a gallery that
does not exist refuses in one line and creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.config import load_config
from edge.gallery import Gallery, open_gallery
from edge.keys import own_key_file, retired_key_files

RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None, "SUDO_USER": None})


def edge(site: Path, db: Path, *args: object) -> tuple[int, str, str]:
    r = RUNNER.invoke(main, [*map(str, args), "--config", str(site / "config.yaml"),
                             "--db", str(db)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def enroll(site: Path, db: Path, name: str, seed: int) -> None:
    """Enroll ``name`` with one random template, through the config's key, as the CLI would."""
    e = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    sha = hashlib.sha256(f"{name}{seed}".encode()).hexdigest()
    with open_gallery(load_config(site / "config.yaml"), db) as g:
        g.enroll(name, [(e / np.linalg.norm(e), 0.9, sha)])


def readable(site: Path, db: Path) -> int:
    """How many templates of ``db`` open under the keys its config leads to."""
    with open_gallery(load_config(site / "config.yaml"), db, create=False) as g:
        return len(g.templates().ids)


def test_rotating_one_gallery_strands_no_other_and_no_backup(site: Path):
    a, b = site / "a.db", site / "b.db"
    enroll(site, a, "ann", 1)
    enroll(site, b, "bob", 2)
    shared = site / "gallery.key"
    before = shared.read_bytes()
    code, out, err = edge(site, b, "backup", "--json")
    assert code == 0, err
    first_backup = Path(json.loads(out)["file"])

    time.sleep(1.1)  # backups are named by the second: one of its own
    code, out, err = edge(site, b, "key", "rotate", "--json")
    assert code == 0, err
    assert shared.read_bytes() == before  # a's key, untouched
    assert own_key_file(b).exists() and own_key_file(b).stat().st_mode & 0o777 == 0o600
    assert readable(site, a) == 1 and readable(site, b) == 1
    with Gallery(a, key=before) as g:  # a is still sealed under the shared key
        assert len(g.templates().ids) == 1

    # A second rotation replaces b's own key; the replaced one is kept for its backup.
    second_backup = Path(json.loads(out)["backup"])
    time.sleep(1.1)
    code, out, err = edge(site, b, "key", "rotate", "--json")
    assert code == 0, err
    third_backup = Path(json.loads(out)["backup"])  # sealed under the key the last rotation retires
    assert len(retired_key_files(b)) == 1
    assert readable(site, a) == 1 and readable(site, b) == 1
    # Every backup on disk still restores, whichever key it is sealed under.
    for backup in (first_backup, second_backup):
        code, out, err = edge(site, b, "restore", backup)
        assert code == 0, err
        assert readable(site, b) == 1
    assert readable(site, a) == 1

    # Once no backup (nor a gallery a restore set aside) is sealed under a
    # retired key, pruning removes it.
    for backup in (first_backup, second_backup, third_backup):
        backup.unlink()
    for aside in site.glob("b.db.replaced-*"):
        aside.unlink()
    code, out, err = edge(site, b, "key", "rotate", "--json")
    assert code == 0, err
    last_backup = Path(json.loads(out)["backup"])
    listed = json.loads(edge(site, b, "backup", "--list", "--json")[1])
    assert [Path(x).name for x in listed] == [last_backup.name]
    assert retired_key_files(b) == []
    assert readable(site, a) == 1 and readable(site, b) == 1


@pytest.mark.parametrize(
    "args",
    [["list"], ["events"], ["remove", "x"], ["disable", "x"], ["rename", "x", "y"],
     ["forget", "x"], ["key", "rotate"], ["backup"], ["export", "out.bundle"]],
    ids=" ".join,
)
def test_an_admin_command_refuses_a_gallery_that_does_not_exist(
    site: Path, tmp_path: Path, args: list[str], monkeypatch
):
    monkeypatch.setenv("EDGE_BUNDLE_PASSPHRASE", "correct horse 77")
    missing = tmp_path / "nowhere" / "gallery.db"
    code, out, err = edge(site, missing, *args)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and str(missing) in err and "no gallery" in err
    assert not missing.parent.exists()


def test_create_makes_an_empty_gallery_on_request(site: Path, tmp_path: Path):
    new = tmp_path / "new" / "gallery.db"
    code, out, _ = edge(site, new, "list", "--create")
    assert (code, out) == (0, "nobody enrolled\n")
    assert new.stat().st_mode & 0o777 == 0o600
