"""Who may use the console: the login token, sessions, and CSRF tokens.

The token is given once, on the login page; the console answers with a
session cookie (HttpOnly, SameSite=Strict, Secure under TLS) whose value it
keeps only as a SHA-256, so looking a session up leaks nothing by timing.
Scripts send ``Authorization: Bearer TOKEN`` instead. Every write also needs
the CSRF token of its session (a form field ``csrf`` or an ``X-CSRF-Token``
header): a random one per session, and for Bearer callers one derived from
the token (``GET /api/session`` tells it). A session lasts while it is used
(:data:`IDLE_SECONDS`) and ends when the token is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from .token import TokenFile, same

COOKIE = "edge_console"
#: A session unused for this long has to log in again.
IDLE_SECONDS = 12 * 3600.0
#: At most this many live sessions; the oldest goes first.
MAX_SESSIONS = 64


@dataclass
class Session:
    """One logged-in browser (or a Bearer caller, ``bearer``)."""

    csrf: str
    token_digest: str  # of the token it logged in with: a rotation ends it
    last: float
    bearer: bool = False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Sessions:
    """The sessions of one console, checked against its token file."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, given: str) -> str | None:
        """A new session id when ``given`` is the token, else None."""
        token = self.tokens.token
        if not same(given.strip(), token):
            return None
        assert token is not None
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._by_digest) >= MAX_SESSIONS:
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].last)
                del self._by_digest[oldest]
            self._by_digest[_digest(sid)] = Session(secrets.token_urlsafe(32), _digest(token), now)
        return sid

    def logout(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._by_digest.pop(_digest(sid), None)

    def check(self, cookie: str | None, authorization: str | None) -> Session | None:
        """The caller's session: a Bearer token, or a live session cookie; None = not logged in."""
        token = self.tokens.token
        if token is None:
            return None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and same(value.strip(), token):
                return Session(self.bearer_csrf(token), _digest(token), time.monotonic(), True)
            return None
        if not cookie:
            return None
        now = time.monotonic()
        key = _digest(cookie)
        with self._lock:
            s = self._by_digest.get(key)
            if s is None:
                return None
            if now - s.last > IDLE_SECONDS or not same(s.token_digest, _digest(token)):
                del self._by_digest[key]
                return None
            s.last = now
            return s

    @staticmethod
    def bearer_csrf(token: str) -> str:
        """The CSRF token of Bearer callers: derived from the token, so scripts can ask for it."""
        return hmac.new(token.encode(), b"edge console csrf", hashlib.sha256).hexdigest()


def csrf_ok(session: Session, given: str | None) -> bool:
    return same(given, session.csrf)
