"""OSDP reader output (a PD on RS-485): grants reported to the panel as card reads.

With ``osdp`` in ``door.outputs`` edge-access is an OSDP reader at
``osdp.address`` on ``osdp.device`` (an RS-485 HAT's UART) at ``osdp.baud``.
libosdp (its Python bindings, imported only then) runs the protocol. Its own
refresh thread would wake every 20 ms whatever happens; ours
(:meth:`_Serial.wait`) blocks in ``select`` until the panel's bytes arrive
(or :data:`IDLE_SECONDS` pass, for libosdp's timers), so the reader answers a
poll as soon as it is on the line and otherwise leaves the GIL to the frame loop.

* Secure channel: with the SCBK (16 bytes, 32 hex digits) from the systemd
  credential ``osdp-scbk`` or ``osdp.scbk_file`` (which must be mode 0600),
  the channel is enforced; without one the line is plain (logged loudly).
* A grant sends that person's card (``edge set NAME --card``, laid out as
  ``wiegand.format``) as a raw Wiegand card read.
* The panel's LED and buzzer commands are logged; the LED drives
  ``osdp.led_pin`` when set, temporary states (with their timer) over the
  permanent one, steady or flashing (:class:`ReaderLed`). Its output
  commands drive the door relay, when there is one: permanent on holds it
  unlocked until off (at most :data:`PANEL_HOLD_SECONDS`), timed on unlocks
  for the panel's timer, off locks.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import termios
import threading
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, HardwareError
from .wiegand import encode

if TYPE_CHECKING:
    from .cards import CardLookup
    from .outputs import Grant

__all__ = ["OsdpOutput", "ReaderLed", "card_bytes", "load_scbk"]

log = logging.getLogger(__name__)

#: A panel's "permanent on" holds the relay until its "off", but never longer
#: than this (a panel gone silent must not leave the door open for good).
PANEL_HOLD_SECONDS = 12 * 3600.0
#: Longest the refresh thread sleeps while the line is silent (libosdp's timers).
IDLE_SECONDS = 0.1
#: Bytes of the shortest OSDP packet: after the first byte of one arrives, the
#: refresh waits as long as the rest takes on the wire instead of waking per byte.
MIN_PACKET = 8

_BAUDS = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400,
          57600: termios.B57600, 115200: termios.B115200}


def card_bytes(bits: list[int]) -> bytes:
    """Wiegand bits packed most significant first, the last byte padded with zeros."""
    padded = bits + [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, padded[i:i + 8])), 2) for i in range(0, len(padded), 8))


def load_scbk(cfg: Any) -> bytes | None:
    """The secure channel base key: credential ``osdp-scbk``, else ``osdp.scbk_file``, else None."""
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    path: Path | None = None
    if cred and (Path(cred) / "osdp-scbk").is_file():
        path = Path(cred) / "osdp-scbk"
    elif cfg.osdp.scbk_file is not None:
        path = cfg.path(cfg.osdp.scbk_file)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as e:
            raise ConfigError(f"osdp.scbk_file {path}: cannot read ({e.strerror})") from None
        if mode & 0o077:
            raise ConfigError(f"osdp.scbk_file {path}: mode {oct(mode)}, must be 0600")
    if path is None:
        return None
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ConfigError(f"{path}: the SCBK must be 32 hex digits (16 bytes)")
    return key


class _Serial:
    """The serial line as libosdp's Channel: raw, non-blocking, at the configured speed."""

    def __init__(self, device: str, baud: int) -> None:
        self.read_bytes = 0
        self.gather = MIN_PACKET * 10 / baud  # 10 bits a byte on the wire
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise HardwareError(f"osdp.device {device}: cannot open ({e.strerror})") from None
        try:
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[4] = attrs[5] = _BAUDS[baud]
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except termios.error as e:
            os.close(self.fd)
            raise HardwareError(f"osdp.device {device}: not a serial line ({e})") from None

    def read(self, max_bytes: int) -> bytes:
        try:
            data = os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""
        self.read_bytes += len(data)
        return data

    def wait(self, timeout: float) -> bool:
        """Block (GIL released) until bytes can be read or ``timeout`` passes; True if readable."""
        try:
            readable = bool(select.select([self.fd], [], [], timeout)[0])
        except (OSError, ValueError):  # closed under us: the refresh loop is stopping
            time.sleep(timeout)
            return False
        if readable:
            time.sleep(self.gather)  # the rest of a packet, not one wake-up per byte
        return readable

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.fd)


class ReaderLed:
    """The reader's LED as the panel's LED commands set it (osdp.led_pin; none: just kept).

    OSDP gives each LED a permanent state and, on top of it, a temporary one
    with a timer (what a panel shows on a grant: green for a second or two),
    after which the permanent state shows again. A state is an on colour for
    ``on_count`` and an off colour for ``off_count`` (units of 100 ms): steady
    when the two look the same or one time is zero, else flashing. A GPIO LED
    has one colour: lit is any colour but black.
    """

    def __init__(self, device: Any, black: int) -> None:
        self.device = device
        self._black = black
        self._lock = threading.Lock()
        self.permanent: tuple[bool, bool, float, float] = (False, False, 0.0, 0.0)
        self._timer: threading.Timer | None = None

    def command(self, cmd: dict[str, Any]) -> None:
        code = cmd.get("control_code", 0)
        state = (cmd.get("on_color", self._black) != self._black,
                 cmd.get("off_color", self._black) != self._black,
                 cmd.get("on_count", 0) / 10, cmd.get("off_count", 0) / 10)
        with self._lock:
            if cmd.get("temporary"):
                if code in (1, 2):  # 1: cancel the temporary state, 2: show it for the timer
                    self._cancel()
                if code == 1:
                    self._show(self.permanent)
                elif code == 2:
                    self._show(state)
                    seconds = cmd.get("timer_count", 0) / 10
                    if seconds > 0:
                        self._timer = threading.Timer(seconds, self._expire)
                        self._timer.daemon = True
                        self._timer.start()
            elif code == 1:  # set the permanent state (shown unless a temporary one runs)
                self.permanent = state
                if self._timer is None:
                    self._show(state)

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            self._show(self.permanent)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _show(self, state: tuple[bool, bool, float, float]) -> None:
        if self.device is None:
            return
        on_lit, off_lit, on_s, off_s = state
        if on_lit == off_lit or on_s <= 0 or off_s <= 0:
            self.device.value = on_lit if on_s > 0 or off_s <= 0 else off_lit
        elif on_lit:
            self.device.blink(on_time=on_s, off_time=off_s)
        else:
            self.device.blink(on_time=off_s, off_time=on_s)

    def close(self) -> None:
        with self._lock:
            self._cancel()
        if self.device is not None:
            self.device.close()


def _reader_class(osdp: Any) -> Any:
    """libosdp's PeripheralDevice with a refresh loop that sleeps until the line has bytes.

    Its ``start``/``stop``/``submit_event`` (and their lock) are kept as they
    are; only the thread's loop differs.
    """

    class Reader(osdp.PeripheralDevice):
        def __init__(self, serial: _Serial, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self._line = serial

        def refresh(self, event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
            line = self._line
            while not event.is_set():
                readable = line.wait(IDLE_SECONDS)
                before = line.read_bytes
                with lock:
                    ctx.refresh()
                if readable and line.read_bytes == before:
                    # Bytes waiting that libosdp did not take (e.g. it is backing
                    # off after an error): do not spin on a readable line.
                    event.wait(IDLE_SECONDS)

    return Reader


class OsdpOutput:
    """An OSDP PD: reports grants as card reads and follows the panel's commands."""

    name = "osdp"

    def __init__(
        self,
        cfg: Any,
        cards: CardLookup,
        *,
        door: Any = None,
        pin_factory: Any = None,
        on_command: Any = None,
    ) -> None:
        import osdp

        o = cfg.osdp
        if o.device is None:
            raise ConfigError("osdp.device: set it to the RS-485 serial device (e.g. /dev/ttyAMA0)")
        self.bits = cfg.wiegand.format
        self.cards = cards
        self.door = door
        self._on_command = on_command
        self.commands: list[dict[str, Any]] = []
        self._osdp = osdp
        scbk = load_scbk(cfg)
        self._keyed = scbk is not None
        if scbk is None:
            log.warning("osdp: no SCBK (osdp.scbk_file or credential osdp-scbk): "
                        "the line to the panel is NOT encrypted")
        led: Any = None
        if o.led_pin is not None:
            from gpiozero import DigitalOutputDevice

            led = DigitalOutputDevice(o.led_pin, pin_factory=pin_factory)
        self._led = ReaderLed(led, osdp.CommandLEDColor.Black)
        self._serial = _Serial(str(o.device), o.baud)
        Cap = osdp.Capability
        caps = osdp.PDCapabilities([
            (Cap.CardDataFormat, 1, 1), (Cap.LEDControl, 1, 1), (Cap.AudibleControl, 1, 1),
            (Cap.OutputControl, 1, 1), (Cap.CommunicationSecurity, 1 if scbk else 0, 1)])
        channel = type("EdgeChannel", (osdp.Channel,), {
            "read": lambda _s, n: self._serial.read(n),
            "write": lambda _s, b: self._serial.write(b),
            "flush": lambda _s: None,
        })()
        flags = [osdp.LibFlag.EnforceSecure] if scbk else []
        info = osdp.PDInfo(o.address, channel, scbk=scbk, flags=flags, name="edge-access")
        self.pd = _reader_class(osdp)(self._serial, info, caps, log_level=osdp.LogLevel.Warning)
        self.pd.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._commands, name="osdp-commands", daemon=True)
        self._thread.start()
        log.info("osdp: reader at address %d on %s, %d baud", o.address, o.device, o.baud)

    @property
    def secure(self) -> bool:
        return bool(self.pd.is_sc_active())

    @property
    def ready(self) -> bool:
        """True once the panel polls this reader (over the secure channel, when keyed).

        Until then a card read waits in libosdp's queue: the panel gets it with
        its first poll.
        """
        return bool(self.pd.is_online()) and (self.secure or not self._keyed)

    def grant(self, g: Grant) -> None:
        card = self.cards.card(g.person_id) if g.person_id is not None else None
        if card is None:
            log.warning("osdp: %s has no card number; nothing reported", g.name or "?")
            return
        bits = encode(card, self.bits)
        ev = {"event": self._osdp.Event.CardRead, "reader_no": 0,
              "format": self._osdp.CardFormat.Wiegand, "direction": 0,
              "length": len(bits), "data": card_bytes(bits)}
        if not self.pd.submit_event(ev):
            raise HardwareError("osdp: the card read could not be queued for the panel")
        log.info("osdp: reported card %s for %s", card, g.name)

    def _commands(self) -> None:
        while not self._stop.is_set():
            cmd = self.pd.get_command(0.5)
            if cmd is None:
                continue
            try:
                self._follow(cmd)
            except Exception:
                log.exception("osdp: command %r not followed", cmd)

    def _follow(self, cmd: dict[str, Any]) -> None:
        C = self._osdp.Command
        kind = cmd.get("command")
        self.commands.append(cmd)
        if kind == C.LED:
            log.info("osdp: panel LED %s", cmd)
            self._led.command(cmd)
        elif kind == C.Buzzer:
            log.info("osdp: panel buzzer (%s)", cmd)
        elif kind == C.Output:
            code = cmd.get("control_code")
            log.info("osdp: panel output %s code %s", cmd.get("output_no"), code)
            if self.door is not None:
                if code in (2, 4):  # permanent on: held until the panel says off
                    self.door.unlock(PANEL_HOLD_SECONDS)
                elif code == 5:  # temporary on, timer in units of 100 ms
                    self.door.unlock(max(0.1, cmd.get("timer_count", 0) / 10))
                elif code in (1, 3, 6):  # off
                    self.door.lock()
        if self._on_command is not None:
            self._on_command(cmd)

    def lock(self) -> None:
        """The panel owns the lock; nothing to do here."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.pd.teardown()
        self._serial.close()
        self._led.close()
