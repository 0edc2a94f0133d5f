"""Domain errors of weldvision; each names what is wrong and what to do about it."""


class WeldError(Exception):
    """Base class of every error weldvision raises on purpose."""


class ImageFormatError(WeldError, ValueError):
    """An image message cannot be turned into an array (encoding, size, step or data is wrong)."""


class LabelError(WeldError, ValueError):
    """A label is empty or not one of the configured classes."""
