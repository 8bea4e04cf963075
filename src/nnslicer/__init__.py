"""nnslicer: dynamic slicing of deep neural networks (NNSlicer, ESEC/FSE 2020).

Pipeline: trace → profile → forward → backward → slice → apps.
"""

from .backward.policy import EffectivePathPolicy, NNSlicerPolicy, SelectionPolicy
from .errors import (
    FileFormatError,
    InputError,
    NNSlicerError,
    ProfileMismatch,
    TraceError,
    UnsupportedOperation,
)
from .profile.profile import Profile
from .results.slice import LayerSummary, Slice
from .rules.base import Rule
from .rules.registry import register_rule
from .slicer import EffectivePath, Slicer

__version__ = "0.1.0"

__all__ = [
    "EffectivePath", "EffectivePathPolicy", "FileFormatError", "InputError", "LayerSummary",
    "NNSlicerError", "NNSlicerPolicy", "Profile", "ProfileMismatch", "Rule", "SelectionPolicy",
    "Slice", "Slicer", "TraceError", "UnsupportedOperation", "register_rule",
]
