"""Model provisioning with real files: mirror, wheel member, checks, and refusals.

Nothing here touches the network. Tests that fetch write their own manifest
(real entries from models/manifest.toml, with the sources the test wants)
into tmp_path, point ``$EDGE_MODEL_MIRROR`` at a folder of real copies, and
send every https request to a dead local proxy, so an upstream URL in a
manifest is tried and fails at once. A wheel source finds its wheel already
in the cache, so pip is never run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.errors import ModelError
from edge.models import MANIFEST, ModelFile, check, fetch, manifest, require, sha256_file

from .conftest import MODELS, ROOT

MIRROR = Path(os.environ.get("EDGE_MODEL_MIRROR") or ROOT.parent / "shared" / "models")
#: Nothing listens on port 1: a connection there is refused at once.
DEAD_PROXY = "http://127.0.0.1:1"
CORE_ROLES = {"detect_short", "detect_full", "facemesh", "embed_mobilefacenet"}


# --------------------------------------------------------------- helpers


def mirrored() -> list[ModelFile]:
    """The manifest's entries the shared mirror holds right (built files are not there, and
    its SFace ONNX is not the upstream file: see the test of that below)."""
    assert MIRROR.is_dir(), f"the shared model mirror is missing: {MIRROR}"
    entries = [
        m
        for m in manifest()
        if (MIRROR / m.mirror).is_file() and sha256_file(MIRROR / m.mirror) == m.sha256
    ]
    assert {m.role for m in entries} >= CORE_ROLES
    return entries


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def write_manifest(path: Path, entries: Iterable[ModelFile], sources: Any = "keep") -> Path:
    """A manifest of ``entries``: their own sources, or ``sources(m)`` for each."""
    out = []
    for m in entries:
        srcs = m.sources if sources == "keep" else sources(m)
        inline = [
            "{ " + ", ".join(f"{k} = {_q(str(v))}" for k, v in s.items()) + " }" for s in srcs
        ]
        out += [
            "[[model]]",
            f"file = {_q(m.file)}",
            f"role = {_q(m.role)}",
            f"mirror = {_q(m.mirror)}",
            f"sha256 = {_q(m.sha256)}",
            f"size = {m.size}",
            f"licence = {_q(m.licence)}",
            f"what = {_q(m.what)}",
            "sources = [" + ", ".join(inline) + "]",
            "",
        ]
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def copy_mirror(dst: Path, entries: Iterable[ModelFile]) -> Path:
    for m in entries:
        (dst / m.mirror).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / m.mirror, dst / m.mirror)
    return dst


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def by_role(entries: list[ModelFile], role: str) -> ModelFile:
    return next(m for m in entries if m.role == role)


def wheel_name(requirement: str) -> str:
    """The file name a wheel source looks for in the cache (any tag)."""
    name, version = requirement.split("==")
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def seed_wheel_cache(models_dir: Path, members: dict[str, bytes]) -> None:
    """Put a real zip, named like each wheel the manifest asks for, in the fetch cache."""
    cache = models_dir / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    for req in {s["wheel"] for m in manifest() for s in m.sources if "wheel" in s}:
        with zipfile.ZipFile(cache / wheel_name(req), "w") as z:
            z.writestr("README", "not the real wheel\n")
            for member, data in members.items():
                z.writestr(member, data)


def leftovers(models_dir: Path) -> list[str]:
    """Temporary files fetch left behind (it names them .<file>.<random>)."""
    return [p.name for p in models_dir.iterdir() if p.name.startswith(".") and p.is_file()]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every https source unreachable: requests go to a proxy that refuses them."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, DEAD_PROXY)
    urllib.request.install_opener(None)  # urlopen reads the proxies when it builds its opener
    yield
    urllib.request.install_opener(None)


@pytest.fixture
def logs() -> list[str]:
    return []


# --------------------------------------------------------------- fetch


def test_fetch_from_the_mirror_installs_every_file(tmp_path, monkeypatch, offline, logs):
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(MIRROR))
    entries = mirrored()
    mf = write_manifest(tmp_path / "manifest.toml", entries, sources=lambda m: [])
    models_dir = tmp_path / "models"
    statuses = fetch(models_dir, log=logs.append, manifest_path=mf)
    assert [s.model.file for s in statuses] == [m.file for m in entries]
    assert all(s.ok and s.reason == "ok" for s in statuses), statuses
    for m in entries:
        assert (models_dir / m.file).read_bytes() == (MIRROR / m.mirror).read_bytes()
    assert logs == [f"{m.file}: ok (from mirror)" for m in entries]
    assert leftovers(models_dir) == []
    mfn = by_role(entries, "embed_mobilefacenet")
    assert require(models_dir, "embed_mobilefacenet") == models_dir / mfn.file

    # A second fetch keeps the good files as they are.
    stamp = {m.file: (models_dir / m.file).stat().st_mtime_ns for m in entries}
    logs.clear()
    assert all(s.ok for s in fetch(models_dir, log=logs.append, manifest_path=mf))
    assert logs == []
    assert stamp == {m.file: (models_dir / m.file).stat().st_mtime_ns for m in entries}


@pytest.mark.parametrize(
    "spoil, reason", [(flip_a_byte, "sha256 mismatch"), (truncate, "wrong size")]
)
def test_a_bad_mirror_copy_is_refused_and_the_good_file_stays(
    tmp_path, monkeypatch, offline, logs, spoil, reason
):
    entries = [m for m in mirrored() if m.role in CORE_ROLES]
    embed = by_role(entries, "embed_mobilefacenet")
    mirror = copy_mirror(tmp_path / "mirror", entries)
    spoil(mirror / embed.mirror)
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(mirror))
    # The real sources, every one unreachable: no wheel member, a dead proxy.
    mf = write_manifest(tmp_path / "manifest.toml", entries)
    models_dir = tmp_path / "models"
    seed_wheel_cache(models_dir, {})
    good = models_dir / embed.file
    shutil.copyfile(MIRROR / embed.mirror, good)
    before = (good.read_bytes(), good.stat().st_ino)

    # The good file is kept: the spoilt copy is never even needed.
    assert all(s.ok for s in fetch(models_dir, log=logs.append, manifest_path=mf))
    assert f"{embed.file}: ok" not in " ".join(logs)

    # Forced, every source fails: the error names the file and the mismatch,
    # and the good file is still the one in place.
    with pytest.raises(ModelError) as e:
        fetch(models_dir, log=logs.append, force=True, manifest_path=mf)
    message = str(e.value)
    assert message.startswith(f"{embed.file}: no source gave the right file")
    assert f"mirror: {reason}" in message
    assert "\n" not in message
    for src in embed.sources:
        assert (src.get("url") or f"wheel {src['wheel']}") in message
    assert (good.read_bytes(), good.stat().st_ino) == before
    assert leftovers(models_dir) == []

    # Without it, the fetch fails the same way and creates nothing.
    good.unlink()
    with pytest.raises(ModelError, match=f"{embed.file}: .*mirror: {reason}"):
        fetch(models_dir, log=logs.append, manifest_path=mf)
    assert not good.exists()
    assert leftovers(models_dir) == []


def test_fetch_takes_a_file_from_a_cached_wheel(tmp_path, monkeypatch, offline, logs):
    short = by_role(mirrored(), "detect_short")
    wheel = [s for s in short.sources if "wheel" in s]
    assert wheel, "the manifest no longer names a wheel for the short-range detector"
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(tmp_path / "empty-mirror"))
    mf = write_manifest(tmp_path / "manifest.toml", [short], sources=lambda m: wheel)
    models_dir = tmp_path / "models"
    seed_wheel_cache(models_dir, {wheel[0]["member"]: (MIRROR / short.mirror).read_bytes()})
    (status,) = fetch(models_dir, log=logs.append, manifest_path=mf)
    assert status.ok
    assert logs == [f"{short.file}: ok (from wheel {wheel[0]['wheel']})"]
    assert (models_dir / short.file).read_bytes() == (MIRROR / short.mirror).read_bytes()
    assert leftovers(models_dir) == []


def test_a_wheel_without_the_member_is_refused(tmp_path, monkeypatch, offline, logs):
    short = by_role(mirrored(), "detect_short")
    wheel = [s for s in short.sources if "wheel" in s]
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(tmp_path / "empty-mirror"))
    mf = write_manifest(tmp_path / "manifest.toml", [short], sources=lambda m: wheel)
    models_dir = tmp_path / "models"
    seed_wheel_cache(models_dir, {})
    with pytest.raises(ModelError, match=f"{short.file}: no source gave the right file") as e:
        fetch(models_dir, log=logs.append, manifest_path=mf)
    assert wheel[0]["member"] in str(e.value)
    assert not (models_dir / short.file).exists()


# --------------------------------------------------------------- check and require


def test_check_reports_missing_wrong_size_and_sha_mismatch(tmp_path):
    entries = [m for m in mirrored() if m.role in CORE_ROLES]
    mf = write_manifest(tmp_path / "manifest.toml", entries)
    models_dir = copy_mirror(tmp_path / "models", entries)
    roles = ("detect_short", "detect_full", "embed_mobilefacenet")
    short, full, embed = (by_role(entries, r) for r in roles)
    (models_dir / short.file).unlink()
    truncate(models_dir / full.file)
    flip_a_byte(models_dir / embed.file)
    reasons = {s.model.file: (s.ok, s.reason) for s in check(models_dir, mf)}
    assert reasons[short.file] == (False, "missing")
    assert reasons[full.file] == (
        False,
        f"wrong size ({full.size - 100} bytes, expected {full.size})",
    )
    ok, why = reasons[embed.file]
    assert not ok and why.startswith("sha256 mismatch (") and embed.sha256[:12] in why
    assert reasons[by_role(entries, "facemesh").file] == (True, "ok")


def test_the_default_check_covers_the_project_manifest():
    assert [s.model.file for s in check(MODELS)] == [m.file for m in manifest(MANIFEST)]


@pytest.mark.parametrize("spoil", [None, flip_a_byte, truncate], ids=["missing", "sha", "size"])
def test_require_refuses_and_says_how_to_fix(tmp_path, spoil):
    embed = by_role(mirrored(), "embed_mobilefacenet")
    if spoil is not None:
        shutil.copyfile(MIRROR / embed.mirror, tmp_path / embed.file)
        spoil(tmp_path / embed.file)
    with pytest.raises(ModelError, match="edge models fetch") as e:
        require(tmp_path, "embed_mobilefacenet")
    assert str(tmp_path / embed.file) in str(e.value)


def test_require_of_an_unknown_role():
    with pytest.raises(ModelError, match="no model with role 'nose'"):
        require(MODELS, "nose")


def test_the_engine_refuses_a_corrupt_model(tmp_path, cfg):
    from edge.engine import Engine

    entries = [m for m in mirrored() if m.role in CORE_ROLES]
    models_dir = copy_mirror(tmp_path / "models", entries)
    flip_a_byte(models_dir / by_role(entries, "embed_mobilefacenet").file)
    cfg = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={"model": "mobilefacenet"})})
    with pytest.raises(ModelError, match="sha256 mismatch"):
        Engine(cfg, models_dir=models_dir)


def test_the_mirrors_sface_onnx_is_refused_and_the_wheel_member_used(
    tmp_path, monkeypatch, offline, logs
):
    # ../shared/models holds a face_recognition_sface_2021dec_int8bq.onnx that is not
    # the upstream file (another export: other size, no scalar_op inputs); the manifest
    # holds the wheel member's sha256, so fetch refuses the mirror copy and takes the wheel.
    onnx = next(m for m in manifest() if m.role == "embed_sface_onnx")
    assert (MIRROR / onnx.mirror).is_file()
    assert sha256_file(MIRROR / onnx.mirror) != onnx.sha256
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(MIRROR))
    upstream = require(MODELS, "embed_sface_onnx").read_bytes()
    wheel = [s for s in onnx.sources if "wheel" in s]
    mf = write_manifest(tmp_path / "manifest.toml", [onnx], sources=lambda m: wheel)
    models_dir = tmp_path / "models"
    seed_wheel_cache(models_dir, {wheel[0]["member"]: upstream})
    statuses = fetch(models_dir, log=logs.append, manifest_path=mf)
    assert [s.ok for s in statuses] == [True]
    assert logs == [f"{onnx.file}: ok (from wheel {wheel[0]['wheel']})"]
    assert sha256_file(models_dir / onnx.file) == onnx.sha256


def test_a_manifest_that_cannot_be_read(tmp_path):
    bad = tmp_path / "manifest.toml"
    bad.write_text("[[model]\nfile = ")
    with pytest.raises(ModelError, match="cannot read model manifest"):
        check(tmp_path, bad)


# --------------------------------------------------------------- the CLI


def test_edge_models_fetch_with_a_bad_mirror_exits_1_with_one_line(tmp_path, monkeypatch, offline):
    first = manifest()[0]
    mirror = tmp_path / "mirror"
    copy_mirror(mirror, [first])
    flip_a_byte(mirror / first.mirror)
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(mirror))
    models_dir = tmp_path / "models"
    seed_wheel_cache(models_dir, {})
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  dir: {models_dir}\n")
    r = CliRunner().invoke(main, ["models", "fetch", "--config", str(config)])
    assert r.exit_code == 1, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"edge: {first.file}: no source gave the right file (mirror: ")
    assert "sha256 mismatch" in lines[0]
    assert "Traceback" not in r.output
    assert not (models_dir / first.file).exists()
    assert leftovers(models_dir) == []


def test_edge_models_fetch_from_the_mirror(tmp_path, monkeypatch, offline):
    """The CLI on a models dir that needs only what the mirror has."""
    monkeypatch.setenv("EDGE_MODEL_MIRROR", str(MIRROR))
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    # Files the mirror cannot give (built ones, and the SFace ONNX it holds wrong)
    # are put in place beforehand, as `make models` would have; fetch must keep
    # them and fill in the rest.
    good = {m.file for m in mirrored()}
    for m in manifest():
        if m.file not in good:
            shutil.copyfile(MODELS / m.file, models_dir / m.file)
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  dir: {models_dir}\n")
    r = CliRunner().invoke(main, ["models", "fetch", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    statuses = json.loads(r.stdout)
    assert [s["file"] for s in statuses] == [m.file for m in manifest()]
    assert all(s["ok"] for s in statuses)
    assert r.stderr.splitlines() == [
        f"{m.file}: ok (from mirror)" for m in manifest() if m.file in good
    ]
    r = CliRunner().invoke(main, ["models", "check", "--config", str(config)])
    assert r.exit_code == 0, r.output


BUILD_SCRIPT = """
import shutil, sys, time
from pathlib import Path
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
marks = Path(sys.argv[0]).parent
(marks / f"started-{src.name}").touch()
# The other build must have started before this one ends: they run side by side.
end = time.monotonic() + 120
while len(list(marks.glob("started-*"))) < 2:
    if time.monotonic() > end:
        sys.exit("the other build never started beside this one")
    time.sleep(0.05)
shutil.copyfile(src, dest)
"""


def test_files_to_build_are_built_side_by_side_after_their_inputs(
    tmp_path, monkeypatch, offline, logs
):
    """Each conversion takes minutes: the builds run two at a time, once inputs are in."""
    inputs = [by_role(mirrored(), r) for r in ("detect_short", "facemesh")]
    script = tmp_path / "build" / "copy.py"
    script.parent.mkdir()
    script.write_text(BUILD_SCRIPT)
    built = [replace(m, file=f"built-{m.file}", role=f"built_{m.role}", mirror="not-there",
                     sources=({"build": str(script), "input": m.file},)) for m in inputs]
    monkeypatch.setenv("EDGE_CONVERT_PYTHON", sys.executable)
    mf = write_manifest(tmp_path / "manifest.toml", [*built, *inputs])  # builds listed first
    models_dir = tmp_path / "models"
    statuses = fetch(models_dir, log=logs.append, manifest_path=mf)
    assert all(s.ok for s in statuses) and len(statuses) == 4
    for m in inputs:
        assert (models_dir / f"built-{m.file}").read_bytes() == (MIRROR / m.mirror).read_bytes()
    assert sorted(p.name for p in script.parent.glob("started-*")) == sorted(
        f"started-{m.file}" for m in inputs)
    # A build that fails names its file and why; nothing half-made is left.
    (models_dir / built[0].file).unlink()
    script.write_text("import sys; sys.exit('converter says no')")
    with pytest.raises(ModelError, match=f"{built[0].file}: .*converter says no"):
        fetch(models_dir, log=logs.append, manifest_path=mf)
    assert not (models_dir / built[0].file).exists() and leftovers(models_dir) == []
