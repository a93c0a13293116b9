"""Small file-safety helpers shared by the gallery, its key, bundles, backups and spill."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(beside: Path, data: bytes) -> str:
    """A synced mode-0600 temporary file holding ``data`` in ``beside``'s folder; its path.

    The caller renames (or links) it into place, and removes it if that fails.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{beside.name}.", dir=beside.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp
