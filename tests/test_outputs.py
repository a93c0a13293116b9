"""Door outputs: the relay behind one interface, a kiosk with none, Wiegand frames on MockFactory.

Wiegand frames are read back from the MockPins' own state histories: each
falling edge on D0 is a 0, on D1 a 1, put in order by the time it happened.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from edge.cards import CardLookup, set_card
from edge.config import WiegandConfig
from edge.errors import ConfigError
from edge.gallery import Gallery
from edge.outputs import Grant, Outputs
from edge.wiegand import FORMATS, Card, WiegandOutput, decode, encode, parse_card

from .conftest import FACES, wait_for
from .test_daemon import access_events, config, enroll_photos, folder_of, relay_states, run_daemon

PHOTO = FACES / "spoof/image_T1.jpg"


def falling_edges(pin) -> list[float]:
    """Absolute monotonic times at which ``pin`` went low (MockPin keeps deltas)."""
    deltas = [s.timestamp for s in pin.states]
    total = sum(deltas)
    times, acc = [], 0.0
    for s, d in zip(pin.states, deltas, strict=True):
        acc += d
        times.append((pin._last_change - (total - acc), s.state))
    return [t for (t, state), prev in zip(times[1:], pin.states, strict=False)
            if not state and prev.state]


def wiegand_bits(factory: MockFactory, cfg: WiegandConfig) -> list[int]:
    edges = [(t, 0) for t in falling_edges(factory.pin(cfg.d0_pin))]
    edges += [(t, 1) for t in falling_edges(factory.pin(cfg.d1_pin))]
    return [bit for _, bit in sorted(edges)]


@pytest.mark.parametrize("bits,card", [(26, Card(123, 45678)), (26, Card(0, 0)),
                                       (26, Card(255, 65535)), (34, Card(65535, 1)),
                                       (34, Card(4321, 60000))])
def test_frames_have_parity_and_decode_back(bits, card):
    frame = encode(card, bits)
    assert len(frame) == bits == FORMATS[bits].bits
    half = (bits - 2) // 2
    assert (frame[0] + sum(frame[1:1 + half])) % 2 == 0  # even parity leads
    assert (frame[-1] + sum(frame[1 + half:-1])) % 2 == 1  # odd parity ends
    assert decode(frame) == card
    broken = frame.copy()
    broken[5] ^= 1
    with pytest.raises(ValueError, match="parity"):
        decode(broken)


def test_the_26_bit_layout_is_h10301():
    # facility 1, card 1: 0 00000001 0000000000000001 0 -> parity bits 1 and 0.
    assert encode(Card(1, 1), 26) == [1, *[0] * 7, 1, *[0] * 15, 1, 0]


@pytest.mark.parametrize("text,bits,why", [
    ("256:1", 26, "facility 256"), ("1:65536", 26, "card number 65536"),
    ("65536:1", 34, "facility 65536"), ("12", 26, "FACILITY:CARD"),
    ("a:b", 26, "FACILITY:CARD"), ("-1:3", 26, "FACILITY:CARD")])
def test_bad_card_numbers_are_refused_by_format(text, bits, why):
    with pytest.raises(ConfigError, match=why):
        parse_card(text, bits)


@pytest.mark.parametrize("bits", [26, 34])
def test_pins_carry_the_frame_in_order(bits):
    factory = MockFactory()
    cfg = WiegandConfig(format=bits, d0_pin=5, d1_pin=6)
    out = WiegandOutput(cfg, CardLookup("/nonexistent"), pin_factory=factory)
    try:
        card = Card(200 if bits == 26 else 40000, 12345)
        out.send(encode(card, bits))
        got = wiegand_bits(factory, cfg)
        assert got == encode(card, bits) and decode(got) == card
        # Idle is high on both lines (states[0] is the MockPin's own before the
        # device set it), and each went back high after every pulse.
        for pin in (factory.pin(5), factory.pin(6)):
            assert pin.states[1].state and pin.state
            lows = [s for s in pin.states[1:] if not s.state]
            assert all(s.timestamp >= 0 for s in pin.states)
            assert len(lows) == sum(1 for b in got if b == (pin is factory.pin(6)))
            # The pulses are at least the configured width (never shorter).
            for i, s in enumerate(pin.states[2:], 2):
                if s.state and not pin.states[i - 1].state:
                    assert s.timestamp >= cfg.pulse_us / 1e6
        # Bits start one interval apart (a busy machine only makes gaps longer; one
        # pulse written late shortens the gap after it, hence the median).
        edges = sorted(falling_edges(factory.pin(5)) + falling_edges(factory.pin(6)))
        gaps = [b - a for a, b in itertools.pairwise(edges)]
        assert len(gaps) == bits - 1 and min(gaps) > 0
        assert statistics.median(gaps) >= cfg.interval_ms / 1e3 * 0.99
    finally:
        out.close()


def test_cards_are_stored_validated_and_audited(tmp_path):
    db = tmp_path / "g.db"
    with Gallery(db, actor="admin") as g:
        g.add_person("ada")
        pid = g.person("ada").id
        assert set_card(g, "ada", "12:3456", 26) == Card(12, 3456)
        with pytest.raises(ConfigError):
            set_card(g, "ada", "999:1", 26)
        with pytest.raises(Exception, match="no such person"):
            set_card(g, "bob", "1:1", 26)
        cards = [e for e in g.events() if e.kind == "card"]
    assert [e.detail for e in cards] == [{"card": "12:3456"}]
    assert CardLookup(db).card(pid) == Card(12, 3456)
    with Gallery(db) as g:
        set_card(g, "ada", None, 26)
    assert CardLookup(db).card(pid) is None


def test_edge_set_card_cli(site):
    def edge(*args):
        return subprocess.run(
            [sys.executable, "-m", "edge.cli", *args, "--config", str(site / "config.yaml"),
             "--db", str(site / "gallery.db")], capture_output=True, text=True)

    with Gallery(site / "gallery.db") as g:
        g.add_person("ada")
    ok = edge("set", "ada", "--card", "7:777")
    assert ok.returncode == 0 and "ada: card 7:777" in ok.stdout, ok.stderr
    bad = edge("set", "ada", "--card", "300:1")
    assert bad.returncode == 2 and "facility 300" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    with Gallery(site / "gallery.db") as g:
        assert CardLookup(site / "gallery.db").card(g.person("ada").id) == Card(7, 777)


class Recorder:
    name = "recorder"

    def __init__(self, block: threading.Event | None = None) -> None:
        self.got: list[Grant] = []
        self.locked = 0
        self.closed = False
        self.block = block

    def grant(self, g):
        if self.block is not None:
            self.block.wait(10)
        self.got.append(g)

    def lock(self):
        self.locked += 1

    def close(self):
        self.closed = True


def test_outputs_are_independent_and_drop_grants_on_close():
    slow_gate = threading.Event()
    slow, fast = Recorder(slow_gate), Recorder()
    slow.name = "slow"
    delivered = []
    outs = Outputs([slow, fast], on_delivered=lambda n, g, s: delivered.append(n))
    outs.grant(Grant("a", 1, 0.0))
    outs.grant(Grant("b", 2, 0.0))
    assert wait_for(lambda: len(fast.got) == 2)  # a stuck output holds up no other
    assert slow.got == []
    outs.lock()
    assert slow.locked == fast.locked == 1
    outs.close()
    slow_gate.set()
    assert slow.closed and fast.closed
    assert len(slow.got) <= 1  # the one in hand may finish; the queued one is dropped
    assert delivered.count("recorder") == 2


def test_kiosk_greets_and_logs_but_drives_nothing(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"}, door={"outputs": ()})
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    daemon, factory, speech = run_daemon(cfg, folder_of(tmp_path, "f", PHOTO, 10), tmp_path)
    assert daemon.door is None and daemon.outputs is not None and daemon.outputs.kiosk
    assert [e.decision for e in access_events(cfg)] == ["granted"]
    assert [t for t, _ in speech.spoken] == ["Welcome, her"]
    assert cfg.door.pin not in factory.pins


def test_a_grant_drives_relay_and_wiegand(site, tmp_path, engine):
    cfg = config(site, liveness={"mode": "off"}, door={"outputs": ("relay", "wiegand")})
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        set_card(g, "her", "42:4242", cfg.wiegand.format)
    _, factory, _ = run_daemon(cfg, folder_of(tmp_path, "f", PHOTO, 30), tmp_path)
    assert [e.decision for e in access_events(cfg)] == ["granted"]
    assert relay_states(factory, cfg.door.pin) == [False, True, False]
    assert decode(wiegand_bits(factory, cfg.wiegand)) == Card(42, 4242)


def test_doctor_says_kiosk(site):
    text = (site / "config.yaml").read_text()
    (site / "config.yaml").write_text(text.replace("outputs: [relay]", "outputs: []"))
    from edge.config import load_config
    from edge.doctor import check_outputs

    c = check_outputs(load_config(site / "config.yaml"))
    assert c.ok and "kiosk" in c.detail
