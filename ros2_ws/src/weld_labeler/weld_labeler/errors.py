"""Errors of the labeler; each says what went wrong and what the operator can do."""

from weld_core.errors import WeldError


class LabelerError(WeldError):
    """Base class of the labeler's domain errors."""


class CaptureError(LabelerError, ValueError):
    """A capture request cannot be served (count beyond the limit, no session, ...)."""


class SessionError(LabelerError):
    """A session cannot be started, stopped, found or exported."""


class StorageFullError(LabelerError):
    """Recording stopped: the free-space floor or the session size limit was reached."""


class RecorderError(LabelerError):
    """A bag cannot be written (bad configuration, closed recorder, malformed frame)."""


class RecoveryError(LabelerError):
    """A bag left by a killed process cannot be rebuilt."""
