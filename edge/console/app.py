"""The console's routes: a Starlette app over the daemon, the gallery and the live feed.

Every route but ``/login`` and ``/static/`` needs a session (cookie or
Bearer; :mod:`edge.console.auth`); without one a page answers 401 with the
login form, anything else a bare 401. Every POST needs the session's CSRF
token. Gallery changes go through the same library calls as the CLI, on a
gallery opened with the actor ``console``, so each is audited as the
console's. Slow work (the gallery, enrollment, the doctor's checks) runs in
worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ..config import Config
from ..errors import ConfigError, EdgeError
from . import pages
from .auth import COOKIE, Session, Sessions, csrf_ok
from .camera import FeedSource
from .feed import Encoded, LiveFeed

#: The actor of every change made in the console, in the audit log.
ACTOR = "console"
STATIC = Path(__file__).parent / "static"
#: Rows of the events page (the CSV export has them all).
EVENTS_SHOWN = 300
#: A browser asking for the next frame waits this long before a 204.
FRAME_WAIT_SECONDS = 2.0
BOUNDARY = "edgeframe"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body as a dict (first value of each field)."""
    body = (await request.body())[:100_000].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


class ConsoleApp:
    """The routes and the state they share; :attr:`app` is the ASGI application."""

    def __init__(self, cfg: Config, db: Path, daemon: Any, feed: LiveFeed, sessions: Sessions,
                 tls: bool) -> None:
        self.cfg, self.db, self.daemon, self.feed = cfg, db, daemon, feed
        self.sessions = sessions
        self.tls = tls
        self._engine: Any = None
        self._engine_lock = threading.RLock()
        self._enrolling = threading.Lock()
        r = self._route
        self.app = Starlette(routes=[
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/static/{file}", self.static, methods=["GET"]),
            r("/", self.home), r("/live", self.live), r("/api/session", self.session_info),
            r("/live/frame.jpg", self.frame), r("/live/stream.mjpg", self.stream),
            r("/api/live", self.live_state), r("/people", self.people),
            r("/people/enroll", self.enroll_page), r("/api/enroll/quality", self.quality),
            r("/people/enroll", self.enroll, "POST"),
            r("/people/{name}/{action}", self.change, "POST"),
            r("/events", self.events), r("/events.csv", self.events_csv),
            r("/snapshots/{file}", self.snapshot), r("/health", self.health),
            r("/logout", self.logout, "POST"),
        ])

    # -- auth wrapper ------------------------------------------------------------

    def _route(self, path: str, handler: Handler, method: str = "GET") -> Route:
        async def endpoint(request: Request) -> Response:
            session = self.sessions.check(
                request.cookies.get(COOKIE), request.headers.get("authorization")
            )
            if session is None:
                if method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return self._html(pages.login(request.url.path, False), 401)
                return PlainTextResponse("login needed", 401, headers=HEADERS)
            if method == "POST":
                form = await _form(request)
                given = request.headers.get("x-csrf-token") or form.get("csrf")
                if not csrf_ok(session, given):
                    return PlainTextResponse("CSRF token missing or wrong", 403, headers=HEADERS)
                request.state.form = form
            return await handler(request, session)

        return Route(path, endpoint, methods=[method])

    @staticmethod
    def _html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status, headers=HEADERS)

    def _done(self, request: Request, where: str, ok: bool, text: str, status: int = 200,
              **data: Any) -> Response:
        """The answer to a write: JSON for scripts, else back to ``where`` with the message."""
        if _wants_json(request):
            return JSONResponse({"ok": ok, "message": text, **data}, status if ok else 400,
                                headers=HEADERS)
        key = "message" if ok else "error"
        return RedirectResponse(f"{where}?{key}={quote(text)}", 303, headers=HEADERS)

    # -- login ---------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self._html(pages.login(request.query_params.get("next", "/live"), False))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        sid = self.sessions.login(form.get("token", ""))
        target = form.get("next", "/live")
        if not target.startswith("/") or target.startswith("//"):
            target = "/live"
        if sid is None:
            await asyncio.sleep(1.0)  # a guesser gets one try a second per connection
            return self._html(pages.login(target, True), 401)
        resp = RedirectResponse(target, 303, headers=HEADERS)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=self.tls, path="/")
        return resp

    async def logout(self, request: Request, session: Session) -> Response:
        self.sessions.logout(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", 303, headers=HEADERS)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def session_info(self, request: Request, session: Session) -> Response:
        return JSONResponse({"csrf": session.csrf, "bearer": session.bearer}, headers=HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in ("console.js", "console.css"):
            return PlainTextResponse("not found", 404)
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    # -- live ------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse("/live", 303)

    async def live(self, request: Request, session: Session) -> Response:
        return self._html(pages.live(session.csrf))

    @staticmethod
    def _frame_headers(enc: Encoded) -> dict[str, str]:
        return {"X-Frame-Seq": str(enc.seq), "X-Frame-Index": str(enc.index),
                "X-Capture-Time": f"{enc.captured:.6f}", "X-Faces": enc.faces_json()}

    async def frame(self, request: Request, session: Session) -> Response:
        """The next JPEG after ``?after=SEQ`` (waits up to 2 s; 204 if none came)."""
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return PlainTextResponse("after: a frame number", 400)
        enc = await anyio.to_thread.run_sync(self.feed.wait_next, after, FRAME_WAIT_SECONDS)
        if enc is None:
            return Response(status_code=204, headers=HEADERS)
        return Response(enc.jpeg, 200, media_type="image/jpeg",
                        headers=HEADERS | self._frame_headers(enc))

    async def stream(self, request: Request, session: Session) -> Response:
        """MJPEG: every encoded frame as one part, with its capture time in the part's headers."""
        feed = self.feed

        async def parts() -> Any:
            seq = 0
            while not feed.closed:
                enc = await anyio.to_thread.run_sync(feed.wait_next, seq, 1.0)
                if enc is None:
                    continue
                seq = enc.seq
                head = "".join(f"{k}: {v}\r\n" for k, v in self._frame_headers(enc).items())
                top = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(enc.jpeg)}\r\n{head}\r\n")
                yield top.encode() + enc.jpeg + b"\r\n"

        kind = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        return StreamingResponse(parts(), media_type=kind, headers=HEADERS)

    async def live_state(self, request: Request, session: Session) -> Response:
        d = self.daemon
        w = list(d._fps_window)
        fps = (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0
        lat = list(d.latency_ms)[-30:]
        decisions = [asdict(x) for x in list(d.decisions.copy())[-10:]][::-1]
        return JSONResponse({
            "fps": round(fps, 1),
            "latency_ms": round(sorted(lat)[len(lat) // 2], 1) if lat else None,
            "camera": d.grabber.state if d.grabber is not None else None,
            "frames": d.frames, "decisions": decisions,
            "encoded_frames": self.feed.encoded_frames,
        }, headers=HEADERS)

    # -- people ----------------------------------------------------------------------

    def _gallery(self, create: bool = False) -> Any:
        from ..gallery import open_gallery

        return open_gallery(self.cfg, self.db, ACTOR, create=create)

    def _people(self) -> tuple[list[Any], set[str]]:
        from ..reembed import configured_model_id, coverage

        with self._gallery() as g:
            return g.people(), set(coverage(g, configured_model_id(self.cfg)).needs_reenrollment)

    async def people(self, request: Request, session: Session) -> Response:
        rows, stale = await anyio.to_thread.run_sync(self._people)
        if _wants_json(request):
            return JSONResponse([p.__dict__ for p in rows], headers=HEADERS)
        q = request.query_params
        return self._html(pages.people(rows, stale, session.csrf, q.get("message"), q.get("error")))

    def _change(self, name: str, action: str) -> str:
        with self._gallery() as g:
            if action == "remove":
                n = g.remove(name)
                return f"{name}: removed ({n} template(s))"
            g.set_active(name, action == "enable")
            return f"{name}: {action}d"

    async def change(self, request: Request, session: Session) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        form = request.state.form
        if action not in ("enable", "disable", "remove"):
            return PlainTextResponse("no such change", 404)
        if action == "remove" and form.get("confirm") != name:
            return self._done(request, "/people", False, f"{name}: removal not confirmed")
        try:
            text = await anyio.to_thread.run_sync(self._change, name, action)
        except EdgeError as err:
            return self._done(request, "/people", False, str(err))
        return self._done(request, "/people", True, text)

    def engine(self) -> Any:
        """The console's own engine (the frame loop's interpreters are the loop's alone)."""
        with self._engine_lock:
            if self._engine is None:
                from ..engine import Engine

                self._engine = Engine(self.cfg)
            return self._engine

    async def enroll_page(self, request: Request, session: Session) -> Response:
        return self._html(pages.enroll(session.csrf, self.cfg.enroll.camera_frames,
                                       request.query_params.get("error")))

    def _quality(self) -> dict[str, Any] | None:
        import hashlib

        from ..enroll import quality
        from ..image import Image

        frame = self.feed.newest_frame(None, 2.0)
        if frame is None:
            return None
        sha = hashlib.sha256(frame.image.tobytes()).hexdigest()
        with self._engine_lock:
            q = quality(self.engine(), Image(frame.image, f"frame {frame.index}", sha))
        return q.as_dict() | {"frame": frame.index}

    async def quality(self, request: Request, session: Session) -> Response:
        q = await anyio.to_thread.run_sync(self._quality)
        if q is None:
            return JSONResponse({"found": False, "ok": False, "reason": "no frame from the camera"},
                                503, headers=HEADERS)
        return JSONResponse(q, headers=HEADERS)

    def _enroll(self, name: str, display: str | None, frames: int, force: bool) -> Any:
        from ..enroll import enroll_from_camera

        if not self._enrolling.acquire(blocking=False):
            raise EdgeError("another enrollment is under way")
        try:
            with self._engine_lock:
                return enroll_from_camera(self.engine(), lambda: self._gallery(create=True),
                                          FeedSource(self.feed), name, frames, display,
                                          force=force)
        finally:
            self._enrolling.release()

    async def enroll(self, request: Request, session: Session) -> Response:
        form = request.state.form
        name = form.get("name", "").strip()
        try:
            frames = int(form.get("frames") or self.cfg.enroll.camera_frames)
            if not 1 <= frames <= 50:
                raise ValueError
        except ValueError:
            return self._done(request, "/people/enroll", False, "frames: a number from 1 to 50")
        display = form.get("display_name", "").strip() or None
        try:
            r = await anyio.to_thread.run_sync(
                self._enroll, name, display, frames, form.get("force") == "1")
        except EdgeError as err:
            return self._done(request, "/people/enroll", False, str(err))
        text = f"{name}: {r.added} template(s) added" + (
            f", {r.skipped_duplicates} already enrolled" if r.skipped_duplicates else "")
        return self._done(request, "/people", True, text, added=r.added)

    # -- events ------------------------------------------------------------------------

    def _events(self, q: dict[str, str]) -> list[Any]:
        from ..audit import check_kind
        from ..records import iso_time

        since = q.get("since") or None
        until = iso_time(q["until"], "until") if q.get("until") else None
        person = (q.get("person") or "").strip().lower()
        with self._gallery() as g:
            kind = check_kind(g, q["kind"]) if q.get("kind") else None
            rows = g.events(since=since, kind=kind)
        return [r for r in rows
                if (until is None or r.ts <= until)
                and (not person or (r.name or "").lower() == person)]

    @staticmethod
    def _query(request: Request) -> dict[str, str]:
        return {k: request.query_params.get(k, "") for k in ("kind", "person", "since", "until")}

    def _snapshots(self, rows: list[Any]) -> tuple[dict[int, str], list[Any]]:
        """Each refusal's snapshot (kept within 3 s of its event), and all snapshots kept."""
        from ..snapshots import configured_store

        store = configured_store(self.cfg)
        snaps = store.snapshots() if store is not None else []
        found: dict[int, str] = {}
        for r in rows:
            if r.kind != "access" or r.decision != "denied" or not snaps:
                continue
            t = datetime.fromisoformat(r.ts.replace("Z", "+00:00")).timestamp()
            best = min(snaps, key=lambda s: abs(s.t_wall - t))
            if abs(best.t_wall - t) < 3.0:
                found[r.id] = best.path.name
        return found, snaps

    async def events(self, request: Request, session: Session) -> Response:
        q = self._query(request)
        try:
            rows = await anyio.to_thread.run_sync(self._events, q)
        except (ConfigError, EdgeError) as err:
            return self._html(pages.layout("events", "Events", "", session.csrf, error=str(err)),
                              400)
        shown = rows[-EVENTS_SHOWN:][::-1]
        snaps, all_snaps = await anyio.to_thread.run_sync(self._snapshots, shown)
        if _wants_json(request):
            return JSONResponse([r.__dict__ for r in shown], headers=HEADERS)
        from ..audit import KINDS

        return self._html(pages.events(shown, KINDS, q, snaps, all_snaps, session.csrf, len(rows)))

    async def events_csv(self, request: Request, session: Session) -> Response:
        try:
            rows = await anyio.to_thread.run_sync(self._events, self._query(request))
        except (ConfigError, EdgeError) as err:
            return PlainTextResponse(str(err), 400, headers=HEADERS)
        buf = io.StringIO()
        cols = ["id", "ts", "kind", "name", "decision", "similarity", "liveness", "reason",
                "actor", "detail"]
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            d = r.__dict__ | {"detail": json.dumps(r.detail, ensure_ascii=False)
                              if r.detail is not None else ""}
            w.writerow(["" if d[c] is None else d[c] for c in cols])
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(buf.getvalue(), 200, media_type="text/csv; charset=utf-8", headers=HEADERS
                        | {"Content-Disposition": f'attachment; filename="events-{stamp}.csv"'})

    async def snapshot(self, request: Request, session: Session) -> Response:
        from ..snapshots import configured_store, parse

        store = configured_store(self.cfg)
        name = request.path_params["file"]
        if store is None or "/" in name or name.startswith("."):
            return PlainTextResponse("not found", 404)
        path = store.folder / name
        if parse(path) is None or not path.is_file():
            return PlainTextResponse("not found", 404)
        return FileResponse(path, media_type="image/jpeg", headers=HEADERS)

    # -- health --------------------------------------------------------------------------

    def _health(self) -> tuple[dict[str, Any], list[Any], str]:
        from ..doctor import Check, run_checks

        status = self.daemon.status()
        checks = run_checks(self.cfg, self.db, camera=False)
        g = self.daemon.grabber
        state = g.state if g is not None else "not started"
        checks.insert(2, Check("camera", state == "streaming" or state == "ended",
                               f"{self.daemon._source_name()}: {state} (the daemon's)"))
        return status, checks, self._metrics()

    def _metrics(self) -> str:
        m = self.daemon.metrics
        if m is not None:
            import prometheus_client as pc

            return str(pc.generate_latest(m.registry).decode())
        d = self.daemon
        fm, lat = sorted(d.frame_ms), sorted(d.latency_ms)

        def pct(xs: list[float], p: float) -> str:
            return f"{xs[min(len(xs) - 1, int(p * len(xs)))]:.1f}" if xs else "-"

        return (f"(metrics.listen is off: the daemon's own figures, last {len(fm)} frames)\n"
                f"frames {d.frames}\nfailed_frames {d.failed_frames}\n"
                f"frame_ms median {pct(fm, 0.5)} p99 {pct(fm, 0.99)}\n"
                f"capture_to_done_ms median {pct(lat, 0.5)} p99 {pct(lat, 0.99)}\n"
                f"decisions {dict(d.counts)}\nconsole frames encoded {self.feed.encoded_frames}")

    async def health(self, request: Request, session: Session) -> Response:
        status, checks, metrics = await anyio.to_thread.run_sync(self._health)
        if _wants_json(request):
            return JSONResponse({"status": status, "checks": [c.__dict__ for c in checks],
                                 "metrics": metrics}, headers=HEADERS)
        return self._html(pages.health(status, checks, metrics, session.csrf))

