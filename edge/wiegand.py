"""Wiegand reader output: a grant sends that person's card number to an access-control panel.

A Wiegand reader talks to a panel on two wires, D0 and D1, both idle high; a
0 bit is a short low pulse on D0, a 1 bit the same on D1, bits a few
milliseconds apart, most significant first. Two formats are common:

* 26-bit (H10301): even parity over the first 12 data bits, an 8-bit facility
  code, a 16-bit card number, odd parity over the last 12 data bits.
* 34-bit: even parity over the first 16 data bits, a 16-bit facility, a
  16-bit card number, odd parity over the last 16 data bits.

The pins are driven through gpiozero (lgpio on a Pi; MockFactory in tests). A
frame takes 26-34 intervals (about 70 ms at the 2 ms default); it is sent on
the Wiegand output's own worker thread (edge/outputs.py), never the frame loop.
Pulses are timed by busy-waiting on ``perf_counter`` (sleep is too coarse for
50 µs); the gaps between bits are slept, so the GIL is held only during pulses.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpiozero import DigitalOutputDevice

from .errors import ConfigError

if TYPE_CHECKING:
    from .cards import CardLookup
    from .config import WiegandConfig
    from .outputs import Grant

__all__ = ["FORMATS", "Card", "WiegandOutput", "decode", "encode", "parse_card"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    """A Wiegand frame layout: a parity bit, facility, card, a parity bit."""

    bits: int
    facility_bits: int
    card_bits: int

    @property
    def max_facility(self) -> int:
        return (1 << self.facility_bits) - 1

    @property
    def max_card(self) -> int:
        return (1 << self.card_bits) - 1


FORMATS = {26: Format(26, 8, 16), 34: Format(34, 16, 16)}


@dataclass(frozen=True)
class Card:
    facility: int
    number: int

    def __str__(self) -> str:
        return f"{self.facility}:{self.number}"


def parse_card(text: str, bits: int) -> Card:
    """``"FACILITY:CARD"`` checked against the ``bits``-bit format (ConfigError if not)."""
    fmt = FORMATS[bits]
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"card {text!r}: expected FACILITY:CARD, two whole numbers")
    facility, number = (int(p) for p in parts)
    if facility > fmt.max_facility:
        raise ConfigError(
            f"card {text!r}: facility {facility} does not fit the {bits}-bit format "
            f"(0-{fmt.max_facility})"
        )
    if number > fmt.max_card:
        raise ConfigError(
            f"card {text!r}: card number {number} does not fit the {bits}-bit format "
            f"(0-{fmt.max_card})"
        )
    return Card(facility, number)


def encode(card: Card, bits: int) -> list[int]:
    """The frame's bits, first sent first: even parity, facility, card, odd parity."""
    fmt = FORMATS[bits]
    if not (0 <= card.facility <= fmt.max_facility and 0 <= card.number <= fmt.max_card):
        raise ValueError(f"card {card} does not fit the {bits}-bit format")
    value = (card.facility << fmt.card_bits) | card.number
    n = fmt.facility_bits + fmt.card_bits
    data = [(value >> (n - 1 - i)) & 1 for i in range(n)]
    half = n // 2
    even = sum(data[:half]) % 2  # makes the first half plus this bit even
    odd = 1 - sum(data[half:]) % 2  # makes the second half plus this bit odd
    return [even, *data, odd]


def decode(frame: list[int]) -> Card:
    """The card a frame carries; ValueError if its length or parity is wrong (a panel's view)."""
    fmt = FORMATS.get(len(frame))
    if fmt is None:
        raise ValueError(f"{len(frame)} bits is not a known Wiegand format")
    data = frame[1:-1]
    half = len(data) // 2
    if (frame[0] + sum(data[:half])) % 2 != 0:
        raise ValueError("even parity (first bit) is wrong")
    if (frame[-1] + sum(data[half:])) % 2 != 1:
        raise ValueError("odd parity (last bit) is wrong")
    value = int("".join(map(str, data)), 2)
    return Card(value >> fmt.card_bits, value & fmt.max_card)


class WiegandOutput:
    """Sends the granted person's card on D0/D1. People without a card send nothing (logged)."""

    name = "wiegand"

    def __init__(self, cfg: WiegandConfig, cards: CardLookup, *, pin_factory: Any = None) -> None:
        if cfg.d0_pin == cfg.d1_pin:
            raise ConfigError("wiegand.d0_pin and wiegand.d1_pin must differ")
        self.cfg = cfg
        self.cards = cards
        self._lock = threading.Lock()
        # Active-low: idle (off) is high; on() pulls the line low for one bit.
        self._d0 = DigitalOutputDevice(
            cfg.d0_pin, active_high=False, initial_value=False, pin_factory=pin_factory
        )
        try:
            self._d1 = DigitalOutputDevice(
                cfg.d1_pin, active_high=False, initial_value=False, pin_factory=pin_factory
            )
        except Exception:
            self._d0.close()
            raise
        self.sent = 0

    def grant(self, g: Grant) -> None:
        card = self.cards.card(g.person_id) if g.person_id is not None else None
        if card is None:
            log.warning("wiegand: %s has no card number; nothing sent", g.name or "?")
            return
        self.send(encode(card, self.cfg.format))
        log.info("wiegand: sent card %s for %s", card, g.name)

    def send(self, bits: list[int]) -> None:
        """Pulse ``bits`` out, one every ``interval_ms``, each ``pulse_us`` long."""
        pulse = self.cfg.pulse_us / 1e6
        interval = self.cfg.interval_ms / 1e3
        with self._lock:
            # The pins themselves, not the devices' on()/off(): those also stop
            # blinks and take locks, Python work on the GIL 52 times a frame.
            d0, d1 = self._d0.pin, self._d1.pin
            for bit in bits:
                pin = d1 if bit else d0
                start = time.perf_counter()
                pin.state = 0  # active low: the pulse pulls the line down
                low = time.perf_counter()  # the pulse is timed from when the line went low
                while time.perf_counter() - low < pulse:
                    pass
                pin.state = 1
                # The gap is slept, not spun: a spinning thread holds the GIL and
                # would delay the frame loop. Panels accept a wide range (0.2-20 ms).
                rest = interval - (time.perf_counter() - start)
                if rest > 0:
                    time.sleep(rest)
            self.sent += 1

    def lock(self) -> None:
        """A reader does not lock anything: the panel does."""

    def close(self) -> None:
        with self._lock:
            for dev in (self._d0, self._d1):
                dev.close()
