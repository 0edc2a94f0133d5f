"""Errors of the console; each says what went wrong and what the operator can do.

The HTTP layer answers each with its ``status`` and the message verbatim.
"""

from weld_core.errors import WeldError


class ConsoleError(WeldError):
    """Base class of the console's domain errors (HTTP 400 unless a subclass says otherwise)."""

    status = 400


class ConfigError(ConsoleError, ValueError):
    """The console cannot start with these parameters (bad address, unsafe token file, ...)."""


class NotFoundError(ConsoleError):
    """A review item, session, archive or model file that is not there (any more)."""

    status = 404


class ConflictError(ConsoleError):
    """The request clashes with what is there (a model file of that name exists, ...)."""

    status = 409


class ServiceUnavailableError(ConsoleError):
    """A node the console is a client of (the labeler) does not answer."""

    status = 503
