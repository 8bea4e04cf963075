"""nnslicer: dynamic slicing of deep neural networks (NNSlicer, ESEC/FSE 2020).

Pipeline: trace → profile → forward → backward → rules → results → apps.
"""

from .backward.policy import EffectivePathPolicy, NNSlicerPolicy, SelectionPolicy
from .criterion import Neurons
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
from .rules.default import default_rules, register_rule
from .rules.ruleset import RuleSet, ops
from .slicer import EffectivePath, Slicer

__version__ = "0.2.0"

__all__ = [
    "EffectivePath", "EffectivePathPolicy", "FileFormatError", "InputError", "LayerSummary",
    "NNSlicerError", "NNSlicerPolicy", "Neurons", "Profile", "ProfileMismatch", "Rule",
    "RuleSet", "SelectionPolicy", "Slice", "Slicer", "TraceError", "UnsupportedOperation",
    "default_rules", "ops", "register_rule",
]
