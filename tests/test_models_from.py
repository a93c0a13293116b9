"""``edge models fetch --from``: another machine's models, from a folder or over ssh.

The ssh tests start their own unprivileged sshd on 127.0.0.1 (an ephemeral
port, a temporary host key and authorized_keys) and fetch through the real
scp, as one door fetching from another.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.errors import ModelError
from edge.models import check, manifest
from edge.models_from import Source, fetch_from, parse_source

from .conftest import MODELS
from .test_models import flip_a_byte, write_manifest

SSHD = "/usr/sbin/sshd"


def small_manifest(tmp_path: Path) -> Path:
    """The two BlazeFace entries (real files, small): enough to see all-or-nothing."""
    entries = [m for m in manifest() if m.role in ("detect_short", "detect_full")]
    return write_manifest(tmp_path / "manifest.toml", entries)


def stick(tmp_path: Path, manifest_path: Path) -> Path:
    """A USB stick's models folder holding this checkout's files of ``manifest_path``."""
    folder = tmp_path / "usb" / "models"
    folder.mkdir(parents=True)
    for m in manifest(manifest_path):
        shutil.copyfile(MODELS / m.file, folder / m.file)
    return folder


def model_files(folder: Path) -> list[str]:
    """Everything in ``folder``, staging leftovers included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["models", "fetch", *args])
    assert "Traceback" not in r.output
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"models:\n  dir: {tmp_path / 'door' / 'models'}\n")
    return path


# --------------------------------------------------------------- a folder


def test_every_manifest_file_from_another_doors_folder(tmp_path, config):
    """The whole manifest from this checkout's models folder, as a USB stick would hold it."""
    code, out, err = cli("--from", str(MODELS), "--config", str(config))
    assert code == 0, err
    door = tmp_path / "door" / "models"
    assert all(s.ok for s in check(door))
    assert err.splitlines() == [f"{m.file}: ok (from {MODELS})" for m in manifest()]
    assert out.strip() == f"{len(manifest())} model files ok"
    # Run again: every file is good already, nothing is copied.
    code, _, err = cli("--from", str(MODELS), "--config", str(config))
    assert (code, err) == (0, "")


def test_a_file_missing_on_the_stick_installs_nothing(tmp_path):
    man = small_manifest(tmp_path)
    usb = stick(tmp_path, man)
    _, full = manifest(man)
    (usb / full.file).unlink()
    door = tmp_path / "door"
    with pytest.raises(ModelError) as e:
        fetch_from(door, str(usb), log=lambda s: None, manifest_path=man)
    assert str(e.value) == f"{full.file} from {usb}: not on the source; nothing installed"
    assert model_files(door) == []  # not even the good one, and no staging folder


@pytest.mark.parametrize("spoil", ["flip", "truncate"])
def test_a_mismatching_file_installs_nothing_and_keeps_the_good_ones(tmp_path, spoil):
    man = small_manifest(tmp_path)
    usb = stick(tmp_path, man)
    short, full = manifest(man)
    door = tmp_path / "door"
    door.mkdir()
    shutil.copyfile(MODELS / short.file, door / short.file)
    before = (door / short.file).read_bytes()
    if spoil == "flip":
        flip_a_byte(usb / full.file)
    else:
        (usb / full.file).write_bytes((usb / full.file).read_bytes()[:-100])
    with pytest.raises(ModelError, match=rf"^{full.file} from .*: (sha256 mismatch|wrong size)"):
        fetch_from(door, str(usb), log=lambda s: None, force=True, manifest_path=man)
    assert model_files(door) == [short.file]
    assert (door / short.file).read_bytes() == before


def test_the_cli_says_one_line_for_a_source_that_is_not_a_folder(tmp_path, config):
    code, out, err = cli("--from", str(tmp_path / "nowhere"), "--config", str(config))
    assert code == 1
    assert out == ""
    assert err == f"edge: --from {tmp_path / 'nowhere'}: not a folder\n"


def test_the_cli_names_the_file_that_does_not_match(tmp_path, config):
    usb = tmp_path / "usb"
    shutil.copytree(MODELS, usb, ignore=shutil.ignore_patterns(".cache"))
    first = manifest()[0]
    flip_a_byte(usb / first.file)
    code, _, err = cli("--from", str(usb), "--config", str(config))
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"edge: {first.file} from {usb}: sha256 mismatch")
    assert lines[0].endswith("; nothing installed")
    assert model_files(tmp_path / "door" / "models") == []


def test_sources_are_read_as_a_folder_scp_target_or_ssh_url(tmp_path):
    assert parse_source("/media/usb/models") == Source("/media/usb/models", "/media/usb/models")
    assert parse_source("door2:/opt/edge/models") == Source(
        "door2:/opt/edge/models", "/opt/edge/models", "door2"
    )
    assert parse_source("pi@10.0.0.2:models") == Source(
        "pi@10.0.0.2:models", "models", "10.0.0.2", "pi"
    )
    assert parse_source("ssh://pi@door2:2222/opt/m") == Source(
        "ssh://pi@door2:2222/opt/m", "/opt/m", "door2", "pi", 2222
    )
    # A folder that exists is a folder, even with a colon in its name.
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_source(str(odd)).host is None
    for bad in ("ssh://door2", "ssh://door2:99999/m"):
        with pytest.raises(ModelError, match=rf"^--from {bad}: "):
            parse_source(bad)


# --------------------------------------------------------------- over ssh


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    config: Path  # a client config: the key, known_hosts, and the alias "door2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=60
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[SshServer]:
    assert os.access(SSHD, os.X_OK), f"{SSHD} is missing: make test-deps (openssh-server)"
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copyfile(d / "client_key.pub", d / "authorized_keys")
    user = getpass.getuser()
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile none\nUsePAM no\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (d / "ssh_config").write_text(
        f"Host door2\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"Host *\n  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n  ConnectTimeout 60\n"
    )
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir when root
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not listen within 60 s"
                time.sleep(0.1)
        yield SshServer(port, user, d / "ssh_config")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_fetch_over_ssh_from_a_host_alias_in_the_ssh_config(tmp_path, sshd, config):
    code, _, err = cli(
        "--from", f"door2:{MODELS}", "--ssh-config", str(sshd.config), "--config", str(config)
    )
    assert code == 0, err
    assert all(s.ok for s in check(tmp_path / "door" / "models"))
    assert err.splitlines() == [f"{m.file}: ok (from door2:{MODELS})" for m in manifest()]


def test_fetch_over_ssh_with_the_port_in_an_ssh_url(tmp_path, sshd):
    man = small_manifest(tmp_path)
    usb = stick(tmp_path, man)
    target = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{usb}"
    statuses = fetch_from(
        tmp_path / "door", target, log=lambda s: None, ssh_config=sshd.config, manifest_path=man
    )
    assert [s.ok for s in statuses] == [True, True]


def test_a_file_missing_on_the_remote_door_installs_nothing(tmp_path, sshd):
    man = small_manifest(tmp_path)
    usb = stick(tmp_path, man)
    short, _ = manifest(man)
    (usb / short.file).unlink()
    with pytest.raises(ModelError) as e:
        fetch_from(tmp_path / "door", f"door2:{usb}", ssh_config=sshd.config, manifest_path=man)
    assert str(e.value) == f"{short.file} from door2:{usb}: not on the source; nothing installed"
    assert model_files(tmp_path / "door") == []


def test_an_unreachable_door_is_one_line_from_ssh(tmp_path, sshd):
    target = f"ssh://{sshd.user}@127.0.0.1:{_free_port()}/models"
    with pytest.raises(ModelError, match=rf"^--from {target}: .*[Cc]onnection refused"):
        fetch_from(tmp_path / "door", target, ssh_config=sshd.config)
    assert model_files(tmp_path / "door") == []
