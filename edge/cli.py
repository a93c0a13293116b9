"""The ``edge`` command for admins over SSH: a thin layer over the library.

Every command takes ``--db``, ``--config`` (or ``$EDGE_DB``, ``$EDGE_CONFIG``)
and ``--json``. Exit codes: 0 done, 1 refused (bad input, no face, unknown
name, …), 2 usage or configuration error. Any :class:`EdgeError` becomes one
line on stderr, never a traceback. Heavy modules are imported inside the
commands so ``edge --help`` and ``edge list`` start fast.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .errors import ConfigError, EdgeError

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """What every command shares: the options, and the config and gallery opened lazily."""

    def __init__(
        self, config: str | None, db: str | None, as_json: bool, create: bool = False
    ) -> None:
        self.config_path = config
        self.db_path = db
        self.json = as_json
        self.create = create
        self._cfg: Any = None

    @property
    def cfg(self) -> Any:
        if self._cfg is None:
            from .config import load_config

            self._cfg = load_config(self.config_path)
        return self._cfg

    def db(self) -> Path:
        cfg = self.cfg  # a broken config is refused even when --db is given
        return Path(self.db_path) if self.db_path else cfg.path(cfg.gallery.db)

    def gallery(self, create: bool = False) -> Any:
        """The gallery; a missing one is refused unless ``create`` or ``--create``."""
        from .gallery import open_gallery

        return open_gallery(self.cfg, self.db(), actor(), create=create or self.create)

    def engine(self) -> Any:
        from .engine import Engine

        return Engine(self.cfg)

    def emit(self, obj: Any, text: str | None = None) -> None:
        """Print ``obj`` as JSON with --json, else ``text`` (when given)."""
        if self.json:
            click.echo(json.dumps(obj, ensure_ascii=False))
        elif text is not None:
            click.echo(text)


def actor() -> str:
    """Who is running the command: the sudo caller, else the login name."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def bundle_passphrase(confirm: bool) -> str:
    """$EDGE_BUNDLE_PASSPHRASE, else asked on the terminal (twice to seal a bundle)."""
    env = os.environ.get("EDGE_BUNDLE_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        fail("set EDGE_BUNDLE_PASSPHRASE, or run in a terminal to be asked", 2)
    return str(
        click.prompt("Bundle passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    )


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"edge: {message}", err=True)
    sys.exit(code)


class PathArg(click.Path):
    """A click.Path whose refusal is one line naming the path and the reason.

    click's own is a three-line Usage/Try/Error block; every other bad input
    of ``edge`` is one ``edge: ...`` line, so a path is too (exit 2).
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            reason = e.message.split("' ", 1)[-1].rstrip(".")
            reason = reason.replace("is a directory", "is a folder, not a file")
            option = param.opts[0] if param is not None and param.opts else ""
            what = f"{option} {value}" if option.startswith("-") else str(value)
            fail(f"{what}: {reason}", 2)


def common(f: F) -> F:
    """--config, --db and --json for every command, declared once."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option(
        "--create", is_flag=True, help="Create the gallery if --db names none yet."
    )
    @click.option(
        "--db",
        envvar="EDGE_DB",
        type=PathArg(dir_okay=False),
        help="Gallery database (default: gallery.db in the config).",
    )
    @click.option(
        "--config",
        envvar="EDGE_CONFIG",
        type=PathArg(dir_okay=False),
        help="Configuration file (default: config.yaml).",
    )
    @functools.wraps(f)
    def wrapper(
        config: str | None, db: str | None, as_json: bool, create: bool, **kw: Any
    ) -> Any:
        ctx = Ctx(config, db, as_json, create)
        try:
            return f(ctx, **kw)
        except ConfigError as e:
            fail(str(e), 2)
        except EdgeError as e:
            fail(str(e), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-access")
def main() -> None:
    """edge-access: enroll, remove and audit people; run and check the door."""


# --------------------------------------------------------------- people


@main.command()
@click.argument("name")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--display-name", help="Name spoken in the greeting (default: NAME).")
@click.option("--camera", is_flag=True, help="Take the photos from the camera.")
@click.option("--source", help="Camera source for --camera (default: camera.source).")
@click.option("--frames", type=click.IntRange(1, 50), help="Frames to take with --camera.")
@click.option("--force", is_flag=True, help="Enroll even a face already enrolled as someone else.")
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
) -> None:
    """Enroll NAME from photos (IMAGE...) or from the camera; all or nothing."""
    from . import enroll as enr

    if camera == bool(images):
        fail("give either photos or --camera", 2)
    from .records import check_name

    check_name(name)
    engine = ctx.engine()
    if camera:
        from .camera import open_source

        cam = open_source(source or ctx.cfg.camera.source, ctx.cfg.camera)
        result = enr.enroll_from_camera(
            engine, lambda: ctx.gallery(create=True), cam, name,
            frames or ctx.cfg.enroll.camera_frames, display_name, force=force,
        )
    else:
        templates, rejected = enr.templates_from_images(engine, images)
        if rejected:  # one line per refused photo; nothing is enrolled
            for r in rejected[:-1]:
                click.echo(f"edge: {r.reason}", err=True)
            fail(rejected[-1].reason)
        with ctx.gallery(create=True) as g:
            result = enr.enroll(
                g, name, templates, display_name,
                refuse_look_alike=None if force else ctx.cfg.match.threshold,
            )
    ctx.emit(
        {"name": name, "added": result.added, "skipped": result.skipped_duplicates},
        f"{name}: {result.added} template(s) added"
        + (f", {result.skipped_duplicates} already enrolled" if result.skipped_duplicates else ""),
    )


@main.command("list")
@common
def list_(ctx: Ctx) -> None:
    """List enrolled people ("needs re-enrollment": no template of the running model)."""
    from .reembed import configured_model_id, coverage

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
        click.echo(
            f"{p.name}\t{p.display_name or p.name}\t{state}\t{p.templates} template(s)"
            f"{window}{redo}"
        )


@main.command()
@click.argument("name")
@common
def remove(ctx: Ctx, name: str) -> None:
    """Remove NAME and all their templates."""
    with ctx.gallery() as g:
        n = g.remove(name)
    ctx.emit({"name": name, "templates_removed": n}, f"{name}: removed ({n} template(s))")


@main.command()
@click.argument("old")
@click.argument("new")
@common
def rename(ctx: Ctx, old: str, new: str) -> None:
    """Rename OLD to NEW."""
    with ctx.gallery() as g:
        g.rename(old, new)
    ctx.emit({"old": old, "new": new}, f"{old}: renamed to {new}")


@main.command()
@click.argument("name")
@common
def forget(ctx: Ctx, name: str) -> None:
    """Erase NAME, their templates and snapshots for good (the log keeps the name)."""
    from .snapshots import configured_store, forget_person

    with ctx.gallery() as g:
        n, snapshots = forget_person(g, configured_store(ctx.cfg), name)
    ctx.emit(
        {"name": name, "templates_erased": n, "snapshots_erased": snapshots},
        f"{name}: forgotten ({n} template(s), {snapshots} snapshot(s) erased;"
        " backups hold them until pruned)",
    )


def _field(value: str | None) -> Any:
    """A --option's value for Gallery.update: absent = keep, "none" or "" = clear."""
    from .gallery import KEEP

    if value is None:
        return KEEP
    return None if value.strip().lower() in ("", "none") else value


@main.command("set")
@click.argument("name")
@click.option("--display-name", help="Name spoken in the greeting ('none': use NAME).")
@click.option("--notes", help="Free text for admins ('none' clears it).")
@click.option("--valid-from", help="ISO-8601 time from which NAME may enter ('none': no limit).")
@click.option("--valid-until", help="ISO-8601 time until which NAME may enter ('none': no limit).")
@click.option("--card", help="FACILITY:CARD sent by a Wiegand output on a grant ('none' clears).")
@common
def set_(
    ctx: Ctx,
    name: str,
    display_name: str | None,
    notes: str | None,
    valid_from: str | None,
    valid_until: str | None,
    card: str | None,
) -> None:
    """Change NAME's greeting name, notes, validity window or card (audited)."""
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


def _set_active(ctx: Ctx, name: str, active: bool) -> None:
    with ctx.gallery() as g:
        g.set_active(name, active)
    word = "enabled" if active else "disabled"
    ctx.emit({"name": name, "active": active}, f"{name}: {word}")


@main.command()
@click.argument("name")
@common
def disable(ctx: Ctx, name: str) -> None:
    """Keep NAME enrolled but deny them access."""
    _set_active(ctx, name, False)


@main.command()
@click.argument("name")
@common
def enable(ctx: Ctx, name: str) -> None:
    """Let a disabled NAME in again."""
    _set_active(ctx, name, True)


# --------------------------------------------------------------- recognition


@main.command()
@click.argument("images", nargs=-1)
@click.option(
    "--pairs",
    help="CSV with file_x,file_y (and optional same) columns; paths relative to its folder.",
)
@common
def verify(ctx: Ctx, images: tuple[str, ...], pairs: str | None) -> None:
    """Say whether two photos show the same person (IMG1 IMG2, or --pairs FILE.csv)."""
    from .verify import Pair, PhotoEmbeddings, read_pairs
    from .verify import verify as verify_pair

    if bool(pairs) == bool(images) or (images and len(images) != 2):
        fail("give two photos, or --pairs FILE.csv", 2)
    rows = read_pairs(pairs) if pairs else [Pair(images[0], images[1], images[0], images[1])]
    photos = PhotoEmbeddings(ctx.engine())
    errors = 0
    for pair in rows:  # every row is answered; a broken one is an error, never a "no"
        r = verify_pair(photos, pair, ctx.cfg.match.threshold)
        if r.error:
            errors += 1
            click.echo(f"edge: {r.error}", err=True)
        ctx.emit(
            r.as_dict(),
            f"{r.file_x}\t{r.file_y}\t{'-' if r.similarity is None else f'{r.similarity:.3f}'}"
            f"\t{'error' if r.error else 'same' if r.verified else 'different'}",
        )
    if errors:
        sys.exit(1)


#: ``identify``'s word for each :meth:`Match.refusal`: an admin disabled them, not "inactive".
_STATUS = {None: "active", "inactive": "disabled"}


@main.command()
@click.argument("image")
@common
def identify(ctx: Ctx, image: str) -> None:
    """Say who the gallery thinks is in IMAGE (every face)."""
    from .image import read_image

    e = ctx.cfg.enroll
    img = read_image(image, e.max_image_pixels, e.max_image_bytes)
    engine = ctx.engine()
    with ctx.gallery() as g:
        matcher = g.matcher(ctx.cfg.match, engine.embedder.model_id)
    faces = []
    for f in engine.faces(img.bgr, still=True):
        m = matcher.match(f.embedding) if f.embedding is not None else None
        faces.append(
            {
                "box": [round(v, 1) for v in f.box],
                "name": m.name if m else None,
                "similarity": round(m.similarity, 4) if m else None,
                # Who would be let in: a recognised but disabled person is not.
                "status": "too small" if m is None else _STATUS.get(m.refusal(), m.refusal()),
            }
        )
    if ctx.json:
        ctx.emit({"faces": faces})
        return
    if not faces:
        click.echo(f"{image}: no face found")
    for face in faces:
        who = face["name"] or "unknown"
        sim = "-" if face["similarity"] is None else f"{face['similarity']:.3f}"
        status = "" if face["status"] in ("active", "unknown") else f"\t({face['status']})"
        click.echo(f"{who}\t{sim}\tbox {face['box']}{status}")


@main.command("eval")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--pairs", type=click.Path(dir_okay=False), help="CSV: file_x,file_y,same.")
@click.option("--only", multiple=True, help="Only people whose folder starts with this.")
@click.option("--target-far", type=click.FloatRange(0, 1), default=1e-3, show_default=True,
              help="Report the threshold that keeps FAR at or below this.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Write a PNG.")
@click.option(
    "--spoof",
    type=PathArg(exists=True, file_okay=False),
    help="Anti-spoofing instead: a folder with live/ and one subfolder per attack type.",
)
@common
def eval_(
    ctx: Ctx,
    folder: str | None,
    pairs: str | None,
    only: tuple[str, ...],
    target_far: float,
    plot_file: str | None,
    spoof: str | None,
) -> None:
    """Measure recognition on labelled photos: FOLDER/<person>/*.jpg, or --pairs CSV.

    Reports TAR at several FARs, the EER, the threshold for --target-far,
    rank-1 and precision@k, and how many strangers the configured threshold
    and margin would let in. Use it to calibrate match.threshold on your
    own staff photos (see README: Calibrating at your site).

    With --spoof FOLDER it measures the passive liveness check instead:
    APCER per attack type and BPCER (ISO/IEC 30107-3 terms).
    """
    from . import evaluate

    if spoof:
        if folder or pairs:
            fail("give --spoof FOLDER alone, not with a FOLDER or --pairs", 2)
        from .spoofeval import SpoofScorer
        from .spoofeval import evaluate as evaluate_spoof
        from .spoofeval import plot as plot_spoof

        report = evaluate_spoof(SpoofScorer(ctx.engine()), spoof)
        if plot_file:
            plot_spoof(report, plot_file)
        ctx.emit(report.as_dict(), report.text())
        return
    if bool(folder) == bool(pairs):
        fail("give a FOLDER of people's photos, or --pairs FILE.csv (or --spoof FOLDER)", 2)
    def progress(n: int) -> None:  # on a terminal only: a big folder takes minutes on a Pi
        click.echo(f"\rembedded {n} photos", err=True, nl=False)

    ev = evaluate.run(
        ctx.engine(), folder, pairs, only, target_far, progress if sys.stderr.isatty() else None
    )
    if sys.stderr.isatty():
        click.echo(err=True)
    from .evalreport import format_text, plot

    if plot_file:
        plot(ev, plot_file)
    ctx.emit(ev.to_json(), format_text(ev))


# --------------------------------------------------------------- audit and data


@main.command()
@click.option("--since", help="Only events at or after this ISO-8601 time.")
@click.option("--kind", help="Only events of this kind (access, door, enroll, …).")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N.")
@common
def events(ctx: Ctx, since: str | None, kind: str | None, limit: int | None) -> None:
    """Show the audit log, oldest first, with what each admin change did."""
    from .audit import check_kind, describe

    with ctx.gallery() as g:
        rows = g.events(since=since, kind=kind and check_kind(g, kind), limit=limit)
    if ctx.json:
        ctx.emit([r.__dict__ for r in rows])
        return
    for r in rows:
        click.echo(describe(r))


@main.command("export")
@click.argument("file")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@common
def export_(ctx: Ctx, file: str, force: bool) -> None:
    """Write every person and template to FILE, sealed under a passphrase.

    The passphrase comes from $EDGE_BUNDLE_PASSPHRASE, or is asked for.
    """
    from .bundle import check_target, export_bundle

    check_target(Path(file), force)  # before asking for a passphrase
    passphrase = bundle_passphrase(confirm=True)
    with ctx.gallery() as g:
        n = export_bundle(g, file, passphrase, force=force)
    ctx.emit({"file": file, "people": n}, f"{file}: {n} people exported")


@main.command("import")
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
@common
def import_(
    ctx: Ctx, file: str, allow_unencrypted: bool, merge: bool, rename: tuple[str, ...]
) -> None:
    """Add the people and templates in FILE (opened and checked before the gallery is touched).

    A bundle name already here is refused unless --merge or --rename says what it is.
    """
    from .bundle import import_bundle, is_sealed_bundle

    passphrase = bundle_passphrase(confirm=False) if is_sealed_bundle(file) else None
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


@main.command()
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


@main.command()
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


@main.command()
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


@main.group()
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


# --------------------------------------------------------------- operations


@main.command()
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


@main.command()
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
            ]
        ),
    )
    if not running:
        sys.exit(1)


@main.group()
def models() -> None:
    """Fetch and check the model files."""


@models.command("fetch")
@click.option("--force", is_flag=True, help="Fetch again even files that check out.")
@click.option("--skip-build", is_flag=True, help="Do not run converter scripts.")
@common
def models_fetch(ctx: Ctx, force: bool, skip_build: bool) -> None:
    """Install the manifest's model files (mirror, wheel, URL, or build)."""
    from . import models as m

    statuses = m.fetch(
        ctx.cfg.path(ctx.cfg.models.dir),
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


@main.command()
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


@main.command()
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


@main.group("console")
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


# --------------------------------------------------------------- anti-spoofing
# `edge liveness` and the `--spoof` part of `edge eval` (edge/spoofeval.py).


@main.command()
@click.argument("images", nargs=-1, required=True)
@common
def liveness(ctx: Ctx, images: tuple[str, ...]) -> None:
    """Score every face in each IMAGE with the passive check: live or attack."""
    from .spoofeval import SpoofScorer

    scorer = SpoofScorer(ctx.engine())
    errors = 0
    for path in images:
        r = scorer.image(path)
        if r.error is not None:
            errors += 1
            if not ctx.json:
                click.echo(f"edge: {r.error}", err=True)
        elif not ctx.json and not r.faces:
            click.echo(f"{path}: no face found")
        ctx.emit(r.as_dict(), None)
        if not ctx.json:
            for f in r.faces:
                box = [round(v, 1) for v in f.box]
                click.echo(f"{path}\t{f.verdict}\t{f.live:.3f}\tbox {box}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
