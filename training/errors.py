"""Errors of the training tools; each names what is wrong and what to do."""

from weld_core.errors import WeldError


class TrainingError(WeldError):
    """Base class of the training tools' errors."""


class BagError(TrainingError, ValueError):
    """A bag (directory, file or .tar.gz session) cannot be opened or has no usable image topics."""


class DatasetError(TrainingError, ValueError):
    """A converted dataset folder is missing, incomplete or unusable for the requested run."""


class ExportError(TrainingError, RuntimeError):
    """Export failed, e.g. the ONNX model disagrees with the checkpoint beyond the tolerance."""
