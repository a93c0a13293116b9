"""The door relay, contact and exit button on gpiozero's MockFactory.

Pulse timing is read from the MockPin's own state history. The fail-secure
tests run a child Python process whose pin class writes every relay change to
a file as it happens, so the result does not depend on the child's exit hooks.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edge.door import Door, _is_raspberry_pi, make_pin_factory

from .conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
RELAY, CONTACT, EXIT = 17, 27, 22


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    saved = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = saved



def assert_pulses(pin, expected: list[tuple[float, bool]]) -> None:
    """Every state in order, each held at least as long as asked (the door never
    relocks early) and at most a few seconds more: MockPin's own check allows
    50 ms late, which a loaded or slow CPU's timer thread is."""
    assert len(pin.states) == len(expected), pin.states
    assert [bool(s.state) for s in pin.states] == [v for _, v in expected], pin.states
    for got, (held, _) in zip(pin.states, expected, strict=True):
        assert held - 0.01 <= got.timestamp <= held + 5.0, pin.states


def test_unlock_pulses_then_relocks(factory: MockFactory) -> None:
    switches: list[str] = []
    with Door(RELAY, on_switch=switches.append) as door:
        pin = factory.pin(RELAY)
        pin.clear_states()
        door.unlock(0.3)
        assert door.is_unlocked  # returned at once, still open
        assert wait_for(lambda: not door.is_unlocked)
        assert_pulses(pin, [(0.0, False), (0.0, True), (0.3, False)])
        assert wait_for(lambda: switches == ["unlocked", "locked"])


def test_second_unlock_extends_rather_than_pulsing_twice(factory: MockFactory) -> None:
    switches: list[str] = []
    with Door(RELAY, on_switch=switches.append) as door:
        pin = factory.pin(RELAY)
        pin.clear_states()
        door.unlock(0.3)
        time.sleep(0.15)
        door.unlock(0.3)
        assert wait_for(lambda: not door.is_unlocked)
        assert_pulses(pin, [(0.0, False), (0.0, True), (0.45, False)])
        assert wait_for(lambda: switches == ["unlocked", "locked"])


def test_shorter_unlock_never_shortens(factory: MockFactory) -> None:
    with Door(RELAY) as door:
        door.unlock(0.5)
        door.unlock(0.05)
        time.sleep(0.2)
        assert door.is_unlocked


def test_default_time_and_lock_cancels(factory: MockFactory) -> None:
    with Door(RELAY, unlock_seconds=0.2) as door:
        pin = factory.pin(RELAY)
        pin.clear_states()
        door.unlock()
        assert wait_for(lambda: not door.is_unlocked)
        assert_pulses(pin, [(0.0, False), (0.0, True), (0.2, False)])
        door.unlock(60)
        door.lock()
        assert not door.is_unlocked and pin.state is False


def test_active_low_relay(factory: MockFactory) -> None:
    with Door(RELAY, active_high=False) as door:
        pin = factory.pin(RELAY)
        assert pin.state is True  # locked = relay off = pin high on an active-low board
        pin.clear_states()
        door.unlock(0.2)
        assert pin.state is False
        assert wait_for(lambda: not door.is_unlocked)
        assert_pulses(pin, [(0.0, True), (0.0, False), (0.2, True)])
    assert pin.state is True


def test_close_locks_and_is_idempotent(factory: MockFactory) -> None:
    switches: list[str] = []
    door = Door(RELAY, on_switch=switches.append)
    pin = factory.pin(RELAY)
    door.unlock(60)
    assert pin.state is True
    door.close()
    door.close()
    assert pin.state is False
    assert not door.is_unlocked and door.closed
    assert door.unlock(1) is False
    assert pin.state is False
    assert switches == ["unlocked", "locked"]  # delivered before close() returned


def test_failing_callback_does_not_stop_relock(factory: MockFactory) -> None:
    def explode(state: str) -> None:
        raise RuntimeError(state)

    with Door(RELAY, on_switch=explode) as door:
        door.unlock(0.1)
        assert wait_for(lambda: not door.is_unlocked)


def test_held_open_alarm(factory: MockFactory) -> None:
    alarms: list[float] = []
    with Door(RELAY, contact_pin=CONTACT, held_open_seconds=0.2, on_held_open=alarms.append) as d:
        contact = factory.pin(CONTACT)
        contact.drive_low()  # reed switch closed: door shut
        assert d.is_open is False
        contact.drive_high()  # door opened ...
        assert d.is_open is True
        time.sleep(0.1)
        contact.drive_low()  # ... and shut in time: no alarm
        time.sleep(0.25)
        assert alarms == []
        contact.drive_high()  # opened and left open
        assert wait_for(lambda: alarms)
        time.sleep(0.3)
        assert len(alarms) == 1 and alarms[0] == pytest.approx(0.2, abs=0.1)
        contact.drive_low()
        assert d.is_open is False


def test_no_contact_means_unknown(factory: MockFactory) -> None:
    with Door(RELAY) as door:
        assert door.is_open is None


def test_exit_button_unlocks_and_reports(factory: MockFactory) -> None:
    exits: list[bool] = []
    switches: list[str] = []
    with Door(
        RELAY,
        exit_button_pin=EXIT,
        unlock_seconds=0.2,
        on_exit=lambda: exits.append(True),
        on_switch=switches.append,
    ) as door:
        button = factory.pin(EXIT)
        button.drive_low()
        assert door.is_unlocked
        button.drive_high()
        assert wait_for(lambda: exits == [True])
        assert wait_for(lambda: not door.is_unlocked)
        assert wait_for(lambda: switches == ["unlocked", "locked"])


def test_from_config(factory: MockFactory) -> None:
    from edge.config import DoorConfig

    cfg = DoorConfig(pin=5, active_high=False, unlock_seconds=0.2, exit_button_pin=6)
    with Door.from_config(cfg) as door:
        assert door.unlock_seconds == 0.2
        assert factory.pin(5).state is True
        factory.pin(6).drive_low()
        assert door.is_unlocked and factory.pin(5).state is False


def test_mock_factory_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    f = make_pin_factory()
    try:
        assert isinstance(f, MockFactory)
    finally:
        f.close()


@pytest.mark.skipif(_is_raspberry_pi(), reason="this machine has real GPIO")
def test_falls_back_to_mock_loudly_without_gpio(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    saved = Device.pin_factory
    Device.pin_factory = None
    try:
        with caplog.at_level(logging.WARNING, logger="edge.door"), Door(RELAY) as door:
            assert door.simulated
        assert "SIMULATED" in caplog.text
    finally:
        if Device.pin_factory is not None:
            Device.pin_factory.close()
        Device.pin_factory = saved


# -- fail-secure in a real process ---------------------------------------------------

CHILD = textwrap.dedent(
    """
    import signal, sys, threading, time
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPin

    mode, record = sys.argv[1], sys.argv[2]

    class RecordingPin(MockPin):
        # Writes each change of the relay pin the moment it happens.
        def _change_state(self, value):
            changed = super()._change_state(value)
            if changed and self.info.name == "GPIO17":
                with open(record, "a") as f:
                    f.write(f"{int(value)}\\n")
            return changed

    Device.pin_factory = MockFactory(pin_class=RecordingPin)
    from edge.door import Door, install_fail_secure

    stop = threading.Event()
    # Python's own SIGINT handler, as a terminal gives it: a child of a background
    # job (nohup, a CI runner) inherits SIGINT ignored, and then rightly stays up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if mode == "chain":
        signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    door = Door(17)
    install_fail_secure()
    door.unlock(60)
    print("unlocked", flush=True)
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "exit":
        sys.exit(0)
    stop.wait(30)
    # The daemon's own handler ran: the door is locked already and stays locked.
    print("after-signal", door.is_unlocked, door.unlock(5), flush=True)
    """
)


def run_child(tmp_path: Path, mode: str, sig: int | None) -> tuple[int, str, str, list[str]]:
    record = tmp_path / "relay.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GPIOZERO_PIN_FACTORY", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(record)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "unlocked"
    if sig is not None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, record.read_text().split()


def test_fail_secure_on_sigterm(tmp_path: Path) -> None:
    code, _, err, states = run_child(tmp_path, "sleep", signal.SIGTERM)
    assert states == ["1", "0"], err
    assert code == 128 + signal.SIGTERM


def test_fail_secure_on_sigint(tmp_path: Path) -> None:
    code, _, err, states = run_child(tmp_path, "sleep", signal.SIGINT)
    assert states == ["1", "0"], err
    assert "KeyboardInterrupt" in err
    assert code in (-signal.SIGINT, 128 + signal.SIGINT)


def test_fail_secure_on_unhandled_exception(tmp_path: Path) -> None:
    code, _, err, states = run_child(tmp_path, "raise", None)
    assert states == ["1", "0"], err
    assert "RuntimeError: boom" in err
    assert code == 1


def test_fail_secure_on_normal_exit(tmp_path: Path) -> None:
    code, _, err, states = run_child(tmp_path, "exit", None)
    assert states == ["1", "0"], err
    assert code == 0


def test_sigterm_locks_at_once_and_chains_to_daemon_handler(tmp_path: Path) -> None:
    code, out, err, states = run_child(tmp_path, "chain", signal.SIGTERM)
    assert "after-signal False False" in out, err
    assert states == ["1", "0"], err
    assert code == 0
