"""The systemd unit passes ``systemd-analyze verify`` and keeps its promises.

``verify`` exits 0 even for unknown keys and bad values (it only prints them),
so these tests require its output to be empty. The installed ExecStart binary
does not exist on a build machine, so the unit is verified as a copy whose
ExecStart points at /bin/true, and the original is allowed that one complaint.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge-access.service"
INSTALL = ROOT / "scripts" / "install-service.sh"
EXEC = "/opt/edge-access/.venv/bin/edge"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def verify(path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``path``, one complaint per line."""
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    if done.returncode != 0 and not lines:
        lines.append(f"exit status {done.returncode}")
    return lines


def settings() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"ExecStart={EXEC}", "ExecStart=/bin/true"))
    assert "ExecStart=/bin/true run --config" in copy.read_text()
    assert verify(copy) == []


@needs_analyze
def test_installed_unit_only_lacks_its_binary() -> None:
    complaints = verify(UNIT)
    if Path(EXEC).exists():
        assert complaints == []
    else:
        assert complaints and all(f"{EXEC} is not executable" in c for c in complaints), complaints


@needs_analyze
def test_verify_would_catch_a_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / UNIT.name
    text = UNIT.read_text().replace(f"ExecStart={EXEC}", "ExecStart=/bin/true")
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=sometimes\nBogusKey=1"))
    assert len(verify(bad)) == 2


def test_unit_settings() -> None:
    s = settings()
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecStart"] == f"{EXEC} run --config /etc/edge-access/config.yaml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["WatchdogSec"] == "10"
    assert one["Restart"] == "on-failure" and one["RestartSec"] == "2"
    assert one["User"] == one["Group"] == "edge-access"
    assert set(one["SupplementaryGroups"].split()) == {"gpio", "video", "audio"}
    assert one["StateDirectory"] == "edge-access" and one["StateDirectoryMode"] == "0700"
    assert one["ConfigurationDirectory"] == "edge-access"
    assert one["ProtectSystem"] == "strict" and one["ReadWritePaths"] == "/var/lib/edge-access"
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert one[key] == "yes", key


def test_devices_stay_reachable() -> None:
    """Nothing that closes the device cgroup: GPIO, camera and sound must open."""
    s = settings()
    assert s.get("PrivateDevices", ["no"])[-1] in ("no", "false")
    assert "DevicePolicy" not in s or s["DevicePolicy"][-1] == "auto"
    assert "DeviceAllow" not in s
    assert "ProtectClock" not in s  # implies DeviceAllow=char-rtc on older systemd


def test_install_script_parses() -> None:
    text = INSTALL.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(INSTALL)], check=True)
