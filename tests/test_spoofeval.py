"""Anti-spoofing on ../shared/eval/spoof with the real models: the issue's per-image
targets, the V1SE conversion's parity with PyTorch, and the CLI's output shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.engine import Engine
from edge.liveness import SE_SCALE, FusedLiveness, PassiveLiveness, load_passive
from edge.runtime import load_interpreter
from edge.spoofeval import SpoofReport, SpoofScorer, evaluate

from .conftest import FACES, MODELS, ROOT

# Its module fixtures (the scorer, the scored spoof set) are built once: on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("spoofeval")

SPOOF = Path(os.environ.get("EDGE_EVAL", ROOT.parent / "shared" / "eval")) / "spoof"
SE_MODEL = MODELS / "minifasnet_v1se.tflite"
SE_CHECKPOINT = MODELS / "4_0_0_80x80_MiniFASNetV1SE.pth"


def _need(path: Path) -> None:
    if not path.exists():
        msg = f"{path} missing: provisioning fetches or builds it (make models)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def scorer(cfg) -> SpoofScorer:
    _need(SPOOF)
    return SpoofScorer(Engine(cfg))


@pytest.fixture(scope="module")
def report(scorer: SpoofScorer) -> SpoofReport:
    return evaluate(scorer, SPOOF)


# --- the targets, per image, at the shipped threshold ------------------------------


def test_no_print_and_no_screen_passes(report: SpoofReport):
    apcer = report.apcer()
    assert set(apcer) == {"print", "screen"}
    assert apcer == {"print": 0.0, "screen": 0.0}
    byname = {a.name: a for a in report.attacks}
    assert len(byname["print"].scores) == 140  # every print frame yields its face
    assert len(byname["screen"].scores) >= 200  # a screen crop with no face cannot pass either


def test_attacks_stay_well_below_the_threshold(report: SpoofReport):
    """Margin for attacks we have not seen: the best attack scores 0.03 under the threshold."""
    worst = max(max(a.scores) for a in report.attacks)
    assert worst < report.threshold - 0.02


def test_live_full_frames_are_refused_at_most_5_percent(report: SpoofReport):
    nuaa = {c.name: c for c in report.live_sources}["live:nuaa"]
    assert nuaa.images == len(nuaa.scores) == 140  # a face found in every full frame
    bpcer = nuaa.error_rate(report.threshold)
    assert bpcer is not None and bpcer <= 0.05


def test_live_crops_are_reported_apart(report: SpoofReport):
    sources = {c.name for c in report.live_sources}
    assert sources == {"live:nuaa", "live:apfol"}
    d = report.as_dict()
    assert set(d["bpcer_by_source"]) == {"nuaa", "apfol"}
    assert d["live"]["images"] == 212


# --- the fused pair and the V1SE conversion ---------------------------------------


def test_the_fused_pair_is_the_mean_of_both_models(scorer: SpoofScorer, cfg):
    _need(SE_MODEL)
    fused = load_passive(Engine(cfg).interpreter, "fused")
    assert [m.scale for m in fused.models] == [2.7, SE_SCALE]
    image = cv2.imread(str(FACES / "spoof" / "image_T1.jpg"))
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    box = scorer.engine.detect(rgb)[0].box
    v2, se = fused.scores(image, box)
    assert fused.score(image, box) == pytest.approx((v2 + se) / 2)
    assert v2 == pytest.approx(scorer.passive.score(image, box))
    assert se > 0.9  # V1SE too says the live photo is live


def _convert_python() -> str | None:
    for p in (os.environ.get("EDGE_CONVERT_PYTHON"), ROOT / ".venv-convert" / "bin" / "python",
              ROOT.parent / "main" / ".venv-convert" / "bin" / "python"):
        if p and Path(p).is_file():
            return str(p)
    return None


PYTORCH_SCORES = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[3])
from convert_minifasnet import build
model = build(__import__("pathlib").Path(sys.argv[1]))
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    p = torch.softmax(model(x), 1)[:, 1].numpy()
print(" ".join(f"{v:.6f}" for v in p))
"""


def test_v1se_conversion_matches_pytorch_on_real_crops(scorer: SpoofScorer, tmp_path: Path):
    _need(SE_MODEL)
    _need(SE_CHECKPOINT)
    python = _convert_python()
    if python is None:
        msg = "no PyTorch venv for the converter (.venv-convert)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    se = PassiveLiveness(load_interpreter(SE_MODEL), SE_SCALE)
    crops, lite = [], []
    names = ["live/nuaa_0001_00_00_01_400.jpg", "print/nuaa_0001_00_00_01_0.jpg"]
    photos = [SPOOF / n for n in names if (SPOOF / n).is_file()]
    photos += [FACES / "spoof" / n for n in ("image_F1.jpg", "image_F2.jpg", "image_T1.jpg")]
    for p in photos:
        image = cv2.imread(str(p))
        box = scorer.engine.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))[0].box
        crops.append(se.crop(image, box).astype(np.float32).transpose(2, 0, 1))
        lite.append(se.score(image, box))
    np.save(tmp_path / "x.npy", np.stack(crops))
    out = subprocess.run(
        [python, "-c", PYTORCH_SCORES, str(SE_CHECKPOINT), str(tmp_path / "x.npy"),
         str(ROOT / "scripts")],
        capture_output=True, text=True, check=True, timeout=300,
    )
    torch_scores = [float(v) for v in out.stdout.split()]
    assert len(torch_scores) == len(lite) >= 3
    assert np.allclose(lite, torch_scores, atol=1e-3), (lite, torch_scores)
    assert {round(v) for v in torch_scores} == {0, 1}  # the set holds live and attack faces


def test_fused_liveness_needs_a_model():
    with pytest.raises(ValueError):
        FusedLiveness([])


# --- the CLI ------------------------------------------------------------------------


def test_edge_liveness_json_is_one_object_per_image(tmp_path: Path):
    _need(SPOOF)
    live = SPOOF / "live" / "nuaa_0001_00_00_01_400.jpg"  # scores 0.99
    attack = SPOOF / "print" / "nuaa_0001_00_00_01_0.jpg"
    missing = tmp_path / "nope.jpg"
    r = CliRunner().invoke(main, ["liveness", "--json", str(live), str(attack), str(missing)])
    assert r.exit_code == 1  # one image could not be read
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(live), str(attack), str(missing)]
    assert set(rows[2]) == {"file", "error"} and "nope.jpg" in rows[2]["error"]
    for row, verdict in ((rows[0], "live"), (rows[1], "attack")):
        assert set(row) == {"file", "faces"} and len(row["faces"]) == 1
        face = row["faces"][0]
        assert set(face) == {"box", "live", "verdict"}
        assert len(face["box"]) == 4 and 0.0 <= face["live"] <= 1.0
        assert face["verdict"] == verdict


def test_edge_liveness_text_names_the_verdict():
    r = CliRunner().invoke(main, ["liveness", str(FACES / "spoof" / "image_F1.jpg")])
    assert r.exit_code == 0, r.output
    assert "\tattack\t" in r.stdout


def test_edge_eval_spoof_json_and_plot(tmp_path: Path):
    _need(SPOOF)
    # A small folder of the same layout: symlinks, no copies of the photos.
    for sub, n in (("live", 6), ("print", 3), ("screen", 3)):
        (tmp_path / "set" / sub).mkdir(parents=True)
        for p in sorted((SPOOF / sub).iterdir())[:n]:
            (tmp_path / "set" / sub / p.name).symlink_to(p)
    png = tmp_path / "hist.png"
    r = CliRunner().invoke(
        main, ["eval", "--spoof", str(tmp_path / "set"), "--json", "--plot", str(png)]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["apcer"]) == {"print", "screen"}
    assert d["live"]["images"] == 6 and d["threshold"] == pytest.approx(0.9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edge_eval_spoof_refuses_a_folder_without_live(tmp_path: Path):
    (tmp_path / "print").mkdir()
    r = CliRunner().invoke(main, ["eval", "--spoof", str(tmp_path)])
    assert r.exit_code == 1
    assert "no live/ subfolder" in r.stderr and "Traceback" not in r.output


def test_cli_module_stays_importable_without_matplotlib():
    out = subprocess.run(
        [sys.executable, "-c", "import edge.cli, edge.spoofeval, sys; "
         "print('matplotlib' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"
