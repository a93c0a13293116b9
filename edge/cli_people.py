"""``edge`` commands for people: enroll, list, remove, rename, forget, set, disable, enable.

Each is a thin layer over :class:`~edge.gallery.Gallery` (and :mod:`edge.enroll`):
parse, call the library once, print the result.
"""

from __future__ import annotations

from typing import Any

import click

from .cli_common import Ctx, common, fail
from .cli_fleet import FleetCommand, fleet_option, refuse_local_edit


@click.command(cls=FleetCommand)
@click.argument("name")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--display-name", help="Name spoken in the greeting (default: NAME).")
@click.option("--camera", is_flag=True, help="Take the photos from the camera.")
@click.option("--source", help="Camera source for --camera (default: camera.source).")
@click.option("--frames", type=click.IntRange(1, 50), help="Frames to take with --camera.")
@click.option("--force", is_flag=True, help="Enroll even a face already enrolled as someone else.")
@fleet_option
@common
def enroll(
    ctx: Ctx,
    name: str,
    images: tuple[str, ...],
    display_name: str | None,
    camera: bool,
    source: str | None,
    frames: int | None,
    force: bool,
    fleet: str | None,
) -> None:
    """Enroll NAME from photos (IMAGE...) or from the camera; all or nothing."""
    from . import enroll as enr

    refuse_local_edit(ctx.cfg, fleet)
    if camera == bool(images):
        fail("give either photos or --camera", 2)
    from .records import check_name

    check_name(name)
    engine = ctx.engine()
    if camera:
        from .camera import open_source

        cam = open_source(source or ctx.cfg.camera.source, ctx.cfg.camera)
        templates = enr.templates_from_camera(engine, cam, frames or ctx.cfg.enroll.camera_frames)
    else:
        templates, rejected = enr.templates_from_images(engine, images)
        if rejected:  # one line per refused photo; nothing is enrolled
            for r in rejected[:-1]:
                click.echo(f"edge: {r.reason}", err=True)
            fail(rejected[-1].reason)
    look_alike = None if force else ctx.cfg.match.threshold
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            result = a.enroll(name, templates, display_name, refuse_look_alike=look_alike)
    else:
        with ctx.gallery(create=True) as g:
            result = enr.enroll(g, name, templates, display_name, refuse_look_alike=look_alike)
    ctx.emit(
        {"name": name, "added": result.added, "skipped": result.skipped_duplicates},
        f"{name}: {result.added} template(s) added"
        + (f", {result.skipped_duplicates} already enrolled" if result.skipped_duplicates else ""),
    )


@click.command("list", cls=FleetCommand)
@fleet_option
@common
def list_(ctx: Ctx, fleet: str | None) -> None:
    """List enrolled people ("needs re-enrollment": no template of the running model)."""
    from .reembed import configured_model_id, coverage

    people: list[Any]
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            people = a.people()
            stale = set(a.needs_reenrollment(configured_model_id(ctx.cfg)))
    else:
        with ctx.gallery() as g:
            people = g.people()
            stale = set(coverage(g, configured_model_id(ctx.cfg)).needs_reenrollment)
    if ctx.json:
        ctx.emit([p.__dict__ | {"needs_reenrollment": p.name in stale} for p in people])
        return
    if not people:
        click.echo("nobody enrolled")
    for p in people:
        state = "active" if p.active else "disabled"
        window = (
            f" valid {p.valid_from or '…'} to {p.valid_until or '…'}"
            if p.valid_from or p.valid_until
            else ""
        )
        redo = "\tneeds re-enrollment" if p.name in stale else ""
        rule = ""
        if getattr(p, "doors", None) is not None or getattr(p, "schedule", None) is not None:
            rule = f"\tdoors {','.join(p.doors) if p.doors else 'all'} {p.schedule or 'always'}"
        click.echo(
            f"{p.name}\t{p.display_name or p.name}\t{state}\t{p.templates} template(s)"
            f"{window}{rule}{redo}"
        )


@click.command(cls=FleetCommand)
@click.argument("name")
@fleet_option
@common
def remove(ctx: Ctx, name: str, fleet: str | None) -> None:
    """Remove NAME and all their templates."""
    refuse_local_edit(ctx.cfg, fleet)
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            n = a.remove(name)
    else:
        with ctx.gallery() as g:
            n = g.remove(name)
    ctx.emit({"name": name, "templates_removed": n}, f"{name}: removed ({n} template(s))")


@click.command(cls=FleetCommand)
@click.argument("old")
@click.argument("new")
@fleet_option
@common
def rename(ctx: Ctx, old: str, new: str, fleet: str | None) -> None:
    """Rename OLD to NEW."""
    refuse_local_edit(ctx.cfg, fleet)
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            a.rename(old, new)
    else:
        with ctx.gallery() as g:
            g.rename(old, new)
    ctx.emit({"old": old, "new": new}, f"{old}: renamed to {new}")


@click.command(cls=FleetCommand)
@click.argument("name")
@fleet_option
@common
def forget(ctx: Ctx, name: str, fleet: str | None) -> None:
    """Erase NAME, their templates and snapshots for good (the log keeps the name).

    With --fleet: at the centre, and at each door on its next sync.
    """
    from .snapshots import configured_store, forget_person

    refuse_local_edit(ctx.cfg, fleet)
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            n = a.forget(name)
        ctx.emit({"name": name, "templates_erased": n},
                 f"{name}: forgotten at the fleet ({n} template(s)); each door erases them"
                 " on its next sync")
        return
    with ctx.gallery() as g:
        n, snapshots = forget_person(g, configured_store(ctx.cfg), name)
    ctx.emit(
        {"name": name, "templates_erased": n, "snapshots_erased": snapshots},
        f"{name}: forgotten ({n} template(s), {snapshots} snapshot(s) erased;"
        " backups hold them until pruned)",
    )


def _field(value: str | None) -> Any:
    """A --option's value for Gallery.update: absent = keep, "none" or "" = clear."""
    from .people import KEEP

    if value is None:
        return KEEP
    return None if value.strip().lower() in ("", "none") else value


@click.command("set", cls=FleetCommand)
@click.argument("name")
@click.option("--display-name", help="Name spoken in the greeting ('none': use NAME).")
@click.option("--notes", help="Free text for admins ('none' clears it).")
@click.option("--valid-from", help="ISO-8601 time from which NAME may enter ('none': no limit).")
@click.option("--valid-until", help="ISO-8601 time until which NAME may enter ('none': no limit).")
@click.option("--card", help="FACILITY:CARD sent by a Wiegand output on a grant ('none' clears).")
@fleet_option
@common
def set_(
    ctx: Ctx,
    name: str,
    display_name: str | None,
    notes: str | None,
    valid_from: str | None,
    valid_until: str | None,
    card: str | None,
    fleet: str | None,
) -> None:
    """Change NAME's greeting name, notes, validity window or card (audited)."""
    refuse_local_edit(ctx.cfg, fleet)
    if fleet is not None:
        fields = {"display_name": display_name, "notes": notes, "valid_from": valid_from,
                  "valid_until": valid_until, "card": card}
        given = {k: _field(v) for k, v in fields.items() if v is not None}
        if not given:
            fail("give at least one of --display-name, --notes, --valid-from, --valid-until,"
                 " --card", 2)
        with ctx.fleet(fleet) as a:
            fp = a.update(name, card_bits=ctx.cfg.wiegand.format, **given)
        window = f"{fp.valid_from or '…'} to {fp.valid_until or '…'}"
        ctx.emit(fp.__dict__, f"{fp.name}: greeted as {fp.display_name or fp.name},"
                 f" valid {window}, card {fp.card or 'none'}")
        return
    if card is not None:
        from .cards import set_card

        with ctx.gallery() as g:
            c = set_card(g, name, _field(card), ctx.cfg.wiegand.format)
        ctx.emit({"name": name, "card": c and str(c)}, f"{name}: card {c or 'none'}")
        if display_name is None and notes is None and valid_from is None and valid_until is None:
            return
    if display_name is None and notes is None and valid_from is None and valid_until is None:
        fail("give at least one of --display-name, --notes, --valid-from, --valid-until, --card", 2)
    with ctx.gallery() as g:
        p = g.update(
            name,
            display_name=_field(display_name),
            notes=_field(notes),
            valid_from=_field(valid_from),
            valid_until=_field(valid_until),
        )
    window = f"{p.valid_from or '…'} to {p.valid_until or '…'}"
    ctx.emit(p.__dict__, f"{p.name}: greeted as {p.display_name or p.name}, valid {window}")


def _set_active(ctx: Ctx, name: str, active: bool, fleet: str | None) -> None:
    refuse_local_edit(ctx.cfg, fleet)
    if fleet is not None:
        with ctx.fleet(fleet) as a:
            a.set_active(name, active)
    else:
        with ctx.gallery() as g:
            g.set_active(name, active)
    word = "enabled" if active else "disabled"
    ctx.emit({"name": name, "active": active}, f"{name}: {word}")


@click.command(cls=FleetCommand)
@click.argument("name")
@fleet_option
@common
def disable(ctx: Ctx, name: str, fleet: str | None) -> None:
    """Keep NAME enrolled but deny them access."""
    _set_active(ctx, name, False, fleet)


@click.command(cls=FleetCommand)
@click.argument("name")
@fleet_option
@common
def enable(ctx: Ctx, name: str, fleet: str | None) -> None:
    """Let a disabled NAME in again."""
    _set_active(ctx, name, True, fleet)
