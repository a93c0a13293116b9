"""``edge eval``: the measures on small arrays with known answers, then the real thing.

The end-to-end tests run the real models on a fixed subset of ../shared/eval
(three NUAA webcam subjects, 30 photos) through the CLI.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.config import load_config
from edge.errors import ImageError
from edge.evaluate import (
    closed_set,
    eer,
    open_set,
    pair_scores,
    read_labelled_pairs,
    roc,
    scan_folder,
    tar_at_far,
)

from .conftest import ROOT

# Its module fixtures (one edge eval run) are built once: on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("evaluate")

EVAL = ROOT.parent / "shared" / "eval"
SUBSET = ("nuaa_0001", "nuaa_0002", "nuaa_0003")
RUNNER = CliRunner(env={"EDGE_CONFIG": None, "EDGE_DB": None})

# --------------------------------------------------------------- verification measures


def test_tar_at_far_allows_exactly_the_permitted_impostors():
    genuine = [0.50, 0.60, 0.70, 0.80, 0.90]
    impostor = [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.55, 0.65]
    zero = tar_at_far(genuine, impostor, 0.0)  # above 0.65: 0.70, 0.80, 0.90
    assert zero.tar == pytest.approx(0.6) and zero.achieved_far == 0.0
    assert zero.threshold == 0.6501  # just above 0.65, in 4 decimals
    tenth = tar_at_far(genuine, impostor, 0.1)  # one impostor (0.65) may pass
    assert tenth.tar == pytest.approx(0.8) and tenth.achieved_far == pytest.approx(0.1)
    assert tenth.threshold == 0.5501
    assert tar_at_far(genuine, impostor, 1.0).tar == 1.0
    # 10 impostor pairs cannot measure a FAR of 1e-2.
    assert not tar_at_far(genuine, impostor, 1e-2).resolvable
    assert tar_at_far(genuine, impostor, 0.0).resolvable


def test_thresholds_are_printable_and_strictly_above_the_impostor():
    from edge.evaluate import above

    assert above(0.65) == 0.6501 and above(0.64999) == 0.65 and above(-0.2) == -0.1999
    assert all(above(x) > x for x in np.random.default_rng(0).uniform(-1, 1, 1000))


def test_tar_at_far_never_lets_tied_impostors_through():
    p = tar_at_far([0.5, 0.6], [0.5, 0.5, 0.1], 0.0)
    assert p.tar == 0.5 and p.achieved_far == 0.0  # the genuine 0.5 ties an impostor


def test_eer_where_far_and_frr_cross():
    value, threshold = eer([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65])
    assert value == pytest.approx(0.25)
    assert 0.6 < threshold <= 0.7 or threshold == pytest.approx(0.65)
    assert eer([0.8, 0.9], [0.1, 0.2])[0] == 0.0  # separable: no error


def test_roc_runs_from_nothing_accepted_to_everything():
    far, tar, t = roc([0.6, 0.9], [0.1, 0.7])
    assert list(t) == [0.9, 0.7, 0.6, 0.1]
    assert list(far) == [0.0, 0.5, 0.5, 1.0]
    assert list(tar) == [0.5, 0.5, 1.0, 1.0]


def test_pair_scores_split_every_unordered_pair_by_person():
    sim = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.3], [0.2, 0.3, 1.0]])
    genuine, impostor = pair_scores(sim, ["a", "a", "b"])
    assert list(genuine) == [0.9] and sorted(impostor) == [0.2, 0.3]


# --------------------------------------------------------------- identification measures

#: Three people, two photos each: a1 a2 b1 b2 c1 c2. b2 looks more like a1 than like b1.
LABELS = ["a", "a", "b", "b", "c", "c"]
SIM = np.array(
    [
        [1.00, 0.80, 0.10, 0.60, 0.10, 0.20],
        [0.80, 1.00, 0.20, 0.30, 0.10, 0.10],
        [0.10, 0.20, 1.00, 0.50, 0.30, 0.10],
        [0.60, 0.30, 0.50, 1.00, 0.20, 0.10],
        [0.10, 0.10, 0.30, 0.20, 1.00, 0.70],
        [0.20, 0.10, 0.10, 0.10, 0.70, 1.00],
    ]
)


def test_closed_set_rank1_and_precision_at_k():
    cs = closed_set(SIM, LABELS, max_k=2)
    assert cs["probes"] == 6
    # Nearest other photo: a1->a2, a2->a1, b1->b2, b2->a1 (wrong), c1->c2, c2->c1.
    assert cs["rank1"] == pytest.approx(5 / 6)
    # Two nearest: each probe has one same-person photo, so at most 1/2 each;
    # b2's two nearest are a1, b1: also one right.
    assert cs["precision_at_k"] == pytest.approx([5 / 6, 6 / 12])


def test_closed_set_skips_people_with_one_photo():
    cs = closed_set(SIM[:5, :5], LABELS[:5])
    assert cs["probes"] == 4


def test_open_set_genuine_and_left_out_strangers():
    # Enrolled: a1, b1, c1. Probes a2 (a 0.8 vs b 0.2: right), b2 (a 0.6 vs
    # b 0.5: a wins but margin 0.1 < 0.15 -> not named), c2 (c 0.7: right).
    out = open_set(SIM, LABELS, threshold=0.45, margin=0.15)
    assert out["genuine"] == {"probes": 3, "right": 2, "wrong": 0, "not_named": 1}
    # Strangers: b left out, b2 scores a1 0.6 vs c1 0.2 -> named "a" (let in);
    # every other left-out photo stays below 0.45.
    assert out["strangers"] == {"probes": 6, "accepted": 1}
    assert out["accepted"] == [{"probe": 3, "named": "a", "similarity": 0.6}]
    # A margin of 0.5 keeps b2 out too.
    assert open_set(SIM, LABELS, threshold=0.45, margin=0.5)["strangers"]["accepted"] == 0


def test_open_set_with_one_person_enrolled_measures_no_margin():
    out = open_set(SIM[:4, :4], LABELS[:4], threshold=0.55, margin=0.3)
    # b left out: gallery is a1 alone; b2 scores 0.6 against it -> let in.
    assert out["strangers"]["accepted"] == 1


# --------------------------------------------------------------- inputs


def test_pairs_csv_paths_are_relative_to_it_and_same_is_yes_or_no(tmp_path):
    (tmp_path / "pairs.csv").write_text(
        "\ufefffile_x,file_y,same\nann/1.jpg,ann/2.jpg,yes\nann/1.jpg,bob/1.jpg,0\n",
        encoding="utf-8",
    )
    rows = read_labelled_pairs(tmp_path / "pairs.csv")
    assert [(x.identity, y.identity, same) for x, y, same in rows] == [
        ("ann", "ann", True),
        ("ann", "bob", False),
    ]
    assert rows[0][0].path == str(tmp_path / "ann" / "1.jpg")
    assert len(read_labelled_pairs(tmp_path / "pairs.csv", only=("ann",))) == 1
    (tmp_path / "bad.csv").write_text("file_x,file_y,same\na/1.jpg,b/1.jpg,maybe\n")
    with pytest.raises(ImageError, match=r"bad.csv: line 2: .*same \(yes/no\)"):
        read_labelled_pairs(tmp_path / "bad.csv")
    (tmp_path / "nosame.csv").write_text("file_x,file_y\na/1.jpg,b/1.jpg\n")
    with pytest.raises(ImageError, match="needs a header with file_x,file_y,same"):
        read_labelled_pairs(tmp_path / "nosame.csv")


def test_a_folder_without_person_subfolders_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no photos in subfolders"):
        scan_folder(tmp_path)
    with pytest.raises(ImageError, match="not a folder"):
        scan_folder(tmp_path / "missing")
    samples = scan_folder(EVAL / "faces", only=SUBSET)
    assert len(samples) == 30 and {s.identity for s in samples} == set(SUBSET)


# --------------------------------------------------------------- end to end


def edge(*args: object):
    r = RUNNER.invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


@pytest.fixture(scope="module")
def folder_report(tmp_path_factory):
    """``edge eval --json --plot`` on the three-subject subset, run once."""
    png = tmp_path_factory.mktemp("plot") / "eval.png"
    only = [a for s in SUBSET for a in ("--only", s)]
    r = edge(
        "eval", EVAL / "faces", *only, "--json", "--plot", png, "--config", ROOT / "config.yaml"
    )
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), png


def test_eval_folder_counts_every_pair_and_person(folder_report):
    report, _ = folder_report
    assert report["photos"] == 30 and report["identities"] == 3 and report["unusable"] == []
    assert report["genuine"]["count"] == 3 * 45 and report["impostor"]["count"] == 300
    assert [p["far"] for p in report["tar_at_far"]] == [1e-2, 1e-3, 1e-4, 0.0]
    zero = report["tar_at_far"][-1]
    assert zero["achieved_far"] == 0.0 and zero["threshold"] > report["impostor"]["max"]
    assert report["target_far"]["far"] == 1e-3
    assert report["closed_set"]["probes"] == 30 and len(report["closed_set"]["precision_at_k"]) == 5
    os_ = report["open_set"]
    assert os_["genuine"]["probes"] == 27 and os_["strangers"]["probes"] == 30
    assert os_["strangers"]["accepted"] == len(os_["accepted"])
    shipped = load_config(ROOT / "config.yaml").match
    assert (os_["threshold"], os_["margin"]) == (shipped.threshold, shipped.margin)
    # Three webcam subjects in one office: every genuine probe is named right.
    assert os_["genuine"]["right"] == 27
    assert 0.0 <= report["eer"]["eer"] < 0.05


def test_eval_plot_is_a_png(folder_report):
    _, png = folder_report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_eval_pairs_measures_the_csv_rows_and_agrees_with_the_folder(folder_report):
    report, _ = folder_report
    with (EVAL / "pairs.csv").open() as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if all(r[k].split("/")[1] in SUBSET[:2] for k in ("file_x", "file_y"))
        ]
    r = edge(
        "eval",
        "--pairs",
        EVAL / "pairs.csv",
        "--only",
        SUBSET[0],
        "--only",
        SUBSET[1],
        "--json",
        "--config",
        ROOT / "config.yaml",
    )
    assert r.exit_code == 0, r.output
    pairs = json.loads(r.stdout)
    same = sum(r["same"] == "yes" for r in rows)
    assert pairs["genuine"]["count"] == same == 90  # every same-person pair of the two
    assert pairs["impostor"]["count"] == len(rows) - same
    assert pairs["identities"] == 2
    # The same photos give the same scores: the genuine range lies within the folder's.
    assert report["genuine"]["min"] <= pairs["genuine"]["min"]
    assert pairs["genuine"]["max"] <= report["genuine"]["max"]


def test_eval_text_report(folder_report):
    r = edge(
        "eval",
        EVAL / "faces",
        "--only",
        SUBSET[0],
        "--only",
        SUBSET[1],
        "--target-far",
        "0",
        "--config",
        ROOT / "config.yaml",
    )
    assert r.exit_code == 0, r.output
    text = r.stdout
    for needle in (
        "genuine pairs (same person): 90",
        "TAR at FAR  1e-3",
        "EER:",
        "threshold for FAR 0 (--target-far)",
        "rank-1",
        "precision@1..5",
        "strangers (each person left out in turn):",
    ):
        assert needle in text, needle


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        ((), 2, "give a FOLDER of people's photos, or --pairs FILE.csv"),
        (("/nonexistent-folder",), 1, "/nonexistent-folder: not a folder"),
        (("--pairs", "/nonexistent.csv"), 1, "/nonexistent.csv: cannot read pairs file"),
    ],
)
def test_eval_bad_input_is_one_line(args, code, needle):
    r = edge("eval", *args, "--config", ROOT / "config.yaml")
    assert r.exit_code == code and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edge: {needle}"), lines


def test_eval_with_nothing_to_compare_says_so(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "1.pgm").symlink_to(EVAL / "faces" / "att_s01" / "1.pgm")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "1.png").write_bytes(b"not an image")
    r = edge("eval", tmp_path, "--config", ROOT / "config.yaml")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "edge: nothing to measure: 0 same-person and 0 different-person pairs (need two or "
        f"more photos of each of two or more people); 1 unusable, e.g. {tmp_path}/bob/1.png: "
        "not an image (unknown format)"
    ]
