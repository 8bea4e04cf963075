"""Selective model protection with NNSlicer slices, the simulated attacker and evaluation."""

from .evaluate import DEFAULT_BUDGETS, ProtectEvaluation, evaluate_protection
from .protection import (
    PROTECT_METHODS,
    ProtectReport,
    protect,
    reinitialise_hidden,
    simulate_attack,
)

__all__ = [
    "DEFAULT_BUDGETS", "PROTECT_METHODS", "ProtectEvaluation", "ProtectReport",
    "evaluate_protection", "protect", "reinitialise_hidden", "simulate_attack",
]
