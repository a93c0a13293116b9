"""Helpers shared by the tests that run real processes: `edge run`, its notify socket, mosquitto.

Plain functions and classes (the fixtures built on them are in conftest.py):
starting a real daemon process and stopping it with SIGTERM, reading what
it tells systemd over a real notify socket, an ephemeral TCP port, and a real
mosquitto broker with a real paho subscriber.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from .conftest import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
#: For the modules that start a broker.
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"),
    reason="mosquitto not installed (make test installs it as root)",
)


# ------------------------------------------------------------------ the daemon process


def edge_run(
    site: Path, *args: str, env: dict | None = None, stdout: int | IO[Any] = subprocess.PIPE
) -> subprocess.Popen:
    """A real `edge run` on the site's config and gallery, pins mocked; output to ``stdout``."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(site / "config.yaml"),
         "--db", str(site / "gallery.db"), *args],
        stdout=stdout, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock", **(env or {})},
    )


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM and its exit code (killed if it has not ended within 60 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def receive_until(sock: socket.socket, wanted: str, timeout: float = 30.0) -> list[str]:
    """The notify messages up to the one with the line ``wanted``; AssertionError if it never
    comes."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if wanted in msg.split("\n"):
            return got
    raise AssertionError(f"{wanted!r} never arrived; got {got}")


def notify_lines(sock: socket.socket, seconds: float = 0.05) -> list[str]:
    """Every notify line that arrives in the next ``seconds``."""
    got: list[str] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            break
    return got


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ MQTT


class Broker:
    """A real mosquitto on an ephemeral port, its config and persistence in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        assert wait_for(up), "mosquitto did not start"

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


class Subscriber:
    """A real paho client with a persistent session, recording every message."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.got: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub",
                        clean_session=False)
        c.on_connect = lambda cl, *_: cl.subscribe([("edge-access/#", 1), ("homeassistant/#", 1)])
        c.on_message = self._on
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on(self, _c, _u, msg) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg.topic, msg.payload, msg.retain))

    def topic(self, suffix: str) -> list[bytes]:
        with self.lock:
            return [p for _, t, p, _ in self.got if t.endswith(suffix)]

    def events(self) -> list[dict]:
        return [json.loads(p) for p in self.topic("/event")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
