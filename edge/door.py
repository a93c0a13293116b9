"""The door: a lock relay on a GPIO pin, with an optional door contact and exit button.

Reads like a gpiozero device. :class:`Door` wraps an ``OutputDevice`` whose
*off* state is *locked*, so a process that is closed, killed by a signal or
dies of an exception leaves the door locked (fail-secure). ``unlock(seconds)``
returns at once; a background thread re-locks when the time is up, and a
second unlock while open extends the time instead of pulsing twice.

Callbacks (``on_switch``, ``on_held_open``, ``on_exit``) are delivered in
order on the door's own event thread, never on the thread that drives the
relay: a slow callback (an event written to a busy database) can delay the
log, never the re-lock.

With no GPIO hardware (a laptop, CI) :func:`make_pin_factory` picks gpiozero's
``MockFactory`` and says so loudly in the log; ``$GPIOZERO_PIN_FACTORY`` is
always obeyed. On a Raspberry Pi whose GPIO cannot be opened it refuses
instead: a door controller that silently simulates its relay is worse than
one that fails to start.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from gpiozero import Device, DigitalInputDevice, OutputDevice
from gpiozero.exc import BadPinFactory
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from .errors import HardwareError

if TYPE_CHECKING:
    from .config import DoorConfig

__all__ = ["Door", "install_fail_secure", "make_pin_factory"]

log = logging.getLogger(__name__)

#: Every door not yet closed; locked on exit, on SIGTERM/SIGINT and on a crash.
_open_doors: weakref.WeakSet[Door] = weakref.WeakSet()
_JOIN_SECONDS = 2.0


def _is_raspberry_pi() -> bool:
    try:
        model = Path("/proc/device-tree/model").read_bytes()
    except OSError:
        return False
    return b"Raspberry Pi" in model


def make_pin_factory() -> Factory:
    """The pin factory a door on this machine should use.

    ``$GPIOZERO_PIN_FACTORY`` (e.g. ``lgpio``, ``mock``) is used as given. Otherwise
    gpiozero's own preference order is tried (lgpio first, which is also what a
    Pi 5 needs); if none loads and this is not a Raspberry Pi, a ``MockFactory``
    is returned with a loud warning that the relay is simulated.

    Raises :class:`HardwareError` when the named factory cannot be loaded, or
    when this is a Raspberry Pi and no real factory can open its GPIO.
    """
    name = os.environ.get("GPIOZERO_PIN_FACTORY")
    if name:
        try:
            return Device._default_pin_factory()
        except Exception as e:
            raise HardwareError(f"GPIOZERO_PIN_FACTORY={name}: {e}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return Device._default_pin_factory()
        except BadPinFactory:
            pass
    reasons = "; ".join(str(w.message) for w in caught) or "no factory loaded"
    if _is_raspberry_pi():
        raise HardwareError(
            f"cannot open the GPIO on this Raspberry Pi ({reasons}); "
            "install python3-lgpio and put the user in the gpio group"
        )
    log.warning(
        "NO GPIO HARDWARE: the door relay is SIMULATED (gpiozero MockFactory) and "
        "no door will open. Set GPIOZERO_PIN_FACTORY to choose a factory. (%s)",
        reasons,
    )
    return MockFactory()


class Door:
    """An electric lock on a relay, locked unless told otherwise.

    :param pin: GPIO (BCM number) driving the lock relay.
    :param active_high: True if driving the pin high energises the relay
        (unlocks); False for the common active-low relay boards.
    :param unlock_seconds: how long :meth:`unlock` and the exit button unlock for
        when no time is given.
    :param contact_pin: optional door contact (reed switch) to ground, closed
        while the door is shut; the pin uses the internal pull-up.
    :param held_open_seconds: after the door has stood open this long,
        ``on_held_open(seconds_open)`` is called once (an alarm event).
    :param exit_button_pin: optional request-to-exit button to ground; a press
        unlocks for ``unlock_seconds`` and calls ``on_exit()``.
    :param on_switch: called with ``"unlocked"`` or ``"locked"`` each time the
        relay switches, in order, on the door's event thread (extending an
        unlock is not a switch).
    :param on_held_open: see ``held_open_seconds``.
    :param on_exit: see ``exit_button_pin``.
    :param pin_factory: gpiozero pin factory; by default ``Device.pin_factory``,
        or :func:`make_pin_factory` when none is set yet.
    """

    def __init__(
        self,
        pin: int,
        *,
        active_high: bool = True,
        unlock_seconds: float = 3.0,
        contact_pin: int | None = None,
        held_open_seconds: float = 30.0,
        exit_button_pin: int | None = None,
        on_switch: Callable[[str], Any] | None = None,
        on_held_open: Callable[[float], Any] | None = None,
        on_exit: Callable[[], Any] | None = None,
        pin_factory: Factory | None = None,
    ) -> None:
        if unlock_seconds <= 0 or held_open_seconds <= 0:
            raise ValueError("unlock_seconds and held_open_seconds must be positive")
        if pin_factory is None and Device.pin_factory is None:
            Device.pin_factory = make_pin_factory()
        self.unlock_seconds = unlock_seconds
        self.held_open_seconds = held_open_seconds
        self._on_switch = on_switch
        self._on_held_open = on_held_open
        self._on_exit = on_exit
        self._cond = threading.Condition(threading.RLock())
        self._deadline: float | None = None  # monotonic time to re-lock at
        self._opened_at: float | None = None  # monotonic time the door opened
        self._alarm_sent = False
        self._reported = "locked"
        self._closed = False
        self._sealed = False  # set from a signal handler: never unlock again
        self._events: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None]
        self._events = queue.SimpleQueue()
        self._contact: DigitalInputDevice | None = None
        self._exit_button: DigitalInputDevice | None = None
        self._relay = OutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        try:
            if contact_pin is not None:
                self._contact = DigitalInputDevice(
                    contact_pin, pull_up=True, pin_factory=pin_factory
                )
                self._contact.when_activated = self._contact_changed
                self._contact.when_deactivated = self._contact_changed
                self._contact_changed()
            if exit_button_pin is not None:
                self._exit_button = DigitalInputDevice(
                    exit_button_pin, pull_up=True, bounce_time=0.05, pin_factory=pin_factory
                )
                self._exit_button.when_activated = self._exit_pressed
        except Exception:
            self._close_devices()
            raise
        self._monitor = threading.Thread(target=self._run_monitor, name="door-relock", daemon=True)
        self._delivery = threading.Thread(
            target=self._run_delivery, name="door-events", daemon=True
        )
        self._monitor.start()
        self._delivery.start()
        _open_doors.add(self)

    @classmethod
    def from_config(cls, config: DoorConfig, **kwargs: Any) -> Door:
        """A door wired as ``config`` says; ``kwargs`` are the callbacks and ``pin_factory``."""
        return cls(
            config.pin,
            active_high=config.active_high,
            unlock_seconds=config.unlock_seconds,
            contact_pin=config.contact_pin,
            held_open_seconds=config.held_open_seconds,
            exit_button_pin=config.exit_button_pin,
            **kwargs,
        )

    # -- the verbs ------------------------------------------------------------------

    def unlock(self, seconds: float | None = None) -> bool:
        """Unlock for ``seconds`` (default ``unlock_seconds``) and return at once.

        Unlocking an unlocked door extends the time to ``now + seconds`` if that
        is later; it never shortens it. Returns False, and leaves the door
        locked, once the door is closed or shutting down.
        """
        seconds = self.unlock_seconds if seconds is None else float(seconds)
        if not seconds > 0:
            raise ValueError(f"unlock seconds must be positive, got {seconds}")
        with self._cond:
            if self._closed or self._sealed:
                log.warning("door is %s; not unlocking", "closed" if self._closed else "stopping")
                return False
            until = monotonic() + seconds
            if self._deadline is None or until > self._deadline:
                self._deadline = until
            self._switch(True)
            self._cond.notify_all()
            return not self._sealed

    def lock(self) -> None:
        """Lock now, cancelling any pending unlock time."""
        with self._cond:
            self._deadline = None
            if not self._closed:
                self._switch(False)
            self._cond.notify_all()

    @property
    def is_unlocked(self) -> bool:
        """True while the relay is energised (the lock released)."""
        return not self._closed and bool(self._relay.value)

    @property
    def is_open(self) -> bool | None:
        """True if the door contact says the door stands open; None without a contact."""
        if self._contact is None or self._closed:
            return None
        return not self._contact.is_active

    @property
    def simulated(self) -> bool:
        """True when the relay is gpiozero's mock, i.e. no real door is driven."""
        return isinstance(self._relay.pin_factory, MockFactory)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run; a closed door is locked and stays so."""
        return self._closed

    def close(self) -> None:
        """Lock the door and release its pins and threads. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._deadline = None
            self._switch(False)
            self._closed = True
            self._cond.notify_all()
        _open_doors.discard(self)
        self._close_devices()
        if threading.current_thread() is not self._monitor:
            self._monitor.join(_JOIN_SECONDS)
        self._events.put(None)
        if threading.current_thread() is not self._delivery:
            self._delivery.join(_JOIN_SECONDS)

    def __enter__(self) -> Door:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return "<Door closed>"
        state = "unlocked" if self.is_unlocked else "locked"
        return f"<Door on {self._relay.pin!r}, {state}>"

    # -- internals ------------------------------------------------------------------

    def _switch(self, unlocked: bool) -> None:
        """Drive the relay and queue ``on_switch`` if the reported state changes.

        Called with the lock held. Also reports a lock that a signal handler
        made behind our back (see :meth:`_seal`).
        """
        if bool(self._relay.value) != unlocked:
            self._relay.value = unlocked
            if unlocked and self._sealed:  # a signal arrived mid-unlock
                self._relay.off()
        state = "unlocked" if self._relay.value else "locked"
        if state != self._reported:
            self._reported = state
            log.info("door %s", state)
            if self._on_switch is not None:
                self._events.put((self._on_switch, (state,)))

    def _seal(self) -> None:
        """Lock at once, from a signal handler or crash hook, and refuse to unlock again.

        Takes no lock (the interrupted thread may hold it); ``close`` reports the
        change to ``on_switch`` afterwards.
        """
        self._sealed = True
        with contextlib.suppress(Exception):  # closed already: nothing to release
            self._relay.off()

    def _run_monitor(self) -> None:
        """Re-lock when the unlock time is up; raise the held-open alarm when due."""
        with self._cond:
            while not self._closed:
                now = monotonic()
                wake: float | None = None
                if self._deadline is not None:
                    if now >= self._deadline:
                        self._deadline = None
                        self._switch(False)
                    else:
                        wake = self._deadline
                if self._opened_at is not None and not self._alarm_sent:
                    due = self._opened_at + self.held_open_seconds
                    if now >= due:
                        self._alarm_sent = True
                        log.warning("door held open for %.0f s", now - self._opened_at)
                        if self._on_held_open is not None:
                            self._events.put((self._on_held_open, (now - self._opened_at,)))
                    else:
                        wake = due if wake is None else min(wake, due)
                self._cond.wait(None if wake is None else max(0.0, wake - monotonic()))

    def _run_delivery(self) -> None:
        """Call queued callbacks in order; a failing callback is logged, not fatal."""
        while (item := self._events.get()) is not None:
            func, args = item
            try:
                func(*args)
            except Exception:
                log.exception("door callback %r failed", func)

    def _contact_changed(self) -> None:
        contact = self._contact
        if contact is None:
            return
        with self._cond:
            if contact.is_active:  # contact closed: the door is shut
                self._opened_at = None
            elif self._opened_at is None:
                self._opened_at = monotonic()
                self._alarm_sent = False
            self._cond.notify_all()

    def _exit_pressed(self) -> None:
        if self.unlock() and self._on_exit is not None:
            self._events.put((self._on_exit, ()))

    def _close_devices(self) -> None:
        for dev in (self._exit_button, self._contact):
            if dev is not None:
                dev.close()
        with contextlib.suppress(Exception):
            self._relay.off()
        self._relay.close()


def _close_all() -> None:
    for door in list(_open_doors):
        try:
            door.close()
        except Exception:
            log.exception("closing %r at exit failed", door)


def _seal_all() -> None:
    for door in list(_open_doors):
        door._seal()


# gpiozero registered its own atexit hook (which closes pins without switching
# them off) when it was imported above; hooks run last-registered first, so this
# one locks every door before gpiozero lets go of the pins.
atexit.register(_close_all)

_installed = False


def install_fail_secure() -> None:
    """Lock every door at once on SIGTERM, SIGINT and an unhandled exception.

    Normal exit is covered without this (doors lock in an ``atexit`` hook). Call
    it once from the main thread, *after* installing your own SIGTERM/SIGINT
    handlers: ours locks the doors, stops them unlocking again, then calls the
    handler it replaced (or exits with status 128+signal if there was none).
    Idempotent.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous_hook = sys.excepthook

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        _seal_all()
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    if threading.current_thread() is not threading.main_thread():
        log.warning("install_fail_secure() not called from the main thread: no signal handlers")
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _make_handler(signal.getsignal(signum)))


def _make_handler(previous: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        _seal_all()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    return handler
