"""The few named errors edge-access raises.

Each is also the builtin it most resembles, so callers that know nothing of
edge-access still catch them sensibly. The CLI turns any :class:`EdgeError`
into one line and a non-zero exit; nothing else should reach the user.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error edge-access raises on purpose."""


class ConfigError(EdgeError, ValueError):
    """The configuration file is missing, malformed or out of range."""


class ImageError(EdgeError, ValueError):
    """An image file is missing, unreadable, not an image, or too large to decode."""


class NoFaceError(EdgeError, ValueError):
    """An image holds no usable face (none, several, too small, blurry or turned)."""


class ModelError(EdgeError, RuntimeError):
    """A model file is missing, fails its checksum, or cannot be loaded."""


class GalleryError(EdgeError, RuntimeError):
    """The gallery database refused a change (unknown name, duplicate, corrupt file)."""


class CameraError(EdgeError, OSError):
    """A camera source cannot be opened or has stopped delivering frames."""


class HardwareError(EdgeError, OSError):
    """A door, speaker or other device cannot be driven."""
