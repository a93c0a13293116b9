"""Sealing and keys: real AES-GCM, real key files in tmp_path."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from edge import crypto
from edge.errors import GalleryError

AAD = b"person 1 template 1"


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_seal_round_trip_and_layout() -> None:
    key = crypto.new_key()
    blob = crypto.seal(key, b"x" * 512, AAD)
    assert len(blob) == 512 + crypto.OVERHEAD
    assert blob[0] == crypto.VERSION and blob[1:5] == crypto.key_id(key)
    assert crypto.sealed_key_id(blob) == crypto.key_id(key)
    assert crypto.open_(key, blob, AAD) == b"x" * 512
    assert crypto.seal(key, b"x" * 512, AAD) != blob  # a fresh nonce every time


@pytest.mark.parametrize("where", [0, 3, 8, 20, -1])
def test_any_altered_byte_is_refused(where: int) -> None:
    key = crypto.new_key()
    blob = bytearray(crypto.seal(key, b"secret", AAD))
    blob[where] ^= 0x01
    with pytest.raises(GalleryError, match="not a sealed value|sealed under key|altered"):
        crypto.open_(key, bytes(blob), AAD)


def test_wrong_key_wrong_row_and_plain_bytes_are_told_apart() -> None:
    key, other = crypto.new_key(), crypto.new_key()
    blob = crypto.seal(key, b"secret", AAD)
    with pytest.raises(GalleryError, match=f"sealed under key {crypto.fingerprint(key)}, not"):
        crypto.open_(other, blob, AAD)
    with pytest.raises(GalleryError, match="moved from another row"):
        crypto.open_(key, blob, b"person 2 template 1")
    with pytest.raises(GalleryError, match="not a sealed value"):
        crypto.open_(key, b"\x00" * 64, AAD)
    assert crypto.sealed_key_id(b"\x01short") is None


def test_a_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "gallery.key"
    ring = crypto.load_keyring(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == ring.current
    assert crypto.load_keyring(path).current == ring.current
    assert (ring.key_file, ring.staged, ring.source) == (path, None, str(path))
    assert ring.current.hex() not in repr(ring) and crypto.fingerprint(ring.current) in repr(ring)
    assert sorted(p.name for p in path.parent.iterdir()) == ["gallery.key"]  # no temp left


def test_a_missing_key_is_not_created_when_only_reading(tmp_path: Path) -> None:
    path = tmp_path / "gallery.key"
    with pytest.raises(GalleryError, match="gallery.key: key file not found"):
        crypto.load_keyring(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "gallery.key"
    crypto.load_keyring(path)
    path.chmod(mode)
    with pytest.raises(GalleryError) as err:
        crypto.load_keyring(path)
    assert str(err.value) == (
        f"{path}: key file is open to group or others (mode {mode:04o}); fix: chmod 600 {path}"
    )


def test_key_file_contents(tmp_path: Path) -> None:
    path = tmp_path / "gallery.key"
    key = crypto.new_key()
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    assert crypto.read_key(path) == key
    path.write_bytes(b"too short")
    with pytest.raises(GalleryError, match="not a gallery key .* got 9 bytes"):
        crypto.read_key(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(GalleryError, match="not a regular file"):
        crypto.read_key(path)


def test_the_systemd_credential_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    key = crypto.new_key()
    (creds / "gallery-key").write_bytes(key)
    (creds / "gallery-key").chmod(0o440)  # systemd's choice; the folder is private
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    key_file = tmp_path / "gallery.key"
    ring = crypto.load_keyring(key_file)
    assert ring.current == key and ring.key_file is None and "systemd credential" in ring.source
    assert not key_file.exists()
    (creds / "gallery-key").unlink()  # a credential folder without ours: the key file
    assert crypto.load_keyring(key_file).key_file == key_file


def test_staging_and_committing_a_key(tmp_path: Path) -> None:
    path = tmp_path / "gallery.key"
    old = crypto.load_keyring(path).current
    new = crypto.new_key()
    crypto.stage_key(path, new)
    assert stat.S_IMODE(crypto.staged_path(path).stat().st_mode) == 0o600
    ring = crypto.load_keyring(path)
    assert (ring.current, ring.staged) == (old, new)
    assert ring.key_for(crypto.key_id(new)) == new and ring.key_for(b"\0\0\0\0") is None
    crypto.commit_staged_key(path, new)
    crypto.commit_staged_key(path, new)  # a second finisher is fine
    assert crypto.read_key(path) == new and not crypto.staged_path(path).exists()
    with pytest.raises(GalleryError, match="vanished"):
        crypto.commit_staged_key(path, old)
    crypto.stage_key(path, old)
    crypto.discard_staged_key(path)
    crypto.discard_staged_key(path)
    assert crypto.load_keyring(path).staged is None


# ------------------------------------------------------------------ bundles


def test_bundle_round_trip_and_envelope() -> None:
    data = crypto.seal_bundle(b'{"people": []}', "a long passphrase")
    envelope = json.loads(data)
    assert envelope["format"] == "edge-gallery-sealed" and envelope["kdf"]["name"] == "scrypt"
    assert b"people" not in data
    assert crypto.open_bundle(envelope, "a long passphrase") == b'{"people": []}'
    with pytest.raises(GalleryError, match="wrong passphrase"):
        crypto.open_bundle(envelope, "another passphrase")
    with pytest.raises(GalleryError, match="a passphrase is needed"):
        crypto.open_bundle(envelope, "")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("salt", base64.b64encode(os.urandom(16)).decode(), "wrong passphrase"),
        ("kdf", {"name": "scrypt", "n": 2**20, "r": 8, "p": 1}, "beyond the limits"),
        ("kdf", {"name": "scrypt", "n": 1000, "r": 8, "p": 1}, "beyond the limits"),
        ("kdf", {"name": "pbkdf2"}, "not a well-formed"),
        ("nonce", "!!", "not a well-formed"),
        ("version", 9, "version 9 is not supported"),
    ],
    # Fixed ids: the random salt in an id would differ between pytest-xdist
    # workers, which then refuse to run (each collects its own test names).
    ids=["salt", "kdf-n-too-big", "kdf-n-too-small", "kdf-pbkdf2", "nonce", "version"],
)
def test_a_doctored_envelope_is_refused(field: str, value: object, message: str) -> None:
    envelope = json.loads(crypto.seal_bundle(b"{}", "a long passphrase"))
    envelope[field] = value
    with pytest.raises(GalleryError, match=message):
        crypto.open_bundle(envelope, "a long passphrase")


def test_short_passphrases_are_refused() -> None:
    with pytest.raises(GalleryError, match="at least 8"):
        crypto.seal_bundle(b"{}", "1234567")
