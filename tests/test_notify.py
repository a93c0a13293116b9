"""The systemd notify protocol against a real unix datagram socket."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import notify


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_watchdog_stopping(listener: socket.socket) -> None:
    assert notify.ready()
    assert receive(listener) == "READY=1"
    assert notify.watchdog()
    assert receive(listener) == "WATCHDOG=1"
    assert notify.stopping()
    assert receive(listener) == "STOPPING=1"


def test_status_is_one_line(listener: socket.socket) -> None:
    assert notify.status("watching camera\n3 people enrolled")
    assert receive(listener) == "STATUS=watching camera 3 people enrolled"
    assert notify.ready("ready: 3 people")
    assert receive(listener) == "READY=1\nSTATUS=ready: 3 people"


def test_reloading_carries_monotonic_time(listener: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading()
    lines = receive(listener).split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edge-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("READY=1\nSTATUS=abstract")
        assert receive(sock) == "READY=1\nSTATUS=abstract"


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.watchdog() is False


def test_dead_socket_is_logged_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.watchdog() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 10.0),
        ("2500000", "self", 2.5),
        ("10000000", "1", None),  # meant for another process
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for var, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(os.getpid()) if value == "self" else value)
    assert notify.watchdog_interval() == expected


def test_a_listener_that_stops_reading_never_blocks_the_sender(listener: socket.socket) -> None:
    """A unix datagram queue holds ~10 messages; past that, a blocking sendto hangs the
    door loop (SIGTERM included). Here nobody reads: the pings after the queue is full
    are dropped, the first ones still arrive."""
    sent: list[bool] = []
    t = threading.Thread(target=lambda: sent.extend(notify.watchdog() for _ in range(200)))
    t.start()
    t.join(60)
    assert not t.is_alive(), "notify blocked on a full socket"
    assert len(sent) == 200 and sent[0] and not all(sent)
    assert receive(listener) == "WATCHDOG=1"
