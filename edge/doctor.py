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


def check_tts(cfg: Config) -> Check:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if not exe:
        return Check("speech", False, "espeak-ng missing (fix: sudo apt-get install espeak-ng)")
    try:
        import pyttsx3  # noqa: F401
    except ImportError as e:
        return Check("speech", False, f"pyttsx3 not importable ({e})")
    return Check("speech", True, f"{exe}" + ("" if cfg.voice.enabled else " (voice disabled)"))


def check_database(db: Path) -> Check:
    from .errors import GalleryError
    from .gallery import Gallery

    if not db.exists():
        return Check("database", True, f"{db}: not created yet (the first enroll creates it)")
    try:
        with Gallery(db) as g:
            result = g.integrity_check()
            people = len(g.people())
    except GalleryError as e:
        return Check("database", False, f"{e} (fix: restore a backup with 'edge import')")
    if result != "ok":
        return Check("database", False, f"{db}: integrity check failed: {result}")
    mode = oct(os.stat(db).st_mode & 0o777)
    return Check("database", True, f"{db}: ok, {people} people, mode {mode}")


def run_checks(cfg: Config, db: Path) -> list[Check]:
    """Every check, in the order a site admin would fix them."""
    return [
        *check_models(cfg),
        check_runtime(cfg),
        check_camera(cfg),
        check_gpio(cfg),
        check_tts(cfg),
        check_database(db),
    ]
