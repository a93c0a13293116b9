"""What ``edge eval`` prints and draws: the text report and the PNG (ROC, histograms).

Kept apart from :mod:`edge.evaluate` (the measures) so the measures stay
readable in one sitting; matplotlib is imported only when a plot is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgeError, ImageError
from .evaluate import Evaluation, rates_at, roc, summary


def _far_label(far: float) -> str:
    return "0" if far == 0 else f"{far:.0e}".replace("e-0", "e-")


def format_text(ev: Evaluation) -> str:
    """The report an installer reads: one measure per line."""
    g, imp = summary(ev.genuine), summary(ev.impostor)

    def rng(s: dict[str, Any]) -> str:
        return "" if not s["count"] else f", scores {s['min']:.3f} .. {s['max']:.3f}"

    tar, far = rates_at(ev.genuine, ev.impostor, ev.threshold)
    passed = int(np.sum(ev.impostor >= ev.threshold))
    lines = [
        f"photos: {ev.photos} of {ev.identities} people, {len(ev.unusable)} unusable",
        f"genuine pairs (same person): {g['count']}{rng(g)}",
        f"impostor pairs (different people): {imp['count']}{rng(imp)}",
        f"at match.threshold {ev.threshold:.2f}: TAR {tar:.3f}, FAR {far:.4f} "
        f"({passed} of {imp['count']} impostor pairs pass)",
    ]
    for p in ev.at_far:
        note = "" if p.resolvable else f"  (too few impostor pairs to measure {_far_label(p.far)})"
        lines.append(
            f"TAR at FAR {_far_label(p.far):>5}: {p.tar:.3f}  threshold {p.threshold:.4f}{note}"
        )
    lines.append(f"EER: {ev.eer:.4f} at threshold {ev.eer_threshold:.3f}")
    t = ev.target
    lines.append(
        f"threshold for FAR {_far_label(t.far)} (--target-far): {t.threshold:.4f} "
        f"-> TAR {t.tar:.3f}, FAR {t.achieved_far:.4f}"
    )
    cs = ev.closed_set
    lines.append(
        f"closed set ({cs['probes']} photos, each against all others): rank-1 {cs['rank1']:.3f}, "
        "precision@1..5 " + " ".join(f"{v:.3f}" for v in cs["precision_at_k"])
    )
    os_, gen, st = ev.open_set, ev.open_set["genuine"], ev.open_set["strangers"]
    lines += [
        f"open set (threshold {os_['threshold']:.2f}, margin {os_['margin']:.2f}, "
        "first photo of each person enrolled):",
        f"  genuine probes: {gen['right']} named right, {gen['wrong']} named wrong, "
        f"{gen['not_named']} not named, of {gen['probes']}",
        f"  strangers (each person left out in turn): {st['accepted']} of {st['probes']} "
        "named as someone enrolled",
    ]
    lines += [
        f"  let in: {a['file']} as {a['named']} ({a['similarity']:.3f})"
        for a in os_["accepted"][:10]
    ]
    if len(os_["accepted"]) > 10:
        lines.append(f"  … and {len(os_['accepted']) - 10} more (see --json)")
    lines += [f"unusable: {u}" for u in ev.unusable]
    return "\n".join(lines)


def plot(ev: Evaluation, path: str | Path) -> None:
    """Write a PNG: the ROC (TAR against FAR, log scale) and both score histograms.

    matplotlib is imported here, only when a plot is asked for.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeError("--plot needs matplotlib (pip install matplotlib)") from None
    far, tar, _ = roc(ev.genuine, ev.impostor)
    floor = 1.0 / max(ev.impostor.size, 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.plot(np.maximum(far, floor / 2), tar, lw=1.5)
    tar_t, far_t = rates_at(ev.genuine, ev.impostor, ev.threshold)
    ax1.plot(
        [max(far_t, floor / 2)],
        [tar_t],
        "o",
        color="C3",
        label=f"match.threshold {ev.threshold:.2f}: TAR {tar_t:.3f}, FAR {far_t:.4f}",
    )
    ax1.set_xscale("log")
    ax1.set_xlim(floor / 2, 1.0)
    zero = ev.at_far[-1]  # FAR 0: drawn at the left edge
    ax1.set_ylim(max(0.0, min(zero.tar, tar_t) - 0.05), 1.005)
    ax1.plot([floor / 2], [zero.tar], "s", color="k", label=f"FAR 0: TAR {zero.tar:.3f}")
    ax1.set_xlabel(f"FAR (impostor pairs accepted; left edge = none of {ev.impostor.size})")
    ax1.set_ylabel("TAR (genuine pairs accepted)")
    ax1.set_title(f"ROC  (EER {ev.eer:.4f})")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)
    low = min(-0.2, float(np.concatenate([ev.genuine, ev.impostor]).min(initial=0.0)))
    bins = np.linspace(math.floor(low * 10) / 10, 1.0, 66)
    ax2.hist(
        ev.impostor,
        bins=bins,
        alpha=0.6,
        density=True,
        color="C1",
        label=f"impostor ({ev.impostor.size})",
    )
    ax2.hist(
        ev.genuine,
        bins=bins,
        alpha=0.6,
        density=True,
        color="C0",
        label=f"genuine ({ev.genuine.size})",
    )
    ax2.axvline(ev.threshold, color="C3", lw=1.5, label=f"match.threshold {ev.threshold:.2f}")
    if math.isfinite(ev.target.threshold):
        ax2.axvline(
            ev.target.threshold,
            color="k",
            ls="--",
            lw=1,
            label=f"FAR {_far_label(ev.target.far)} threshold {ev.target.threshold:.4f}",
        )
    ax2.set_xlabel("cosine similarity")
    ax2.set_ylabel("share of pairs (density)")
    ax2.set_title("score histograms")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise ImageError(f"{path}: cannot write plot ({e.strerror or e})") from None
    finally:
        plt.close(fig)
