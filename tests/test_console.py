"""The console's routes on a real daemon: `edge run --console` on a looped folder of real photos.

Auth (401 without the token, login → cookie, Bearer, CSRF refused, rotation
ends sessions), the live stream (JPEG frames whose boxes are where the faces
are), enrollment from the daemon's camera end to end (the person then
listed by `edge list` in another process), disable/enable/remove audited
as the console, the events filter and its CSV, health. The browser's view of
the same pages is tests/test_console_browser.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from edge.bench import camera_frame
from edge.detect import iou
from edge.image import read_image

from .conftest import PEOPLE, ROOT
from .console_site import ConsoleDaemon, Http, edge, start, wait_until


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    d = start(tmp_path_factory)
    yield d
    out = d.stop()
    assert "Traceback" not in out, out


def logged_in(door: ConsoleDaemon) -> tuple[Http, str]:
    """A client with a session cookie, and that session's CSRF token."""
    c = Http(door.url)
    status, headers, _ = c.request("POST", "/login", form={"token": door.token, "next": "/people"})
    assert status == 303 and headers["location"] == "/people"
    c.cookie = headers["set-cookie"].split(";", 1)[0]
    status, info = c.json("GET", "/api/session")
    assert status == 200
    return c, info["csrf"]


# --------------------------------------------------------------- auth


@pytest.mark.parametrize("method,path", [
    ("GET", "/live"), ("GET", "/live/frame.jpg"), ("GET", "/live/stream.mjpg"),
    ("GET", "/api/live"), ("GET", "/people"), ("GET", "/events"), ("GET", "/events.csv"),
    ("GET", "/health"), ("GET", "/api/enroll/quality"), ("POST", "/people/enroll"),
    ("POST", "/people/barack_obama/disable"),
])
def test_everything_needs_the_token(door, method, path):
    status, _, body = Http(door.url).request(method, path, form={} if method == "POST" else None)
    assert status == 401
    assert b"jpeg" not in body.lower() and b"barack" not in body
    wrong = Http(door.url).request(method, path, bearer="not-the-token")[0]
    assert wrong == 401


def test_a_page_without_a_session_shows_the_login_form(door):
    status, _, body = Http(door.url).request("GET", "/people", headers={"Accept": "text/html"})
    assert status == 401 and b'name=token' in body and b"barack_obama" not in body


def test_login_gives_a_strict_httponly_cookie_and_a_wrong_token_none(door):
    c = Http(door.url)
    status, headers, _ = c.request("POST", "/login", form={"token": door.token})
    assert status == 303
    cookie = headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain HTTP on localhost: a Secure cookie would never come back
    c.cookie = headers["set-cookie"].split(";", 1)[0]
    status, people = c.json("GET", "/people")
    assert status == 200 and "barack_obama" in [p["name"] for p in people]
    status, headers, body = Http(door.url).request("POST", "/login", form={"token": "guess"})
    assert status == 401 and "set-cookie" not in headers and b"wrong token" in body


def test_the_token_file_is_private_and_bearer_works(door):
    mode = (door.site / "console.token").stat().st_mode & 0o777
    assert mode == 0o600
    status, people = Http(door.url).json("GET", "/people", bearer=door.token)
    assert status == 200 and [p["name"] for p in people] == ["barack_obama"]


def test_writes_without_the_csrf_token_are_refused(door):
    c, csrf = logged_in(door)
    for form in ({}, {"csrf": "wrong"}, {"csrf": csrf[:-1]}):
        status, _, body = c.request("POST", "/people/barack_obama/disable", form=form)
        assert status == 403 and b"CSRF" in body
    # Bearer callers need one too: theirs, not a session's.
    assert Http(door.url).request("POST", "/people/barack_obama/disable", bearer=door.token,
                                  form={"csrf": csrf})[0] == 403
    listed = edge(door.site, "list", "--json").stdout
    assert json.loads(listed)[0]["active"] is True  # nothing changed
    assert "disable" not in edge(door.site, "events", "--kind", "disable").stdout


def test_rotating_the_token_ends_the_sessions(door):
    c, _ = logged_in(door)
    assert c.json("GET", "/people")[0] == 200
    new = edge(door.site, "console", "token", "--rotate").stdout.strip()
    old, door.token = door.token, new  # the tests after this one log in with the new one
    assert new != old and edge(door.site, "console", "token").stdout.strip() == new
    assert c.json("GET", "/people")[0] == 401
    assert Http(door.url).json("GET", "/people", bearer=old)[0] == 401
    assert Http(door.url).json("GET", "/people", bearer=new)[0] == 200


def test_a_non_local_console_without_tls_is_refused_in_one_line(door):
    p = edge(door.site, "run", "--console", "0.0.0.0:0", "--validate-config", check=False)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "tls_cert" in p.stderr and "Traceback" not in p.stderr


def test_a_plain_door_imports_no_web_library():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge.cli", "--help"],
                       capture_output=True, text=True, cwd=ROOT, env=os.environ)
    assert p.returncode == 0, p.stderr
    for lib in ("starlette", "uvicorn", "anyio", "selenium"):
        assert f" {lib}" not in p.stderr, lib


# --------------------------------------------------------------- live


def read_parts(door: ConsoleDaemon, n: int) -> list[tuple[dict[str, str], bytes]]:
    """``n`` parts of the MJPEG stream: their headers and JPEG bytes."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(door.url.rsplit(":", 1)[1].strip("/")),
                                      timeout=60)
    conn.request("GET", "/live/stream.mjpg", headers={"Authorization": f"Bearer {door.token}"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("multipart/x-mixed-replace")
    parts = []
    try:
        while len(parts) < n:
            line = r.readline()
            assert line, "the stream ended"
            if not line.startswith(b"--edgeframe"):
                continue
            headers = {}
            while (h := r.readline().strip()):
                k, _, v = h.decode().partition(":")
                headers[k.lower()] = v.strip()
            parts.append((headers, r.read(int(headers["content-length"]))))
    finally:
        conn.close()
    return parts


_DETECTED: dict[Path, list] = {}


def detections(engine, photo: Path) -> list:
    """The faces our own engine finds in ``photo`` as the camera frames it (cached)."""
    if photo not in _DETECTED:
        # The very pixels the daemon reads: the frame as the folder holds it (JPEG 95).
        _, jpg = cv2.imencode(".jpg", camera_frame(read_image(photo).bgr),
                              [cv2.IMWRITE_JPEG_QUALITY, 95])
        frame = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
        _DETECTED[photo] = engine.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return _DETECTED[photo]


def photo_of(engine, photos: list[Path], faces: list[dict]) -> Path | None:
    """The one of ``photos`` whose faces are where ``faces`` (the console's boxes) say."""
    for photo in photos:
        dets = detections(engine, photo)
        if faces and len(dets) == len(faces) and all(
            iou(np.array(f["box"]), np.array([d.box for d in dets])).max() > 0.95 for f in faces
        ):
            return photo
    return None


def newest_faces(c: Http, bearer: str | None = None) -> list[dict]:
    status, headers, _ = c.request("GET", "/live/frame.jpg?after=0", bearer=bearer)
    return json.loads(headers["x-faces"]) if status == 200 else []


def test_the_stream_delivers_jpegs_boxed_where_the_faces_are(door, engine):
    parts = read_parts(door, 12)
    seqs = [int(h["x-frame-seq"]) for h, _ in parts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for headers, jpeg in parts:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (480, 640, 3)
        assert float(headers["x-capture-time"]) > 1e9
        faces = json.loads(headers["x-faces"])
        # The photo the daemon saw: its faces, found here by our own engine, are the boxes.
        photo = photo_of(engine, door.showing, faces)
        assert photo is not None, faces
        plain = camera_frame(read_image(photo).bgr)
        for f in faces:
            assert f["track"] >= 1 and f["waiting"]
            # The box is drawn on the picture: its top edge differs from the camera's pixels.
            x1, y1, x2, _ = (int(round(v)) for v in f["box"])
            row = slice(max(0, x1) + 5, min(639, x2) - 5)
            drawn = np.abs(img[max(0, y1), row].astype(int) - plain[max(0, y1), row].astype(int))
            assert drawn.mean() > 20, f
    named = [f for h, _ in parts for f in json.loads(h["x-faces"]) if f["name"] == "barack_obama"]
    assert named and all(f["similarity"] > 0.5 for f in named)


def test_live_state_has_fps_camera_and_decisions(door):
    c = Http(door.url)

    def decided():
        status, s = c.json("GET", "/api/live", bearer=door.token)
        assert status == 200
        return s if s["decisions"] and s["fps"] > 0 else None

    s = wait_until(decided, 90, "a decision in /api/live")
    assert s["camera"] == "streaming" and s["latency_ms"] is not None
    keys = {"decision", "name", "similarity", "liveness", "reason", "track"}
    assert keys <= set(s["decisions"][0])


def test_no_jpeg_is_made_while_nobody_watches(door):
    c = Http(door.url)
    read_parts(door, 2)

    def encoded() -> int:
        return c.json("GET", "/api/live", bearer=door.token)[1]["encoded_frames"]

    def still() -> bool:  # the viewer gone, the encoder stops (and /api/live is no viewer)
        before = encoded()
        time.sleep(1.5)
        return encoded() == before

    wait_until(still, 60, "the encoder to stop once nobody watches")


# --------------------------------------------------------------- people


def test_enroll_from_the_camera_end_to_end(door, engine):
    c, csrf = logged_in(door)
    kit = sorted((PEOPLE / "kit_harington").iterdir())

    def on_camera(photos: list[Path]) -> None:
        door.show(photos)
        # The loop has started over with them once three frames in a row show them.
        wait_until(lambda: all(photo_of(engine, photos, newest_faces(c)) for _ in range(3)),
                   90, f"{photos[0].parent.name} on camera")

    try:
        on_camera(kit)
        # The quality feedback: measures and limits of the newest frame.
        q = wait_until(lambda: (r := c.json("GET", "/api/enroll/quality")[1])["ok"] and r,
                       60, "a good frame of Kit in the quality feedback")
        assert q["size_ok"] and q["sharp_ok"] and q["yaw_ok"] and q["reason"] is None
        assert q["eye_distance"] >= q["min_eye_distance"]
        # A face already enrolled as someone else is refused, as by the CLI: all or nothing.
        on_camera([door.obama])
        status, r = c.json("POST", "/people/enroll",
                           form={"csrf": csrf, "name": "not_obama", "frames": "2"})
        assert status == 400 and "barack_obama" in r["message"], r
        on_camera(kit)
        status, r = c.json("POST", "/people/enroll", form={
            "csrf": csrf, "name": "kit_harington", "display_name": "Kit", "frames": "3"})
        assert status == 200 and r["added"] >= 1, r
    finally:
        door.show([door.obama, door.rose])
    listed = {p["name"]: p for p in json.loads(edge(door.site, "list", "--json").stdout)}
    assert set(listed) == {"barack_obama", "kit_harington"}  # not_obama left nothing behind
    assert listed["kit_harington"]["display_name"] == "Kit"
    enrolled = json.loads(edge(door.site, "events", "--kind", "enroll", "--json").stdout)
    assert [(e["name"], e["actor"]) for e in enrolled][-1] == ("kit_harington", "console")


def test_disable_enable_remove_are_audited_as_the_console(door):
    c, csrf = logged_in(door)
    photo = PEOPLE / "alex_lacamoire" / "alex1.jpg"
    edge(door.site, "enroll", "alex_lacamoire", str(photo))
    for action in ("disable", "enable"):
        status, r = c.json("POST", f"/people/alex_lacamoire/{action}", form={"csrf": csrf})
        assert status == 200 and r["ok"], r
    listed = {p["name"]: p for p in json.loads(edge(door.site, "list", "--json").stdout)}
    assert listed["alex_lacamoire"]["active"] is True
    # Removal needs its confirmation (the name, as the page's confirm dialog sends it).
    status, r = c.json("POST", "/people/alex_lacamoire/remove", form={"csrf": csrf})
    assert status == 400 and "not confirmed" in r["message"]
    status, r = c.json("POST", "/people/alex_lacamoire/remove",
                       form={"csrf": csrf, "confirm": "alex_lacamoire"})
    assert status == 200, r
    assert "alex_lacamoire" not in edge(door.site, "list").stdout
    events = json.loads(edge(door.site, "events", "--json").stdout)
    mine = [(e["kind"], e["actor"]) for e in events if e["name"] == "alex_lacamoire"]
    assert mine[-3:] == [("disable", "console"), ("enable", "console"), ("remove", "console")]
    status, r = c.json("POST", "/people/nobody/disable", form={"csrf": csrf})
    assert status == 400 and "nobody" in r["message"]


def test_a_browser_form_post_comes_back_to_the_page_with_its_message(door):
    c, csrf = logged_in(door)
    status, headers, _ = c.request("POST", "/people/barack_obama/enable", form={"csrf": csrf})
    assert status == 303 and headers["location"].startswith("/people?message=")


# --------------------------------------------------------------- events and health


def test_events_filter_by_kind_person_and_time_and_export_csv(door):
    c, csrf = logged_in(door)
    assert c.json("POST", "/people/barack_obama/disable", form={"csrf": csrf})[0] == 200
    assert c.json("POST", "/people/barack_obama/enable", form={"csrf": csrf})[0] == 200

    def access():
        rows = c.json("GET", "/events?kind=access")[1]
        return rows if rows else None

    rows = wait_until(access, 90, "an access event")
    assert {r["kind"] for r in rows} == {"access"}
    status, rows = c.json("GET", "/events?kind=disable&person=barack_obama")
    assert status == 200 and rows and {(r["kind"], r["actor"]) for r in rows} == {
        ("disable", "console")}
    last = rows[0]["ts"]
    assert c.json("GET", f"/events?kind=disable&since={quote(last)}")[1][0]["ts"] == last
    assert c.json("GET", "/events?kind=disable&until=2000-01-01T00:00:00")[1] == []
    assert c.json("GET", "/events?kind=disable&person=rose_leslie")[1] == []
    status, _, body = c.request("GET", "/events?kind=nonsense")
    assert status == 400 and b"no such kind" in body
    status, headers, data = c.request("GET", "/events.csv?kind=disable&person=barack_obama")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(data.decode())))
    assert table and {(r["kind"], r["name"], r["actor"]) for r in table} == {
        ("disable", "barack_obama", "console")}
    assert list(table[0]) == ["id", "ts", "kind", "name", "decision", "similarity", "liveness",
                              "reason", "actor", "detail"]


def test_refusal_snapshots_are_shown_with_their_event(door):
    c, _ = logged_in(door)

    def snapshot_shown():
        status, _, body = c.request("GET", "/events?kind=access", headers={"Accept": "text/html"})
        assert status == 200
        text = body.decode()
        return text if 'src="/snapshots/' in text else None

    text = wait_until(snapshot_shown, 120, "a refusal with its snapshot on the events page")
    name = text.split('src="/snapshots/', 1)[1].split('"', 1)[0]
    status, _, jpeg = c.request("GET", f"/snapshots/{name}")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    assert c.request("GET", "/snapshots/..%2Fgallery.db")[0] == 404


def test_health_shows_doctor_status_and_metrics(door):
    status, h = Http(door.url).json("GET", "/health", bearer=door.token)
    assert status == 200
    names = [c["name"] for c in h["checks"]]
    assert "camera" in names and "database" in names
    camera = next(c for c in h["checks"] if c["name"] == "camera")
    assert camera["ok"] and "streaming" in camera["detail"]
    assert h["status"]["ready"] and h["status"]["console"] == door.url
    assert "frame_ms" in h["metrics"]


# --------------------------------------------------------------- TLS, config, bench


def test_a_non_local_listen_in_the_config_needs_tls(tmp_path):
    from edge.config import load_config
    from edge.errors import ConfigError

    cfg = tmp_path / "config.yaml"
    cfg.write_text("console:\n  listen: 192.168.1.20:8080\n")
    with pytest.raises(ConfigError, match="tls_cert") as e:
        load_config(cfg)
    assert "\n" not in str(e.value)
    cfg.write_text("console:\n  listen: 0.0.0.0:8080\n  tls_cert: c.pem\n")
    with pytest.raises(ConfigError, match="give both"):
        load_config(cfg)
    cfg.write_text("console:\n  listen: 127.0.0.1:8080\n")
    assert load_config(cfg).console.listen == "127.0.0.1:8080"


def self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    c, k = folder / "cert.pem", folder / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_under_tls_the_console_serves_https_and_the_cookie_is_secure(cfg, tmp_path):
    import http.client
    import ssl

    from edge.config import ConsoleConfig
    from edge.console.server import Console
    from edge.errors import ConfigError

    cert, key = self_signed(tmp_path)
    tls = cfg.model_copy(update={"console": ConsoleConfig(
        listen="localhost:0", tls_cert=cert, tls_key=key)})
    console = Console(tls, tmp_path / "gallery.db", daemon=None)
    try:
        assert console.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("localhost", int(console.url.rsplit(":", 1)[1][:-1]),
                                           context=ctx, timeout=60)
        body = f"token={console.tokens.token}"
        conn.request("POST", "/login", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        r.read()
        assert r.status == 303
        assert "secure" in r.getheader("set-cookie").lower()
        conn.close()
    finally:
        console.close()
    (tmp_path / "bad.pem").write_text("not a certificate")
    broken = cfg.model_copy(update={"console": ConsoleConfig(
        listen="localhost:0", tls_cert=tmp_path / "bad.pem", tls_key=key)})
    with pytest.raises(ConfigError, match="console TLS"):
        Console(broken, tmp_path / "gallery.db", daemon=None)


def test_bench_replay_with_a_console_viewer(cfg, tmp_path, faces_dir):
    from edge.bench import replay

    r = replay(cfg, faces_dir / "video" / "short_hamilton_clip.mp4", tmp_path / "g.db",
               console_viewer=True)
    assert r["frames"] == 275
    assert r["console_viewer"]["frames_received"] >= 1
