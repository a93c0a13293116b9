"""``edge doctor``: is this machine ready to run the door? Each check says ok or how to fix it."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import Config


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_models(cfg: Config) -> list[Check]:
    from .models import check

    out = []
    for s in check(cfg.path(cfg.models.dir)):
        fix = (
            ""
            if s.ok
            else f" (fix: edge models fetch, or copy {s.model.file} into {s.path.parent})"
        )
        out.append(Check(f"model {s.model.file}", s.ok, s.reason + fix))
    return out


def check_runtime(cfg: Config) -> Check:
    from .errors import ModelError
    from .runtime import runtime_name

    try:
        return Check("runtime", True, f"{runtime_name()}, {cfg.models.threads} thread(s)")
    except ModelError as e:
        return Check("runtime", False, str(e))


def check_camera(cfg: Config) -> Check:
    from .camera import open_source
    from .errors import CameraError

    spec = cfg.camera.source
    try:
        src = open_source(spec, cfg.camera)
        with src:
            frame = src.read()
        if frame is None:
            return Check("camera", False, f"{spec}: opened but gave no frame")
        h, w = frame.image.shape[:2]
        return Check("camera", True, f"{src.name}: {w}x{h}")
    except CameraError as e:
        return Check(
            "camera",
            False,
            f"{e} (fix: camera.source in the config, or 'edge run --source FILE' to replay)",
        )


def check_gpio(cfg: Config) -> Check:
    try:
        from gpiozero import Device
        from gpiozero.exc import BadPinFactory

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                factory = Device._default_pin_factory()
        except BadPinFactory:
            return Check(
                "gpio",
                False,
                "no GPIO on this machine: the door would use a mock "
                "relay (on a Pi: sudo apt-get install python3-lgpio)",
            )
        return Check("gpio", True, f"{type(factory).__name__}, relay on BCM {cfg.door.pin}")
    except ImportError as e:
        return Check("gpio", False, f"gpiozero not importable ({e})")


def check_outputs(cfg: Config) -> Check:
    """What a grant drives; an empty list is a kiosk, which is fine but worth saying."""
    outs = list(cfg.door.outputs)
    if not outs:
        return Check("outputs", True, "none: kiosk mode (greet and log only, no door is driven)")
    parts = []
    for o in outs:
        if o == "relay":
            parts.append(f"relay on BCM {cfg.door.pin}")
        elif o == "wiegand":
            w = cfg.wiegand
            parts.append(f"wiegand {w.format}-bit on D0 BCM {w.d0_pin}, D1 BCM {w.d1_pin}")
        elif o == "osdp":
            parts.append(f"osdp reader {cfg.osdp.address} on {cfg.osdp.device}")
            if cfg.osdp.device is None:
                return Check("outputs", False, "osdp: set osdp.device (the RS-485 serial line)")
    return Check("outputs", True, ", ".join(parts))


def check_tts(cfg: Config) -> Check:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if not exe:
        return Check("speech", False, "espeak-ng missing (fix: sudo apt-get install espeak-ng)")
    try:
        import pyttsx3  # noqa: F401
    except ImportError as e:
        return Check("speech", False, f"pyttsx3 not importable ({e})")
    return Check("speech", True, f"{exe}" + ("" if cfg.voice.enabled else " (voice disabled)"))


def check_key(cfg: Config, db: Path | None = None) -> Check:
    """The key the gallery ``db`` is read with: its own after a rotation (edge.keys)."""
    from .crypto import fingerprint, load_keyring
    from .errors import GalleryError
    from .keys import load_keyring as gallery_keyring

    path = cfg.path(cfg.security.key_file)
    try:
        ring = (
            load_keyring(path, create=False) if db is None
            else gallery_keyring(db, path, create=False)
        )
    except GalleryError as e:
        if not path.exists():
            return Check("key", True, f"{path}: not created yet (the first enroll creates it)")
        return Check("key", False, str(e))
    unfinished = " (a key rotation is unfinished: any edge command finishes it)"
    return Check(
        "key", True, f"{ring.source}: key {fingerprint(ring.current)}"
        + (unfinished if ring.staged else "")
    )


def check_database(cfg: Config, db: Path) -> Check:
    from .backup import check_file
    from .errors import GalleryError
    from .gallery import open_gallery

    if not db.exists():
        return Check("database", True, f"{db}: not created yet (the first enroll creates it)")
    try:
        result = check_file(db)  # read-only: a damaged file is left as it was found
        if result != "ok":
            return Check(
                "database",
                False,
                f"{db}: integrity check failed: {result} (fix: stop the daemon and"
                " 'edge restore BACKUP', or start it with backup.on_corrupt: restore)",
            )
        with open_gallery(cfg, db) as g:
            people = len(g.people())
            templates = len(g.templates().ids)  # every template opens under the key
    except GalleryError as e:
        return Check("database", False, str(e))
    mode = oct(os.stat(db).st_mode & 0o777)
    return Check(
        "database", True, f"{db}: ok, {people} people, {templates} templates open, mode {mode}"
    )


def check_templates(cfg: Config, db: Path) -> Check:
    """Whether every enrolled person has a template of the running embedder."""
    from .errors import EdgeError
    from .gallery import open_gallery
    from .reembed import configured_model_id, coverage

    if not db.exists():
        return Check("templates", True, "no gallery yet")
    try:
        model_id = configured_model_id(cfg)
        with open_gallery(cfg, db) as g:
            c = coverage(g, model_id)
    except EdgeError as e:
        return Check("templates", False, str(e))
    detail = f"{c.current} of model {model_id[:12]}…"
    if c.stale:
        detail += f", {c.stale} of another model ({c.reembeddable} with a kept crop)"
    problems = []
    if c.reembeddable:
        problems.append("fix: edge reembed")
    if c.needs_reenrollment:
        problems.append("needs re-enrollment: " + ", ".join(c.needs_reenrollment))
    return Check("templates", not problems, "; ".join([detail, *problems]))


def check_backups(cfg: Config, db: Path) -> Check:
    import time

    from .backup import Backups

    backups = Backups(db, cfg, background=False)
    files = backups.files()
    hours = cfg.backup.interval_hours
    if not files:
        return Check(
            "backups",
            not db.exists(),
            f"none in {backups.dir} (the daemon takes one every {hours:g} h;"
            " fix: 'edge backup' takes one now)",
        )
    age = (time.time() - files[0].stat().st_mtime) / 3600
    detail = f"{len(files)} in {backups.dir}, newest {files[0].name} ({age:.1f} h old)"
    if age > 2 * hours:
        return Check("backups", False, detail + " (fix: is the daemon running? the disk full?)")
    return Check("backups", True, detail)


def run_checks(cfg: Config, db: Path, camera: bool = True) -> list[Check]:
    """Every check, in the order a site admin would fix them.

    ``camera=False`` leaves the camera out: the console asks from inside the
    daemon, which holds the camera and knows its state itself.
    """
    return [
        *check_models(cfg),
        check_runtime(cfg),
        *([check_camera(cfg)] if camera else []),
        check_gpio(cfg),
        check_outputs(cfg),
        check_tts(cfg),
        check_key(cfg, db),
        check_database(cfg, db),
        check_templates(cfg, db),
        check_backups(cfg, db),
    ]
