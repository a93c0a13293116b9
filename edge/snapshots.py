"""Snapshots of refused faces, kept as little and as briefly as the site allows.

Off unless ``decision.snapshot_dir`` is set. Each snapshot is a JPEG readable
by its owner only (0600) in a folder only its owner can enter (0700); the
folder is capped in size (oldest removed first) and snapshots older than
``privacy.snapshot_days`` are deleted. File names say whose face it is, so an
erasure request is one call: ``unknown_20240501T081502.123Z.jpg`` for a
stranger, ``person7.ann_20240501T081502.123Z.jpg`` for Ann (person id 7)
refused (a photo held up, a disabled badge, a lockout). The id is what
:meth:`SnapshotStore.forget` goes by, so snapshots follow the person through
``edge rename``; ``person.ann_…`` (no id) is what older versions wrote, found
by the names the person had. Saving never raises: a full disk or a
read-only folder costs the snapshot, never a decision.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .config import Config
    from .gallery import Gallery

log = logging.getLogger(__name__)

#: The label of a face no one enrolled.
UNKNOWN = "unknown"
#: JPEG quality of snapshots: enough to recognise a face, small on disk.
JPEG_QUALITY = 85
#: Longest label kept verbatim in a file name (bytes); longer ones end in a hash.
MAX_LABEL_BYTES = 150

_NAME = re.compile(
    r"(?P<label>[^_]+)_(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z(?:_(?P<n>\d+))?\.jpg"
)
#: What the daemon wrote before this module (unknown-<epoch ms>.jpg): still purged and capped.
_LEGACY = re.compile(r"unknown-(?P<epoch_ms>\d{1,16})\.jpg")


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file: its path, whose (label), when (wall clock, s) and size."""

    path: Path
    label: str
    t_wall: float
    size: int


def label(name: str | None, person_id: int | None = None) -> str:
    """The file-name label of ``name`` (None: a stranger), person ``person_id``.

    Letters, digits, "-" and "." are kept, anything else (including "_", the
    separator, and "/") becomes %XX, and people get a "person<id>." prefix
    ("person." without an id, as older versions wrote), so no name can pass
    for a stranger or another person. Very long labels are cut and end in a
    hash of the whole name, to stay within file-name limits.
    """
    if name is None:
        return UNKNOWN
    safe = "".join(
        c if (c.isalnum() or c in "-.") else "".join(f"%{b:02X}" for b in c.encode())
        for c in name
    )
    out = f"person.{safe}" if person_id is None else f"{_id_prefix(person_id)}{safe}"
    if len(out.encode()) > MAX_LABEL_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        out = out.encode()[: MAX_LABEL_BYTES - 17].decode(errors="ignore") + "~" + digest
    return out


def _id_prefix(person_id: int) -> str:
    """How every label of person ``person_id`` begins, whatever their name was."""
    return f"person{int(person_id)}."


def _stamp(t_wall: float) -> str:
    """``t_wall`` as UTC in a sortable file-name form, e.g. 20240501T081502.123Z."""
    ms = round(t_wall * 1000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def parse(path: Path) -> Snapshot | None:
    """The snapshot ``path`` names, or None for a file this store does not manage."""
    m = _NAME.fullmatch(path.name)
    legacy = _LEGACY.fullmatch(path.name)
    try:
        if m is not None:
            t = calendar.timegm(time.strptime(m["stamp"], "%Y%m%dT%H%M%S")) + int(m["ms"]) / 1000
        elif legacy is not None:
            t = int(legacy["epoch_ms"]) / 1000
        else:
            return None
        size = path.lstat().st_size
    except (ValueError, OSError):
        return None
    return Snapshot(path, m["label"] if m else UNKNOWN, t, size)


class SnapshotStore:
    """A folder of snapshots: :meth:`save`, :meth:`purge` by age, :meth:`forget` a person.

    ``max_mb`` caps the folder's snapshots in total (the oldest go first),
    ``days`` is how long one is kept, and below ``min_free_mb`` free on the
    disk nothing more is saved (access decisions need the space more).
    """

    def __init__(
        self, folder: str | os.PathLike[str], max_mb: float, days: float, min_free_mb: float = 0.0
    ) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_mb * 1_000_000)
        self.max_age = days * 86_400.0
        self.min_free = int(min_free_mb * 1_000_000)
        self._failing = False

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot in the folder, oldest first (none when the folder is missing)."""
        try:
            paths = list(self.folder.iterdir())
        except OSError:
            return []
        found = [s for s in map(parse, paths) if s is not None]
        return sorted(found, key=lambda s: (s.t_wall, s.path.name))

    def save(
        self, bgr: np.ndarray, name: str | None, t_wall: float, person_id: int | None = None
    ) -> Path | None:
        """Store one frame as a snapshot of ``name`` (None: a stranger) taken at ``t_wall``.

        ``person_id`` (the gallery's) goes in the file name, so the snapshot
        stays that person's through a rename.

        Returns the new file, or None when it could not be kept: disk full or
        below ``min_free_mb``, folder unwritable, an image that will not
        encode, or a snapshot larger than the whole cap. The first failure is
        logged as a warning, the rest quietly until a save works again.
        """
        try:
            ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError("cannot encode the frame as JPEG")
            data = jpg.tobytes()
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            free = shutil.disk_usage(self.folder).free
            if free - len(data) < self.min_free:
                raise OSError(f"only {free / 1e6:.0f} MB free on the disk")
            path = self._write(f"{label(name, person_id)}_{_stamp(t_wall)}", data)
        except (OSError, ValueError, OverflowError, cv2.error) as e:
            self._fail(e)
            return None
        self._tidy(t_wall)
        if not path.exists():
            self._fail(ValueError(f"{len(data)} bytes exceed the whole cap"))
            return None
        if self._failing:
            log.info("snapshots are being saved again")
            self._failing = False
        return path

    def purge(self, now: float) -> int:
        """Delete snapshots older than ``days`` at ``now`` (wall clock); returns how many."""
        return self._delete(s for s in self.snapshots() if now - s.t_wall > self.max_age)

    def forget(
        self, name: str | None, person_id: int | None = None, former: Iterable[str] = ()
    ) -> int:
        """Delete every snapshot of a person (``name`` None: every stranger's); how many.

        With ``person_id``, every snapshot saved under that id, whatever name
        it bears; and the id-less ones older versions wrote under ``name`` or
        any ``former`` name of theirs.
        """
        mine = {label(name)} | {label(n) for n in former}
        prefix = _id_prefix(person_id) if person_id is not None and name is not None else None
        return self._delete(
            s
            for s in self.snapshots()
            if s.label in mine or (prefix is not None and s.label.startswith(prefix))
        )

    def _write(self, stem: str, data: bytes) -> Path:
        """Write ``data`` to a new file ``stem[_n].jpg`` (mode 0600); never overwrites one."""
        for n in range(1000):
            path = self.folder / (f"{stem}.jpg" if n == 0 else f"{stem}_{n}.jpg")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            try:
                with os.fdopen(fd, "wb") as f:
                    os.fchmod(f.fileno(), 0o600)  # whatever the umask
                    f.write(data)
            except OSError:
                path.unlink(missing_ok=True)
                raise
            return path
        raise OSError(f"too many snapshots named {stem}")

    def _tidy(self, now: float) -> None:
        """Purge as of ``now``, then remove the oldest until the rest fit in ``max_mb``."""
        snaps = self.snapshots()
        expired = [s for s in snaps if now - s.t_wall > self.max_age]
        kept = [s for s in snaps if now - s.t_wall <= self.max_age]
        total = sum(s.size for s in kept)
        while kept and total > self.max_bytes:
            total -= kept[0].size
            expired.append(kept.pop(0))
        self._delete(expired)

    def _delete(self, snaps: Iterable[Snapshot]) -> int:
        n = 0
        for s in snaps:
            try:
                s.path.unlink()
                n += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("snapshot %s not deleted (%s)", s.path, e)
        return n

    def _fail(self, e: BaseException) -> None:
        if not self._failing:
            log.warning("snapshot not saved, and no more warnings until one is (%s)", e)
            self._failing = True
        else:
            log.debug("snapshot not saved (%s)", e)


def forget_person(gallery: Gallery, store: SnapshotStore | None, name: str) -> tuple[int, int]:
    """Erase ``name`` from the gallery and their snapshots from ``store``: (templates, snapshots).

    Snapshots are found by the person's id, so a rename does not hide any;
    id-less ones from older versions by the names the log says they had.
    """
    from .identity import former_names

    person = gallery.person(name)
    former = former_names(gallery, person.name)
    templates = gallery.forget(person.name)
    snaps = store.forget(person.name, person.id, former) if store is not None else 0
    return templates, snaps


def configured_store(cfg: Config) -> SnapshotStore | None:
    """The snapshot folder ``decision.snapshot_dir`` names, or None when snapshots are off."""
    d = cfg.decision
    if d.snapshot_dir is None:
        return None
    return SnapshotStore(cfg.path(d.snapshot_dir), d.snapshot_max_mb, cfg.privacy.snapshot_days)
