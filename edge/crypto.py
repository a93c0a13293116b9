"""Sealing at rest: face templates under AES-256-GCM, bundles under a passphrase.

Why: the gallery file and its backups hold face templates, which are
biometric data. Sealed under a key kept apart from the file, a copied
gallery is names and noise.

A sealed value (a "blob") is::

    version (1 byte, = 1) || key id (4 bytes) || nonce (12 random bytes) || ciphertext || tag (16)

The key id is the first 4 bytes of SHA-256("edge-access key id" || key). It
says which key sealed a blob, so a wrong key is told apart from tampering and
a key rotation can be finished after a crash. The header is authenticated
with the caller's AAD, which binds a blob to where it belongs (the gallery
uses the person and template ids, so blobs cannot be swapped between people).

The key is 32 random bytes, from the systemd credential ``gallery-key``
(``LoadCredential=``, found through ``$CREDENTIALS_DIRECTORY``) when there is
one, else from the key file, which is created on first use with mode 0600.
A key file that group or others may read is refused. A key file holds the
32 raw bytes or 64 hex digits (a credential set from text).

Rotation (see :meth:`edge.gallery.Gallery.rotate_key`) writes the new key
beside the key file as ``<key file>.new``, re-seals in one transaction, then
renames it over the key file. A :class:`Keyring` loaded in between holds both
keys, and whoever sees the gallery sealed under the staged key finishes the
rename, so no crash can leave templates without their key.

Bundles (``edge export``) are sealed under a key derived from a passphrase
with scrypt, not under the gallery key: a bundle exists to move people
between sites, and each site has its own gallery key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import glob
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import GalleryError
from .files import fsync_dir, write_temp

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 4
VERSION = 1
HEADER_BYTES = 1 + KEY_ID_BYTES
#: Bytes a sealed blob adds to its plaintext.
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
#: The systemd credential name that holds the key (``LoadCredential=gallery-key:...``).
CREDENTIAL = "gallery-key"

SEALED_BUNDLE_FORMAT = "edge-gallery-sealed"
SEALED_BUNDLE_VERSION = 1
#: scrypt cost for new bundles: 32 MiB and well under a second on a Pi 4.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
#: The most an imported bundle may ask of scrypt (128 MiB), so a crafted
#: bundle cannot exhaust memory.
SCRYPT_MAX_N = 2**17
MIN_PASSPHRASE = 8


# --------------------------------------------------------------------------- blobs


def new_key() -> bytes:
    """32 bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


@functools.lru_cache(maxsize=8)
def key_id(key: bytes) -> bytes:
    """The 4-byte id written into every blob sealed under ``key`` (not secret)."""
    return hashlib.sha256(b"edge-access key id\x00" + key).digest()[:KEY_ID_BYTES]


def fingerprint(key: bytes) -> str:
    """``key``'s id as 8 hex digits, for logs, events and error messages."""
    return key_id(key).hex()


def sealed_key_id(blob: bytes) -> bytes | None:
    """The id of the key that sealed ``blob``, or None if it is not a sealed blob."""
    if len(blob) < OVERHEAD or blob[0] != VERSION:
        return None
    return bytes(blob[1:HEADER_BYTES])


@functools.lru_cache(maxsize=4)
def _cipher(key: bytes) -> tuple[AESGCM, bytes]:
    """An AES-GCM context and blob header for ``key``, built once: a gallery opens
    every template on each reload, and this makes that 3x faster."""
    return AESGCM(key), bytes([VERSION]) + key_id(key)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under ``key``, bound to ``aad``."""
    cipher, header = _cipher(key)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + cipher.encrypt(nonce, plaintext, header + aad)


def open_(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of a blob from :func:`seal`; GalleryError if it is not exactly that.

    The message says which: not a sealed blob, sealed under another key, or
    altered (or moved to another row: the AAD differs).
    """
    kid = sealed_key_id(blob)
    if kid is None:
        raise GalleryError("not a sealed value")
    cipher, header = _cipher(key)
    if kid != header[1:]:
        raise GalleryError(f"sealed under key {kid.hex()}, not {fingerprint(key)}")
    nonce = blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    try:
        return cipher.decrypt(nonce, blob[HEADER_BYTES + NONCE_BYTES :], header + aad)
    except InvalidTag:
        raise GalleryError("authentication failed: altered, or moved from another row") from None


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, repr=False)
class Keyring:
    """The gallery key, where it came from, and a staged key of an unfinished rotation.

    ``current`` seals; ``current`` and ``staged`` open. ``key_file`` is the
    writable key file it was read from (None for a systemd credential or a key
    handed in), which a rotation replaces. ``repr`` never shows key bytes.
    """

    current: bytes
    source: str
    key_file: Path | None = None
    staged: bytes | None = None
    #: Keys that only open: the shared key a gallery had before its first rotation,
    #: and its own retired keys that older backups are sealed under.
    others: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.current, bytes) or len(self.current) != KEY_BYTES:
            raise GalleryError(f"{self.source}: a gallery key is {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        staged = f", staged {fingerprint(self.staged)}" if self.staged else ""
        return f"Keyring({fingerprint(self.current)} from {self.source}{staged})"

    def key_for(self, kid: bytes) -> bytes | None:
        """The key whose id is ``kid``, if this keyring holds it."""
        for key in (self.current, self.staged, *self.others):
            if key is not None and key_id(key) == kid:
                return key
        return None


def credential_path() -> Path | None:
    """``$CREDENTIALS_DIRECTORY/gallery-key`` if systemd passed that credential, else None."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / CREDENTIAL
    return path if path.is_file() else None


def staged_path(key_file: Path) -> Path:
    """Where a rotation stages the new key: ``<key file>.new``."""
    return key_file.with_name(key_file.name + ".new")


def load_keyring(key_file: str | os.PathLike[str], *, create: bool = True) -> Keyring:
    """The gallery key: the systemd credential if present, else ``key_file``.

    A missing key file is created (32 random bytes, mode 0600) when
    ``create``, else GalleryError: without the key the templates are lost,
    which is the point, so the message says where the key was looked for.
    """
    cred = credential_path()
    if cred is not None:
        return Keyring(read_key(cred, private=False), f"systemd credential {cred}")
    path = Path(key_file)
    remove_stale_temporaries(path)
    if not path.exists():
        if not create:
            raise GalleryError(
                f"{path}: key file not found; the templates cannot be read without it"
                " (restore it from where you keep its copy)"
            )
        _create_key_file(path)
    staged = staged_path(path)
    return Keyring(
        read_key(path), str(path), path, read_key(staged) if staged.exists() else None
    )


def read_key(path: Path, *, private: bool = True) -> bytes:
    """The 32-byte key in ``path`` (raw, or 64 hex digits); GalleryError naming the fix.

    ``private`` refuses a file that group or others may read or write.
    """
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise GalleryError(f"{path}: key file is not a regular file")
        if private and st.st_mode & 0o077:
            raise GalleryError(
                f"{path}: key file is open to group or others"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod 600 {path}"
            )
        data = path.read_bytes()
    except OSError as e:
        raise GalleryError(f"{path}: cannot read key file ({e.strerror})") from None
    if len(data) == KEY_BYTES:
        return data
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise GalleryError(
            f"{path}: not a gallery key (expected {KEY_BYTES} bytes or"
            f" {2 * KEY_BYTES} hex digits, got {len(data)} bytes)"
        )
    return key


def _create_key_file(path: Path) -> None:
    """Create ``path`` holding a new key, unless another process just did (then keep theirs)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = write_temp(path, new_key())
        try:
            os.link(tmp, path)  # atomic create-if-absent: two first users agree on one key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)
    except OSError as e:
        raise GalleryError(f"{path}: cannot create key file ({e.strerror})") from None


#: A key's temporary file older than this was left by a killed process: writing one
#: (32 bytes, then a rename) takes milliseconds.
STALE_TEMP_SECONDS = 600.0


def remove_stale_temporaries(key_file: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove ``.<key file>.*`` temporaries a killed key write or rotation left; how many.

    They hold key material, so they must not linger. Only those older than
    ``older_than`` seconds (0: all, safe only under the gallery's write lock,
    which every rotation holds while it stages) are removed, so another
    process's write in flight is left alone. Errors are ignored: this is tidying.
    """
    removed = 0
    now = time.time()
    with contextlib.suppress(OSError):
        for p in key_file.parent.glob(f".{glob.escape(key_file.name)}.*"):
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime >= older_than and p.is_file():
                    p.unlink()
                    removed += 1
    return removed


def stage_key(key_file: Path, key: bytes) -> None:
    """Write ``key`` as the staged key beside ``key_file`` (replacing a stale one), synced."""
    target = staged_path(key_file)
    try:
        os.replace(write_temp(target, key), target)
        fsync_dir(target.parent)
    except OSError as e:
        raise GalleryError(f"{target}: cannot write key file ({e.strerror})") from None


def commit_staged_key(key_file: Path, key: bytes) -> None:
    """Make the staged ``key`` the key file; fine if another process already did."""
    staged = staged_path(key_file)
    try:
        os.replace(staged, key_file)
        fsync_dir(key_file.parent)
    except FileNotFoundError:
        if read_key(key_file) != key:
            raise GalleryError(
                f"{key_file}: the rotated key vanished before it was installed"
            ) from None
    except OSError as e:
        raise GalleryError(f"{key_file}: cannot install the new key ({e.strerror})") from None


def discard_staged_key(key_file: Path) -> None:
    """Remove a staged key (its rotation rolled back); missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        staged_path(key_file).unlink()



# --------------------------------------------------------------------------- bundles


def check_passphrase(passphrase: object) -> str:
    """``passphrase`` if it is long enough to seal a bundle with, else GalleryError."""
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE:
        raise GalleryError(f"the bundle passphrase must be at least {MIN_PASSPHRASE} characters")
    return passphrase


def _bundle_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _header_aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")


def seal_bundle(plaintext: bytes, passphrase: str) -> bytes:
    """``plaintext`` as a sealed bundle: a JSON envelope around AES-256-GCM ciphertext.

    The envelope's ``format``, ``version``, ``kdf`` parameters and salt are
    authenticated too, so none can be changed without the import noticing.
    """
    check_passphrase(passphrase)
    salt, nonce = os.urandom(16), os.urandom(NONCE_BYTES)
    header = {
        "format": SEALED_BUNDLE_FORMAT,
        "version": SEALED_BUNDLE_VERSION,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
        "salt": base64.b64encode(salt).decode("ascii"),
    }
    key = _bundle_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _header_aad(header))
    envelope = header | {
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }
    return json.dumps(envelope, indent=1).encode("ascii")


def open_bundle(envelope: dict[str, Any], passphrase: str) -> bytes:
    """The plaintext of a parsed sealed-bundle envelope; GalleryError if it does not open.

    Wrong passphrase and altered file are one error: AES-GCM cannot tell them apart.
    """
    header = {k: envelope.get(k) for k in ("format", "version", "kdf", "salt")}
    if header["version"] != SEALED_BUNDLE_VERSION:
        raise GalleryError(f"sealed bundle version {header['version']!r} is not supported")
    kdf = header["kdf"]
    try:
        if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
            raise ValueError
        n, r, p = (kdf[k] for k in ("n", "r", "p"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            raise ValueError
        salt, nonce, ciphertext = (
            base64.b64decode(envelope.get(k) or "", validate=True)
            for k in ("salt", "nonce", "ciphertext")
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise GalleryError("not a well-formed sealed bundle") from None
    if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 16 and p == 1):
        raise GalleryError(f"sealed bundle asks for scrypt n={n} r={r} p={p}: beyond the limits")
    if len(nonce) != NONCE_BYTES or len(salt) < 16:
        raise GalleryError("not a well-formed sealed bundle")
    if not isinstance(passphrase, str) or not passphrase:
        raise GalleryError("this bundle is sealed: a passphrase is needed")
    key = _bundle_key(passphrase, salt, n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _header_aad(header))
    except InvalidTag:
        raise GalleryError("wrong passphrase, or the bundle was altered") from None
