"""Errors raised by nnslicer. Every message is one line: what is wrong, then what to do."""


class NNSlicerError(Exception):
    """Base class of every error nnslicer raises on purpose."""


class UnsupportedOperation(NNSlicerError):
    """The traced graph holds an operator that has no slicing rule."""


class TraceError(NNSlicerError):
    """The model could not be turned into an operator graph."""


class InputError(NNSlicerError, ValueError):
    """Inputs, targets or data given to the slicer are malformed."""


class ProfileMismatch(NNSlicerError, ValueError):
    """A profile or slice belongs to another model than the one it is used with."""


class FileFormatError(NNSlicerError, ValueError):
    """A file nnslicer reads is missing, truncated or not in the expected format."""
