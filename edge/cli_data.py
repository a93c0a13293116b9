"""``edge`` commands for the data: events, export, import, backup, restore, reembed, key.

Thin layers over :mod:`edge.audit`, :mod:`edge.bundle`, :mod:`edge.backup`,
:mod:`edge.reembed` and the gallery's key rotation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import Ctx, PathArg, actor, bundle_passphrase, common, fail
from .cli_fleet import FleetCommand, fleet_option, refuse_local_edit
from .cli_ops import _daemon_running, _read_status


@click.command(cls=FleetCommand)
@click.option("--since", help="Only events at or after this ISO-8601 time.")
@click.option("--kind", help="Only events of this kind (access, door, enroll, …).")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N.")
@click.option("--door", help="With --fleet: only this door's events.")
@fleet_option
@common
def events(
    ctx: Ctx, since: str | None, kind: str | None, limit: int | None, door: str | None,
    fleet: str | None,
) -> None:
    """Show the audit log, oldest first, with what each admin change did.

    With --fleet: every door's events at the centre, each after its door's name
    ("centre" for an admin command's).
    """
    from .audit import check_kind, describe

    if door is not None and fleet is None:
        fail("--door needs --fleet (a door's own log is local)", 2)
    if fleet is not None:
        from .cli_fleet import fleet_events

        fleet_events(ctx, fleet, since=since, kind=kind, door=door, limit=limit)
        return

    with ctx.gallery() as g:
        rows = g.events(since=since, kind=kind and check_kind(g, kind), limit=limit)
    if ctx.json:
        ctx.emit([r.__dict__ for r in rows])
        return
    for r in rows:
        click.echo(describe(r))


@click.command("export", cls=FleetCommand)
@click.argument("file")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@fleet_option
@common
def export_(ctx: Ctx, file: str, force: bool, fleet: str | None) -> None:
    """Write every person and template to FILE, sealed under a passphrase.

    The passphrase comes from $EDGE_BUNDLE_PASSPHRASE, or is asked for.
    """
    from .bundle import check_target, export_bundle

    check_target(Path(file), force)  # before asking for a passphrase
    passphrase = bundle_passphrase(confirm=True)
    if fleet is not None:
        from .fleet import bundles

        with ctx.fleet(fleet) as a:
            n = bundles.export(a, file, passphrase, force=force)
    else:
        with ctx.gallery() as g:
            n = export_bundle(g, file, passphrase, force=force)
    ctx.emit({"file": file, "people": n}, f"{file}: {n} people exported")


@click.command("import", cls=FleetCommand)
@click.argument("file")
@click.option(
    "--allow-unencrypted",
    is_flag=True,
    help="Accept a plain bundle from an older edge-access (only a file you trust).",
)
@click.option("--merge", is_flag=True, help="A bundle name already here is the same person.")
@click.option(
    "--rename",
    multiple=True,
    metavar="[OLD=]NEW",
    help="Add the bundle's OLD (or its one colliding name) as NEW instead.",
)
@fleet_option
@common
def import_(
    ctx: Ctx, file: str, allow_unencrypted: bool, merge: bool, rename: tuple[str, ...],
    fleet: str | None,
) -> None:
    """Add the people and templates in FILE (opened and checked before the gallery is touched).

    A bundle name already here is refused unless --merge or --rename says what it is.
    """
    from .bundle import import_bundle, is_sealed_bundle

    refuse_local_edit(ctx.cfg, fleet)
    passphrase = bundle_passphrase(confirm=False) if is_sealed_bundle(file) else None
    if fleet is not None:
        from .fleet import bundles

        with ctx.fleet(fleet) as a:
            r = bundles.import_(
                a, file, passphrase, allow_unencrypted=allow_unencrypted, merge=merge,
                rename=rename, threshold=ctx.cfg.match.threshold,
            )
    else:
        with ctx.gallery() as g:
            r = import_bundle(
                g, file, passphrase, allow_unencrypted=allow_unencrypted, merge=merge,
                rename=rename, threshold=ctx.cfg.match.threshold,
            )
    for w in r.warnings:
        click.echo(f"edge: warning: {w}", err=True)
    ctx.emit(
        r.__dict__,
        f"{file}: {r.people_added} people, {r.templates_added} templates added, "
        f"{r.skipped_duplicates} already present"
        + (f"; merged {', '.join(r.merged)}" if r.merged else "")
        + (f"; renamed {', '.join(r.renamed)}" if r.renamed else ""),
    )


@click.command()
@click.option("--list", "list_", is_flag=True, help="List the backups instead of taking one.")
@common
def backup(ctx: Ctx, list_: bool) -> None:
    """Take a backup of the gallery now (the daemon also takes them on schedule)."""
    from .backup import Backups

    backups = Backups(ctx.db(), ctx.cfg, background=False)
    if not list_ and not ctx.db().exists():
        fail(f"{ctx.db()}: no gallery there to back up")
    if list_:
        files = backups.files()
        ctx.emit([str(f) for f in files], "\n".join(str(f) for f in files) or "no backups")
        return
    made = backups.backup_now()
    if made is None:
        fail("backup failed (see above)")
    ctx.emit({"file": str(made)}, f"{made}: written")


@click.command()
@click.argument("backup_file", type=PathArg(exists=True, dir_okay=False))
@click.option(
    "--discard-events",
    is_flag=True,
    help="Do not carry the gallery's events newer than the backup over (they are lost).",
)
@common
def restore(ctx: Ctx, backup_file: str, discard_events: bool) -> None:
    """Put BACKUP_FILE in place of the gallery (stop the daemon first); the old file is kept.

    Events newer than the backup are carried over, and people erased since
    (edge forget) are erased again.
    """
    from .backup import restore as restore_gallery

    status = _read_status(ctx) or {}
    if _daemon_running(status)[0]:
        fail(f"the daemon is running (pid {status.get('pid')}): stop it first")
    done = restore_gallery(
        ctx.db(), Path(backup_file), ctx.cfg, actor=actor(),
        reason=f"from {Path(backup_file).name}", aside="replaced", discard_events=discard_events,
    )
    ctx.emit(
        {"file": backup_file, "kept": str(done.kept) if done.kept else None,
         "events_carried": done.carried, "events_lost": done.lost,
         "forgotten_again": list(done.forgotten)},
        f"{ctx.db()}: restored from {backup_file}; {done.describe()}"
        + (f"; old file kept as {done.kept}" if done.kept else ""),
    )


@click.command()
@common
def reembed(ctx: Ctx) -> None:
    """Recompute every template from its kept face crop for the configured model (one change)."""
    from .reembed import reembed as reembed_gallery

    engine = ctx.engine()
    with ctx.gallery() as g:
        r = reembed_gallery(g, engine.embedder)
    redo = ", ".join(r.needs_reenrollment)
    ctx.emit(
        r.__dict__ | {"needs_reenrollment": list(r.needs_reenrollment)},
        f"{r.recomputed} template(s) recomputed for {engine.embedder.name}"
        + (f"; {r.without_crop} without a kept crop" if r.without_crop else "")
        + (f"; needs re-enrollment: {redo}" if redo else ""),
    )


@click.group()
def key() -> None:
    """The key that seals templates at rest."""


@key.command("rotate")
@common
def key_rotate(ctx: Ctx) -> None:
    """Re-seal every template under a new random key, then take a fresh backup."""
    from .backup import Backups

    with ctx.gallery() as g:
        r = g.rotate_key()
    made = Backups(ctx.db(), ctx.cfg, background=False).backup_now()
    ctx.emit(
        {"old": r.old, "new": r.new, "templates": r.templates, "backup": made and str(made)},
        f"key {r.old} -> {r.new}: {r.templates} template(s) re-sealed; "
        + (f"backup {made}" if made else "backup FAILED: older backups need the old key"),
    )
    if made is None:
        sys.exit(1)
