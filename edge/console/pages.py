"""The console's HTML: server-rendered pages, every value escaped, no template engine.

Each page is a function of plain values returning a string. The pages load
one stylesheet and one script from the console itself (``/static/``); the
Content-Security-Policy the app sends forbids anything else, inline scripts
included.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

NAV = (("live", "/live", "Live"), ("people", "/people", "People"),
       ("enroll", "/people/enroll", "Enroll"), ("events", "/events", "Events"),
       ("health", "/health", "Health"))


def e(v: Any) -> str:
    """``v`` as escaped HTML text ("-" for None)."""
    return "-" if v is None else html.escape(str(v), quote=True)


def num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def layout(page: str, title: str, body: str, csrf: str | None, message: str | None = None,
           error: str | None = None) -> str:
    """The frame every page shares: navigation, a message line, the body."""
    links = "".join(
        f'<a href="{href}"{" class=here" if key == page else ""}>{label}</a>'
        for key, href, label in NAV
    ) if csrf is not None else ""
    logout = (f'<form class=inline method=post action="/logout">{csrf_field(csrf)}'
              '<button>Log out</button></form>') if csrf is not None else ""
    note = (f'<div class=msg id=message>{e(message)}</div>' if message else "") + (
        f'<div class=err id=error>{e(error)}</div>' if error else "")
    meta = f'<meta name=csrf content="{e(csrf)}">' if csrf else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(title)} · edge console</title>{meta}"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=stylesheet href="/static/console.css"></head>'
        f'<body data-page="{e(page)}"><nav><b class=brand>edge</b>{links}{logout}</nav>'
        f"<main><h1>{e(title)}</h1>{note}{body}</main>"
        '<script src="/static/console.js"></script></body></html>'
    )


def csrf_field(csrf: str) -> str:
    return f'<input type=hidden name=csrf value="{e(csrf)}">'


def login(next_path: str, wrong: bool) -> str:
    body = (
        "<p>Give the console token (<code>edge console token</code> on the door prints it).</p>"
        f'<form method=post action="/login"><input type=hidden name=next value="{e(next_path)}">'
        '<input type=password name=token id=token autocomplete=off size=50 autofocus> '
        "<button id=login>Log in</button></form>"
    )
    return layout("login", "Log in", body, None, error="wrong token" if wrong else None)


def live(csrf: str) -> str:
    body = (
        '<div class=live><div><img id=frame alt="the camera, live">'
        '<p class=figures><span>fps <b id=fps>-</b></span>'
        '<span>camera → screen <b id=latency>-</b></span>'
        '<span>capture → decision <b id=loop-latency>-</b></span>'
        "<span>camera <b id=camera>-</b></span></p></div>"
        "<div><h2>Faces</h2><table id=faces><thead><tr><th>track</th><th>who</th>"
        "<th>similarity</th><th>liveness</th><th>waiting for</th><th>box</th></tr></thead>"
        "<tbody></tbody></table>"
        "<h2>Last decisions</h2><table id=decisions><thead><tr><th>decision</th><th>who</th>"
        "<th>similarity</th><th>liveness</th><th>reason</th><th>track</th></tr></thead>"
        "<tbody></tbody></table></div></div>"
    )
    return layout("live", "Live view", body, csrf)


def people(rows: Sequence[Any], stale: set[str], csrf: str, message: str | None = None,
           error: str | None = None) -> str:
    out = ["<p><a href=\"/people/enroll\">Enroll someone from the camera</a></p>",
           "<table id=people><thead><tr><th>name</th><th>greeted as</th><th>state</th>"
           "<th>valid</th><th>templates</th><th></th></tr></thead><tbody>"]
    for p in rows:
        state = "active" if p.active else "disabled"
        valid = (f"{e(p.valid_from or '…')} to {e(p.valid_until or '…')}"
                 if p.valid_from or p.valid_until else "always")
        redo = " <span class=wait>needs re-enrollment</span>" if p.name in stale else ""
        toggle = "enable" if not p.active else "disable"
        forms = (
            f'<form class=inline method=post action="/people/{e(_q(p.name))}/{toggle}">'
            f'{csrf_field(csrf)}<button name=do value="{toggle}">{toggle}</button></form> '
            f'<form class=inline method=post action="/people/{e(_q(p.name))}/remove" '
            f'data-confirm="Remove {e(p.name)} and all their templates?">'
            f'{csrf_field(csrf)}<input type=hidden name=confirm value="{e(p.name)}">'
            "<button>remove</button></form>"
        )
        out.append(
            f'<tr data-name="{e(p.name)}"><td>{e(p.name)}</td><td>{e(p.display_name or p.name)}'
            f'</td><td class="{"ok" if p.active else "bad"}">{state}</td><td>{valid}</td>'
            f"<td>{p.templates}{redo}</td><td>{forms}</td></tr>"
        )
    if not rows:
        out.append("<tr><td colspan=6>nobody enrolled</td></tr>")
    out.append("</tbody></table>")
    return layout("people", "People", "".join(out), csrf, message, error)


def enroll(csrf: str, frames: int, error: str | None = None) -> str:
    body = (
        '<div class=live><div><img id=frame alt="the camera, live"></div><div>'
        "<h2>Quality of the newest frame</h2><table id=quality><tbody>"
        "<tr><th>size</th><td id=q-size>-</td></tr><tr><th>blur</th><td id=q-blur>-</td></tr>"
        "<tr><th>yaw</th><td id=q-yaw>-</td></tr><tr><th>verdict</th><td id=q-verdict>-</td>"
        "</tr></tbody></table>"
        '<h2>Enroll</h2><form method=post action="/people/enroll" id=enroll>'
        f"{csrf_field(csrf)}<p><label>Name <input name=name id=name required></label></p>"
        "<p><label>Greeted as <input name=display_name id=display_name></label></p>"
        f"<p><label>Frames <input name=frames type=number min=1 max=50 value={frames}></label></p>"
        "<p><label><input type=checkbox name=force value=1> enroll even a face already "
        "enrolled as someone else</label></p><button id=enroll-go>Enroll from the camera</button>"
        "<p>All or nothing, as <code>edge enroll NAME --camera</code>: frames that fail the "
        "checks are skipped, and nothing is written unless a good face was found.</p>"
        "</form></div></div>"
    )
    return layout("enroll", "Enroll from the camera", body, csrf, error=error)


def events(rows: Sequence[Any], kinds: Iterable[str], query: dict[str, str],
           snapshots: dict[int, str], all_snaps: Sequence[Any], csrf: str,
           shown_of: int) -> str:
    opts = "".join(
        f'<option{" selected" if k == query.get("kind") else ""}>{e(k)}</option>' for k in kinds
    )
    form = (
        '<form method=get action="/events" id=filter>'
        f'<label>kind <select name=kind><option value="">any</option>{opts}</select></label> '
        f'<label>person <input name=person value="{e(query.get("person", ""))}"></label> '
        f'<label>since <input name=since value="{e(query.get("since", ""))}" '
        'placeholder="2026-01-01T08:00"></label> '
        f'<label>until <input name=until value="{e(query.get("until", ""))}"></label> '
        "<button>filter</button> "
        f'<a id=csv href="/events.csv?{e(urlencode({k: v for k, v in query.items() if v}))}">'
        "export CSV</a></form>"
    )
    out = [form, f"<p>{len(rows)} of {shown_of} matching events shown, newest first.</p>",
           "<table id=events><thead><tr><th>time</th><th>kind</th><th>person</th>"
           "<th>decision</th><th>similarity</th><th>liveness</th><th>reason</th><th>by</th>"
           "<th>snapshot</th></tr></thead><tbody>"]
    for r in rows:
        snap = snapshots.get(r.id)
        img = (f'<a href="/snapshots/{e(snap)}"><img class=snap src="/snapshots/{e(snap)}" '
               'alt="snapshot"></a>') if snap else ""
        what = "" if not r.detail or r.kind in ("access", "alarm", "storage") else (
            " " + e(json.dumps(r.detail, ensure_ascii=False)))
        out.append(
            f'<tr class="{e(r.kind)}"><td>{e(r.ts)}</td><td>{e(r.kind)}</td><td>{e(r.name)}</td>'
            f"<td>{e(r.decision)}</td><td>{num(r.similarity)}</td><td>{num(r.liveness, 2)}</td>"
            f"<td>{e(r.reason)}{what}</td><td>{e(r.actor)}</td><td>{img}</td></tr>"
        )
    out.append("</tbody></table>")
    if all_snaps:
        out.append("<h2>Refusal snapshots kept</h2><p>")
        out += [f'<a href="/snapshots/{e(s.path.name)}">{e(s.path.name)}</a><br>'
                for s in reversed(all_snaps[-50:])]
        out.append("</p>")
    return layout("events", "Events", "".join(out), csrf)


def health(status: dict[str, Any], checks: Sequence[Any], metrics: str, csrf: str) -> str:
    rows = "".join(
        f'<tr><td class="{"ok" if c.ok else "bad"}">{"ok" if c.ok else "BAD"}</td>'
        f"<td>{e(c.name)}</td><td>{e(c.detail)}</td></tr>" for c in checks
    )
    st = "".join(f"<tr><th>{e(k)}</th><td>{e(_short(v))}</td></tr>" for k, v in status.items())
    body = (
        "<h2>edge doctor</h2><table id=doctor><tbody>" + rows + "</tbody></table>"
        "<h2>edge status</h2><table id=status><tbody>" + st + "</tbody></table>"
        f"<h2>Metrics</h2><pre id=metrics>{e(metrics)}</pre>"
    )
    return layout("health", "Health", body, csrf)


def _short(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else str(v)


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
