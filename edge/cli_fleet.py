"""The fleet side of the ``edge`` command: ``--fleet [URL]`` on the admin commands, ``edge fleet``.

A thin layer, as the rest of :mod:`edge.cli`: the work is in :mod:`edge.fleet`.
``--fleet`` alone means "the fleet this machine is configured for"
(``$EDGE_FLEET_URL`` or ``fleet.url``); ``--fleet URL`` names one. Nothing here
imports psycopg until a command actually goes to the fleet.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from .fleet.admin import FleetAdmin

F = TypeVar("F", bound=Callable[..., Any])


class FleetCommand(click.Command):
    """A command whose ``--fleet`` may stand alone: ``edge remove --fleet Rose``.

    click would take ``Rose`` as the URL, so a ``--fleet`` not followed by a
    URL (``scheme://...``) is read as ``--fleet=`` (the configured fleet).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        for i, a in enumerate(args):
            if a == "--":
                out += args[i:]
                break
            nxt = args[i + 1] if i + 1 < len(args) else ""
            out.append("--fleet=" if a == "--fleet" and "://" not in nxt else a)
        return super().parse_args(ctx, out)


def fleet_option(f: F) -> F:
    """``--fleet [URL]``: act on the fleet's central store instead of the local gallery."""
    return click.option(
        "--fleet", "fleet", metavar="[URL]", default=None,
        help="Act on the fleet's central store (URL, else $EDGE_FLEET_URL or fleet.url).",
    )(f)


def belongs_to_fleet(cfg: Any) -> str | None:
    """The fleet URL of a door whose config names one, else None."""
    return str(cfg.fleet.url) if cfg.fleet.url else None


def refuse_local_edit(cfg: Any, fleet: str | None) -> None:
    """On a door of a fleet, local edits of people are refused (its sync would undo them)."""
    from .errors import ConfigError

    url = belongs_to_fleet(cfg)
    if fleet is None and url is not None:
        raise ConfigError(f"this door belongs to fleet {url}; use --fleet")


def admin(cfg: Any, fleet: str, actor: str) -> FleetAdmin:
    """An admin session with the fleet (``fleet`` "" = the configured one)."""
    from .fleet import vault
    from .fleet.admin import FleetAdmin
    from .fleet.connect import settings

    return FleetAdmin(settings(cfg, fleet or None), actor, lambda: vault.load_key(cfg))


# --------------------------------------------------------------- edge fleet


def _handle(f: F) -> F:
    """--config and --json, and one-line errors, for the ``edge fleet`` commands."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--config", envvar="EDGE_CONFIG",
                  help="Configuration file (default: config.yaml).")
    @functools.wraps(f)
    def wrapper(config: str | None, as_json: bool, **kw: Any) -> Any:
        from .cli_common import one_line_errors
        from .config import load_config

        with one_line_errors():
            return f(load_config(config), as_json, **kw)

    return wrapper  # type: ignore[return-value]


@click.group("fleet")
def fleet_group() -> None:
    """Several doors, one gallery: the central store on PostgreSQL (README "Several doors")."""


@fleet_group.command("init", cls=FleetCommand)
@fleet_option
@_handle
def init_(cfg: Any, as_json: bool, fleet: str | None) -> None:
    """Create or migrate the fleet's schema, its roles, and the fleet key (idempotent).

    Run as the database's owner. The fleet key (fleet.key_file) is made if
    missing: copy it to each door (mode 0600).
    """
    import json

    from .fleet import vault
    from .fleet.admin import init_fleet
    from .fleet.connect import settings

    s = settings(cfg, fleet or None)
    path = vault.key_path(cfg)
    result, kid = init_fleet(s, lambda: vault.load_key(cfg, create=True))
    info = {"schema": result.after, "applied": list(result.applied), "key_file": str(path),
            "key_id": kid}
    if as_json:
        click.echo(json.dumps(info))
        return
    done = (f"schema v{result.after} (applied {', '.join(map(str, result.applied))})"
            if result.applied else f"schema v{result.after}, already up to date")
    click.echo(f"{s.where}: {done}; fleet key {kid} in {path} (copy it to each door, mode 0600)")


@fleet_group.command("doors", cls=FleetCommand)
@fleet_option
@_handle
def doors_(cfg: Any, as_json: bool, fleet: str | None) -> None:
    """Each door: last contact, revision it holds (and how far behind), events waiting, version."""
    import json

    from .cli_common import actor
    from .fleet import store

    with admin(cfg, fleet or "", actor()) as a:
        rows = store.doors(a.conn)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows]))
        return
    if not rows:
        click.echo("no door has reported yet")
    for r in rows:
        behind = "" if r.behind is None else f" ({r.behind} behind)"
        click.echo(
            f"{r.name}\tlast contact {r.last_contact or 'never'}\trevision {r.revision}{behind}"
            f"\t{r.events_waiting if r.events_waiting is not None else '?'} event(s) waiting"
            f"\tversion {r.version or '?'}")


def fleet_events(
    ctx: Any, fleet: str, *, since: str | None, kind: str | None, door: str | None,
    limit: int | None,
) -> None:
    """``edge events --fleet``: every door's events (or ``door``'s), oldest first."""
    import json

    from .audit import KINDS
    from .cli_common import fail
    from .fleet import store
    from .records import iso_time

    if kind is not None and kind not in KINDS:
        fail(f"--kind {kind}: no such kind of event (one of: {', '.join(KINDS)})", 2)
    with ctx.fleet(fleet) as a:
        found = store.events(a.conn, since=iso_time(since, "--since"), kind=kind, door=door,
                             limit=limit)
    if ctx.json:
        click.echo(json.dumps([e.__dict__ for e in found], ensure_ascii=False))
        return
    for line in event_lines(found):
        click.echo(line)


def event_lines(events: Sequence[Any]) -> list[str]:
    """One line per central event, as ``edge events`` shows a local one, after its door."""
    from .audit import describe
    from .gallery import Event

    out = []
    for e in events:
        local = Event(e.id, e.ts, e.mono, e.kind, e.name, e.similarity, e.liveness, e.decision,
                      e.reason, e.actor, e.detail)
        out.append(f"{e.door or 'centre'}\t{describe(local)}")
    return out
