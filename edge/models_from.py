"""Model files from another machine: a folder, a USB stick, or another door over ssh.

``edge models fetch --from SOURCE`` is for a Pi that has no model mirror and
should not build the converted models itself (PyTorch): copy them from a
machine that has them. ``SOURCE`` is one of

- a folder: ``/media/usb/models`` (a USB stick, a mounted share);
- ``[user@]host:path``, scp's own form: the port, user and key come from the
  ssh config (``~/.ssh/config`` or ``--ssh-config FILE``);
- ``ssh://[user@]host[:port]/path``, for a port given in the target itself.

Each file the folder needs is copied into a staging folder beside the models,
checked against the manifest (size and sha256, like every source), and only
when all of them check out moved into place: a missing, short or mismatching
file is one :class:`ModelError` line and leaves the folder as it was.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .models import MANIFEST, Log, ModelFile, Status, _problem, check, manifest

#: ``[user@]host:path`` as scp reads it (a host has no ``/``).
_SCP_TARGET = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.*)$")


@dataclass(frozen=True)
class Source:
    """Where ``--from`` reads: a local folder (``host`` None) or an ssh target."""

    text: str
    path: str
    host: str | None = None
    user: str | None = None
    port: int | None = None


def parse_source(text: str) -> Source:
    """A :class:`Source` from what the user typed; :class:`ModelError` if it is neither form."""
    if text.startswith("ssh://"):
        url = urllib.parse.urlsplit(text)
        try:
            port = url.port
        except ValueError:
            raise ModelError(f"--from {text}: bad port") from None
        if not url.hostname or not url.path or url.path == "/":
            raise ModelError(f"--from {text}: expected ssh://[user@]host[:port]/path")
        return Source(text, url.path, url.hostname, url.username, port)
    if not Path(text).exists() and (m := _SCP_TARGET.match(text)):
        return Source(text, m["path"], m["host"], m["user"])
    return Source(text, text)


def fetch_from(
    models_dir: Path,
    source: str,
    log: Log = print,
    force: bool = False,
    ssh_config: Path | None = None,
    manifest_path: Path = MANIFEST,
) -> list[Status]:
    """Install the manifest's files from ``source``: all of them checked, or none.

    Files already good here are kept (all are taken again with ``force``)."""
    src = parse_source(source)
    models_dir.mkdir(parents=True, exist_ok=True)
    needed = [
        m for m in manifest(manifest_path) if force or _problem(models_dir / m.file, m)
    ]
    if needed:
        staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".from-"))
        try:
            if src.host is None:
                _copy_local(src, needed, staging)
            else:
                _copy_ssh(src, needed, staging, ssh_config)
            for m in needed:
                why = _problem(staging / m.file, m)
                if why:
                    where = "not on the source" if why == "missing" else why
                    raise ModelError(f"{m.file} from {source}: {where}; nothing installed")
            for m in needed:
                (staging / m.file).replace(models_dir / m.file)
                log(f"{m.file}: ok (from {source})")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return check(models_dir, manifest_path)


def _copy_local(src: Source, needed: list[ModelFile], staging: Path) -> None:
    folder = Path(src.path)
    if not folder.is_dir():
        raise ModelError(f"--from {src.text}: not a folder")
    for m in needed:
        try:
            shutil.copyfile(folder / m.file, staging / m.file)
        except FileNotFoundError:
            continue  # reported by name once every file is looked at
        except OSError as e:
            raise ModelError(f"{m.file} from {src.text}: cannot read ({e.strerror})") from None


def _copy_ssh(
    src: Source, needed: list[ModelFile], staging: Path, ssh_config: Path | None
) -> None:
    """One scp run for every file; which ones arrived is checked by the caller."""
    scp = shutil.which("scp")
    if scp is None:
        raise ModelError(f"--from {src.text}: scp is missing (apt-get install openssh-client)")
    target = f"{src.user}@{src.host}" if src.user else src.host
    cmd = [scp]  # no -q: it silences ssh's own reason too
    if ssh_config is not None:
        cmd += ["-F", str(ssh_config)]
    if src.port is not None:
        cmd += ["-P", str(src.port)]
    cmd += [f"{target}:{posixpath.join(src.path, m.file)}" for m in needed]
    cmd.append(str(staging) + "/")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ModelError(f"--from {src.text}: scp took more than 15 minutes") from None
    if r.returncode != 0 and not any((staging / m.file).exists() for m in needed):
        # ssh's own line says why ("ssh: connect to host … Connection refused");
        # scp's last one ("Connection closed") does not.
        lines = [line.strip() for line in r.stderr.splitlines() if line.strip()]
        why = next((line for line in lines if line.startswith("ssh:")), None)
        why = why or (lines[-1] if lines else f"scp exited {r.returncode}")
        if "No such file" not in why:
            raise ModelError(f"--from {src.text}: {why}")
