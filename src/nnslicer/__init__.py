"""nnslicer: dynamic slicing of deep neural networks (NNSlicer, ESEC/FSE 2020).

Pipeline: trace → profile → forward → backward → rules → results → apps.

The public names below are imported on first use (PEP 562), so ``import nnslicer.errors`` and
``nnslicer --help`` do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    FileFormatError,
    InputError,
    NNSlicerError,
    ProfileMismatch,
    TraceError,
    UnsupportedOperation,
)

__version__ = "0.2.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "EffectivePathPolicy": ".backward.policy", "NNSlicerPolicy": ".backward.policy",
    "SelectionPolicy": ".backward.policy", "Neurons": ".criterion",
    "Profile": ".profile.profile", "LayerSummary": ".results.slice", "Slice": ".results.slice",
    "Rule": ".rules.base", "default_rules": ".rules.default", "register_rule": ".rules.default",
    "RuleSet": ".rules.ruleset", "ops": ".rules.ruleset", "EffectivePath": ".slicer",
    "Slicer": ".slicer",
}

__all__ = [
    "EffectivePath", "EffectivePathPolicy", "FileFormatError", "InputError", "LayerSummary",
    "NNSlicerError", "NNSlicerPolicy", "Neurons", "Profile", "ProfileMismatch", "Rule",
    "RuleSet", "SelectionPolicy", "Slice", "Slicer", "TraceError", "UnsupportedOperation",
    "default_rules", "ops", "register_rule",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nnslicer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from .backward.policy import EffectivePathPolicy, NNSlicerPolicy, SelectionPolicy
    from .criterion import Neurons
    from .profile.profile import Profile
    from .results.slice import LayerSummary, Slice
    from .rules.base import Rule
    from .rules.default import default_rules, register_rule
    from .rules.ruleset import RuleSet, ops
    from .slicer import EffectivePath, Slicer
