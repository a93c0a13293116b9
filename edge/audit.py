"""Reading the audit log: which kinds of event there are, and one line per event.

``edge events`` shows the log; an admin reading it wants to see what each
change did (who was renamed to what, how many templates went), not just that
something happened, and a mistyped ``--kind`` must say so instead of showing
an empty log that reads as "nothing happened".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .eventlog import Event
    from .gallery import Gallery

#: Every kind of event edge-access writes: the daemon's, then the admin changes'.
KINDS = (
    "access", "door", "alarm", "storage",
    "enroll", "remove", "forget", "rename", "enable", "disable", "validity", "update",
    "import", "export", "key_rotation", "restore", "migrate",
)
#: Kinds whose ``detail`` is the daemon's telemetry (track, frame, latency), not a change.
_TELEMETRY = {"access", "alarm", "storage"}


def check_kind(gallery: Gallery, kind: str) -> str:
    """``kind`` if edge-access writes it or the log holds it, else a usage error listing them."""
    if kind in KINDS:
        return kind
    with gallery._read("read event kinds"):
        seen = gallery.db.execute("SELECT 1 FROM events WHERE kind = ? LIMIT 1", [kind]).fetchone()
    if seen is None:
        raise ConfigError(f"--kind {kind}: no such kind of event (one of: {', '.join(KINDS)})")
    return kind


def _value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ",".join(_value(x) for x in v) or "none"
    if isinstance(v, str):
        return v if v and not any(c.isspace() for c in v) else json.dumps(v, ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False)


def describe(e: Event) -> str:
    """One line for an event: when, kind, name, decision, scores, reason, what changed, who."""
    sim = "" if e.similarity is None else f" sim={e.similarity:.3f}"
    live = "" if e.liveness is None else f" live={e.liveness:.2f}"
    what = ""
    if e.detail and e.kind not in _TELEMETRY:
        what = " " + " ".join(f"{k}={_value(v)}" for k, v in sorted(e.detail.items()))
    who = f" by {e.actor}" if e.actor else ""
    line = f"{e.ts} {e.kind} {e.name or '-'} {e.decision or ''}{sim}{live} {e.reason or ''}"
    return f"{line.rstrip()}{what}{who}"
