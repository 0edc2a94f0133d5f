"""Errors of the inference component; each names what is wrong and what to do about it."""

from weld_core.errors import WeldError
from weld_core.model_store import ModelOutputError  # a model call's output checks live with the model checks

__all__ = ['InferenceError', 'ModelOutputError', 'ModelRejectedError', 'ModelRunError']


class InferenceError(WeldError):
    """Base class of the errors weld_inference raises on purpose."""


class ModelRejectedError(InferenceError, ValueError):
    """A model file was refused: unloadable, bad metadata, checksum mismatch or failed self-test."""


class ModelRunError(InferenceError, RuntimeError):
    """ONNX Runtime raised during a model call (the op failed on this input, or the call was cancelled)."""
