"""The console's web server: uvicorn on its own thread inside the daemon.

The listening socket is bound here, before the thread starts, so a port in
use or a bad address is refused at start-up with one line (and port 0 gets
an ephemeral port, which :attr:`Console.url` then names). TLS, required off
this machine (:class:`edge.config.ConsoleConfig`), is loaded before the
thread starts too: an unreadable certificate is a start-up error, not a
silent thread's death.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from .auth import Sessions
from .feed import LiveFeed
from .token import TokenFile, token_path

log = logging.getLogger("edge.console")

#: On shutdown, open streams get this long to finish before they are cut.
GRACE_SECONDS = 1


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except (OSError, OverflowError) as e:
        sock.close()
        why = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"console.listen {listen}: cannot listen ({why})") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class Console:
    """The live feed, the app and its server, for one daemon. :meth:`close` stops them."""

    def __init__(self, cfg: Config, db: Path, daemon: Any) -> None:
        import uvicorn

        from .app import ConsoleApp

        c = cfg.console
        assert c.listen is not None
        self.tokens = TokenFile(token_path(cfg, db))
        tls = c.tls_cert is not None
        self.sock = _bind(c.listen)
        recent = (lambda: daemon.decisions.copy()) if daemon is not None else None
        self.feed = LiveFeed(cfg, recent)
        self.app = ConsoleApp(cfg, db, daemon, self.feed, Sessions(self.tokens), tls)
        config = uvicorn.Config(
            self.app.app, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACE_SECONDS,
            ssl_certfile=str(cfg.path(c.tls_cert)) if c.tls_cert else None,
            ssl_keyfile=str(cfg.path(c.tls_key)) if c.tls_key else None,
        )
        try:
            config.load()
        except (OSError, ValueError) as e:
            self.sock.close()
            self.feed.close()
            raise ConfigError(
                f"console TLS: cannot load {c.tls_cert} / {c.tls_key} ({e})"
            ) from None
        self.server = uvicorn.Server(config)
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{port}/"
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="console", daemon=True
        )
        self._thread.start()
        log.info("console on %s (token: edge console token)", self.url)

    def close(self) -> None:
        self.feed.close()
        self.server.should_exit = True
        self._thread.join(GRACE_SECONDS + 3.0)
        self.sock.close()
