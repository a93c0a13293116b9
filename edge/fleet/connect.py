"""Where a fleet connection comes from: the URL, the password, TLS; and one-line errors.

The URL is ``--fleet URL``, else ``$EDGE_FLEET_URL``, else ``fleet.url`` in the
config. It never carries a password: a command line shows in ``ps`` and in
shell history, an environment in ``/proc``, a config file is often readable.
The password comes from the systemd credential ``fleet-password``
(``LoadCredential=``, found through ``$CREDENTIALS_DIRECTORY``), else from
``fleet.password_file``, which must be mode 0600; without either, libpq's own
means apply (a unix socket's peer authentication, a client certificate,
``~/.pgpass``).

TLS is libpq's: ``sslmode=verify-full`` (in the URL or ``fleet.sslmode``;
the URL's parameters win) checks that the server's certificate was signed by
``sslrootcert`` and names the host connected to. Every failure to connect (a bad URL, no server, a
wrong password, a certificate that does not verify) is a :class:`FleetError`
with one line naming the fleet and the reason.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import conninfo

from ..errors import EdgeError

if TYPE_CHECKING:
    from ..config import Config

#: The systemd credential holding the fleet password (``LoadCredential=fleet-password:...``).
PASSWORD_CREDENTIAL = "fleet-password"
ENV_URL = "EDGE_FLEET_URL"


class FleetError(EdgeError, RuntimeError):
    """The fleet's central store is unreachable, misconfigured, or refused a change."""


@dataclass(frozen=True, repr=False)
class FleetSettings:
    """How to reach the fleet: ``url`` (no password in it), where it came from, the password.

    ``repr`` never shows the password.
    """

    url: str
    source: str
    password: str | None = None
    sslmode: str | None = None
    sslrootcert: Path | None = None
    connect_timeout: int = 5

    def __repr__(self) -> str:
        return f"FleetSettings({self.where} from {self.source})"

    @property
    def where(self) -> str:
        """The URL as shown in messages (it never holds a password)."""
        return self.url


def _check_url(url: str, source: str) -> dict[str, Any]:
    """The URL's libpq parameters; FleetError for a malformed URL or one holding a password."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise FleetError(f"{source}: {url!r} is not a postgresql:// URL")
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.Error as e:
        raise FleetError(f"{source}: {url!r} is not a valid URL ({_first_line(e)})") from None
    if "password" in params:
        raise FleetError(
            f"{source}: a password in the URL is refused (it would show in ps and history);"
            f" put it in fleet.password_file (mode 0600) or the systemd credential"
            f" {PASSWORD_CREDENTIAL}")
    return params


def read_password(path: Path, *, private: bool = True) -> str:
    """The password in ``path`` (its first line); FleetError if unreadable or open to others."""
    try:
        st = path.stat()
        if private and st.st_mode & 0o077:
            raise FleetError(
                f"{path}: fleet password file is open to group or others"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod 600 {path}")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FleetError(f"{path}: cannot read the fleet password ({e.strerror})") from None
    except UnicodeDecodeError:
        raise FleetError(f"{path}: the fleet password is not UTF-8 text") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise FleetError(f"{path}: the fleet password file is empty")
    return password


def _credential() -> Path | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / PASSWORD_CREDENTIAL
    return path if path.is_file() else None


def configured(cfg: Config | None) -> bool:
    """Whether this machine belongs to a fleet (``$EDGE_FLEET_URL`` or ``fleet.url``)."""
    return bool(os.environ.get(ENV_URL)) or bool(cfg is not None and cfg.fleet.url)


def settings(cfg: Config | None, url: str | None = None) -> FleetSettings:
    """The fleet connection: ``url`` (from ``--fleet``), else the environment, else the config.

    FleetError when none is set, or for a URL that is malformed or holds a password.
    """
    if url:
        source = "--fleet"
    elif os.environ.get(ENV_URL):
        url, source = os.environ[ENV_URL], f"${ENV_URL}"
    elif cfg is not None and cfg.fleet.url:
        url, source = cfg.fleet.url, "fleet.url"
    else:
        raise FleetError(
            f"no fleet configured: give --fleet URL, set ${ENV_URL} or fleet.url in the config")
    _check_url(url, source)
    cred = _credential()
    password = None
    if cred is not None:
        password = read_password(cred, private=False)
    elif cfg is not None and cfg.fleet.password_file is not None:
        password = read_password(cfg.path(cfg.fleet.password_file))
    fleet = cfg.fleet if cfg is not None else None
    return FleetSettings(
        url=url,
        source=source,
        password=password,
        sslmode=fleet.sslmode if fleet else None,
        sslrootcert=cfg.path(fleet.sslrootcert) if cfg and fleet and fleet.sslrootcert else None,
        connect_timeout=fleet.connect_timeout_seconds if fleet else 5,
    )


def _first_line(e: BaseException) -> str:
    """The line of a libpq error that says why (libpq's messages span several lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return e.__class__.__name__
    for ln in lines:  # "connection to server at ... failed: FATAL:  password authentication..."
        if "failed:" in ln:
            return " ".join(ln.split("failed:", 1)[1].split())
    return " ".join(lines[0].split())


def connect(
    s: FleetSettings, *, autocommit: bool = True, application: str = "edge"
) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to the fleet; FleetError (one line: the fleet and why) if none."""
    kwargs: dict[str, Any] = {
        "autocommit": autocommit,
        "connect_timeout": s.connect_timeout,
        "application_name": application,
    }
    if s.password is not None:
        kwargs["password"] = s.password
    given = _check_url(s.url, s.source)  # the URL's own parameters win over the config's
    if s.sslmode is not None and "sslmode" not in given:
        kwargs["sslmode"] = s.sslmode
    if s.sslrootcert is not None and "sslrootcert" not in given:
        kwargs["sslrootcert"] = str(s.sslrootcert)
    try:
        return psycopg.connect(s.url, **kwargs)
    except psycopg.Error as e:
        raise FleetError(f"fleet {s.where}: cannot connect: {_first_line(e)}") from None


def describe(e: psycopg.Error, what: str) -> FleetError:
    """A database error during ``what`` as one line (permission denied, lost connection, ...)."""
    return FleetError(f"fleet: {what}: {_first_line(e)}")
