"""The console's login token: made once, kept owner-only, compared in constant time.

One random token per site, in ``console.token_file`` (default ``console.token``
beside the gallery), mode 0600. ``edge console token`` prints it (making it
if there is none yet, as the daemon does when the console starts), and
``--rotate`` replaces it: every session made with the old one ends. The file
is re-read when it changes, so a rotation needs no restart. No web library
is imported here: the CLI prints the token without them.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from ..config import Config
from ..errors import ConfigError

#: Bytes of randomness in a token (printed as URL-safe base64, 43 characters).
TOKEN_BYTES = 32


def token_path(cfg: Config, db: Path) -> Path:
    """Where the token lives: ``console.token_file``, else beside the gallery."""
    if cfg.console.token_file is not None:
        return cfg.path(cfg.console.token_file)
    return db.parent / "console.token"


def _write_private(path: Path, text: str, replace: bool) -> None:
    """Write ``text`` to ``path`` (0600) atomically; without ``replace``, keep an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            # Fails if another process made one first: theirs stands.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_token(path: Path) -> str | None:
    """The token in ``path``, or None when there is none yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the console token ({e.strerror})") from None
    return text or None


def ensure_token(path: Path, rotate: bool = False) -> str:
    """The token in ``path``, made now if there is none (or replaced, with ``rotate``)."""
    if not rotate:
        have = read_token(path)
        if have is not None:
            return have
    try:
        _write_private(path, secrets.token_urlsafe(TOKEN_BYTES), replace=rotate)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the console token ({e.strerror})") from None
    token = read_token(path)
    assert token is not None
    return token


def same(given: str | None, expected: str | None) -> bool:
    """Whether two secrets are equal, in time that does not depend on where they differ."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class TokenFile:
    """The token as the running console sees it: re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token: str | None = None
        ensure_token(path)

    @property
    def token(self) -> str | None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            return None  # removed: nobody can log in until it is made again
        if stamp != self._stamp:
            self._token, self._stamp = read_token(self.path), stamp
        return self._token
