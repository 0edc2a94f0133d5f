"""Errors of the camera component; each says what is wrong and what to do."""

from weld_core.errors import WeldError


class CameraConfigError(WeldError, ValueError):
    """A camera parameter (or a combination of them) is invalid; nothing was opened."""


class SourceError(WeldError, RuntimeError):
    """A frame source cannot be opened or read (device missing, bag unreadable, simulator absent)."""
