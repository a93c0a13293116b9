"""``edge`` commands that look at faces: verify, identify, eval and liveness.

Thin layers over :mod:`edge.verify`, :class:`~edge.match.Matcher`,
:mod:`edge.evaluate` and :mod:`edge.spoofeval` (the ``--spoof`` part of
``edge eval`` and ``edge liveness``).
"""

from __future__ import annotations

import sys

import click

from .cli_common import Ctx, PathArg, common, fail


@click.command()
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


@click.command()
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


@click.command("eval")
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

@click.command()
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
