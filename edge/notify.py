"""Tell systemd how the daemon is doing: the ``sd_notify`` protocol in plain Python.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service; each message is
one datagram of ``KEY=value`` lines sent to that unix socket. ``READY=1`` ends
start-up, ``WATCHDOG=1`` proves the frame loop is alive (systemd restarts the
service when the pings stop for ``WatchdogSec=``), ``STATUS=`` is the line
``systemctl status`` shows. Outside systemd every call is a cheap no-op, so the
daemon can call these unconditionally. A failed send is logged, never raised:
a notification must not be what stops the door loop.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = logging.getLogger(__name__)
_warned = False


def _address(value: str) -> str | bytes:
    """The socket address in ``$NOTIFY_SOCKET``: a path, or ``@name`` for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(state: str) -> bool:
    """Send ``state`` (one or more ``KEY=value`` lines) to ``$NOTIFY_SOCKET``.

    Returns True when the datagram was sent, False when there is no socket to
    send to (not run by systemd) or the send failed (logged once as a warning).
    """
    global _warned
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    if not target.startswith(("/", "@")):
        # vsock: and other transports are for VMs; an appliance never gets one.
        log.debug("NOTIFY_SOCKET %r is not a unix socket; not notifying", target)
        return False
    try:
        # Never blocks: a unix datagram socket's queue holds a few messages
        # (net.unix.max_dgram_qlen, 10), and a full one would stop the door loop
        # in sendto, SIGTERM or not. A ping dropped there is sent again shortly.
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        ) as sock:
            sock.sendto(state.encode(), _address(target))
    except OSError as e:
        if not _warned:
            log.warning("cannot notify systemd at %s: %s", target, e)
            _warned = True
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Start-up is finished (``READY=1``), optionally with a status line."""
    return notify("READY=1" if status_text is None else f"READY=1\n{_status(status_text)}")


def watchdog() -> bool:
    """The main loop is alive (``WATCHDOG=1``); call at least every half interval."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Shutdown has begun (``STOPPING=1``), so systemd does not count it as a hang."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows (``STATUS=``)."""
    return notify(_status(text))


def reloading() -> bool:
    """A reload (SIGHUP) has begun: ``RELOADING=1`` with the ``MONOTONIC_USEC`` stamp.

    Send :func:`ready` when the new configuration is in force.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects :func:`watchdog`, or None without a watchdog.

    Read from ``$WATCHDOG_USEC``; ignored when ``$WATCHDOG_PID`` names another
    process (the variables were inherited, not meant for us). Ping at half this.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())
