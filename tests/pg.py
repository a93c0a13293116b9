"""A real PostgreSQL server for the tests: one private cluster per pytest worker.

Why real: the fleet's guarantees (the change log's order, NOTIFY on commit,
roles and row security, ON CONFLICT for retried pushes) are PostgreSQL's, so
only PostgreSQL can test them. Each pytest(-xdist) worker gets its own
cluster, made with ``initdb`` in a temporary folder and run by an
unprivileged user (PostgreSQL refuses to run as root: as root the folder is
given to ``nobody`` and the binaries run through ``runuser``). The server
listens on a unix socket in that folder only, unless ``tcp=True`` (then also
on 127.0.0.1, on a port the OS picked), and is stopped and removed after.

:meth:`PgServer.stop` and :meth:`PgServer.start` stop and restart the same
cluster (the data survives): the offline tests use them. :meth:`PgServer.new_database`
gives each test a database of its own, so tests need no cleanup between them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: The superuser initdb makes (trust over the socket, password over TCP).
SUPERUSER = "postgres"


def pg_bin() -> Path:
    """The folder of the newest installed PostgreSQL's server binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL is not installed (initdb not found): make test-deps installs it"
            " (apt-get install postgresql)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary folder, run as an unprivileged user."""

    def __init__(self, *, tcp: bool = True, ssl: tuple[Path, Path] | None = None) -> None:
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self.port = _free_port() if tcp or ssl else 5432
        self.tcp = bool(tcp or ssl)
        self.password = secrets.token_hex(12)
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chmod(self.root, 0o755)
            for p in (self.root, self.socket_dir):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
            self._as = ["runuser", "-u", "nobody", "--"]
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._uid, self._gid)
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
             "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"],
        )
        pwfile.unlink()
        conf = [
            f"unix_socket_directories = '{self.socket_dir}'",
            f"listen_addresses = '{'127.0.0.1' if self.tcp else ''}'",
            f"port = {self.port}",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 16MB",
            "max_connections = 200",
        ]
        if ssl is not None:
            cert, key = (self._own_copy(p) for p in ssl)
            conf += ["ssl = on", f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'"]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(conf) + "\n")
        if ssl is not None:  # over TCP: TLS and a password, nothing else
            (self.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                "hostnossl all all 127.0.0.1/32 reject\n"
            )
        self.start()

    def _own_copy(self, p: Path) -> Path:
        target = self.root / p.name
        shutil.copyfile(p, target)
        os.chmod(target, 0o600)
        if self._as:
            os.chown(target, self._uid, self._gid)
        return target

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self._as + cmd, capture_output=True, text=True, check=False,
                           cwd=self.root)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stdout}{r.stderr}")

    def start(self) -> None:
        """Start the cluster (again) and wait until it takes connections."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.root / "log"), "-w", "-t", "120", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``fast``: roll back open transactions; ``immediate``: like a crash)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                   "-t", "120", "stop"])

    def running(self) -> bool:
        r = subprocess.run(self._as + [str(self.bin / "pg_ctl"), "-D", str(self.data),
                                       "status"], capture_output=True, check=False)
        return r.returncode == 0

    def close(self) -> None:
        """Stop the cluster if it runs and delete its folder."""
        with contextlib.suppress(RuntimeError):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ addresses

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL for ``user`` on ``dbname`` over the unix socket (no password)."""
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL over TCP to 127.0.0.1 (no password in it)."""
        if not self.tcp:
            raise RuntimeError("this server does not listen on TCP")
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` as the superuser with psql; its output (unaligned, tuples only)."""
        r = subprocess.run(
            [str(self.bin / "psql") if (self.bin / "psql").exists() else "psql",
             "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname),
             "-c", sql],
            capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return r.stdout

    def new_database(self) -> str:
        """A fresh, empty database of its own; its name."""
        name = "t_" + secrets.token_hex(6)
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def set_password(self, role: str, password: str) -> None:
        """Create login role ``role`` (if new) with ``password``."""
        quoted = password.replace("'", "''")
        self.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" CREATE ROLE \"{role}\" LOGIN; END IF; END$$;"
            f" ALTER ROLE \"{role}\" LOGIN PASSWORD '{quoted}'")


def wait_until(predicate: object, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]
