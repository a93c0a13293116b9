"""The OSDP reader against libosdp's own control panel (CP), in-process over a pseudo-terminal.

Secure channel up with the SCBK from a 0600 file, a grant arrives at the
panel as a card read with the person's number, and the panel's LED and output
commands come back (the LED on a MockFactory pin, the output on the relay).
"""

from __future__ import annotations

import os
import pty
import time
import tty

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge.cards import CardLookup, set_card
from edge.config import load_config
from edge.door import Door
from edge.errors import ConfigError
from edge.gallery import Gallery
from edge.osdp import OsdpOutput, ReaderLed, card_bytes, load_scbk
from edge.outputs import Grant, Outputs
from edge.wiegand import Card, decode, encode

from .conftest import wait_for

osdp = pytest.importorskip("osdp")

KEY = "000102030405060708090a0b0c0d0e0f"


class FdChannel(osdp.Channel):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, n):
        try:
            return os.read(self.fd, n)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf):
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self):
        pass


def bits_of(data: bytes, length: int) -> list[int]:
    return [int(b) for b in "".join(f"{x:08b}" for x in data)[:length]]


def osdp_site(site, tmp_path, device: str, **extra) -> object:
    key = tmp_path / "scbk"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    text = (site / "config.yaml").read_text()
    text = text.replace("  device: null", f"  device: {device}")
    text = text.replace("  address: 0 ", "  address: 7 ")
    text = text.replace("  scbk_file: null", f"  scbk_file: {key}")
    text = text.replace("  led_pin: null", "  led_pin: 12")
    (site / "config.yaml").write_text(text)
    return load_config(site / "config.yaml")


def test_card_bytes_pad_msb_first():
    assert card_bytes([1, 0, 1]) == bytes([0b10100000])
    bits = encode(Card(1, 2), 26)
    assert bits_of(card_bytes(bits), 26) == bits


def test_scbk_file_must_be_0600_and_16_bytes(site, tmp_path):
    cfg = osdp_site(site, tmp_path, "/dev/null")
    assert load_scbk(cfg) == bytes.fromhex(KEY)
    (tmp_path / "scbk").chmod(0o644)
    with pytest.raises(ConfigError, match="must be 0600"):
        load_scbk(cfg)
    (tmp_path / "scbk").chmod(0o600)
    (tmp_path / "scbk").write_text("abcd")
    with pytest.raises(ConfigError, match="32 hex digits"):
        load_scbk(cfg)


def test_a_grant_reaches_the_panel_and_its_commands_come_back(site, tmp_path):
    master, slave = pty.openpty()
    tty.setraw(master)
    cfg = osdp_site(site, tmp_path, os.ttyname(slave))
    db = cfg.path(cfg.gallery.db)
    with Gallery(db) as g:
        g.add_person("ada")
        pid = g.person("ada").id
        set_card(g, "ada", "33:4444", cfg.wiegand.format)
    factory = MockFactory()
    door = Door(17, pin_factory=factory, unlock_seconds=0.2)
    cp = osdp.ControlPanel([osdp.PDInfo(7, FdChannel(master), scbk=bytes.fromhex(KEY),
                                        flags=[osdp.LibFlag.EnforceSecure])],
                           log_level=osdp.LogLevel.Warning)
    out = OsdpOutput(cfg, CardLookup(db), door=door, pin_factory=factory)
    outputs = Outputs([out])
    assert outputs.waiting() == ["osdp"]  # no panel polls yet
    cp.start()
    try:
        assert cp.sc_wait_all(30), "secure channel did not come up"
        assert out.secure
        assert wait_for(lambda: outputs.waiting() == [], 20)
        out.grant(Grant("ada", pid, 0.0))
        ev = cp.get_event(7, 10)
        assert ev is not None and ev["event"] == osdp.Event.CardRead
        assert ev["format"] == osdp.CardFormat.Wiegand and ev["length"] == 26
        assert decode(bits_of(ev["data"], ev["length"])) == Card(33, 4444)

        # What a panel shows on a grant: green for a while (temporary), then the
        # permanent state again (off). Then a permanent green stays.
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 2,
               "on_count": 10, "off_count": 0, "on_color": osdp.CommandLEDColor.Green,
               "off_color": osdp.CommandLEDColor.Black, "timer_count": 5, "temporary": True}
        assert cp.submit_command(7, led)
        assert wait_for(lambda: factory.pin(12).state == 1, 20)
        assert wait_for(lambda: factory.pin(12).state == 0, 20)  # the timer ran out
        assert cp.submit_command(7, led | {"control_code": 1, "temporary": False})
        assert wait_for(lambda: len(out.commands) == 2, 20)
        assert wait_for(lambda: factory.pin(12).state == 1, 20)
        assert cp.submit_command(7, {"command": osdp.Command.Output, "output_no": 0,
                                     "control_code": 2, "timer_count": 0})
        assert wait_for(lambda: door.is_unlocked, 20)
        time.sleep(1.0)  # five times the door's own unlock time: the panel holds it
        assert door.is_unlocked
        assert cp.submit_command(7, {"command": osdp.Command.Output, "output_no": 0,
                                     "control_code": 1, "timer_count": 0})
        assert wait_for(lambda: not door.is_unlocked, 20)
        assert [c["command"] for c in out.commands] == [osdp.Command.LED, osdp.Command.LED,
                                                        osdp.Command.Output, osdp.Command.Output]
        assert factory.pin(12).state == 1  # the permanent green outlasts the output commands
    finally:
        cp.teardown()
        outputs.close()  # closes the reader too
        door.close()
        os.close(master)
        os.close(slave)
    assert [bool(s.state) for s in factory.pin(17).states] == [False, True, False]


def test_the_reader_led_flashes_and_goes_back_to_its_permanent_state():
    factory = MockFactory()
    led = ReaderLed(DigitalOutputDevice(13, pin_factory=factory), osdp.CommandLEDColor.Black)
    green, black = osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Black
    try:
        led.command({"control_code": 1, "temporary": False, "on_color": green,
                     "off_color": black, "on_count": 1, "off_count": 0})
        assert factory.pin(13).state == 1  # permanent steady green
        led.command({"control_code": 2, "temporary": True, "on_color": green,
                     "off_color": black, "on_count": 1, "off_count": 1, "timer_count": 20})
        assert wait_for(lambda: sum(not s.state for s in factory.pin(13).states) >= 3, 30)
        led.command({"control_code": 1, "temporary": True})  # cancel: permanent green again
        assert factory.pin(13).state == 1
    finally:
        led.close()
