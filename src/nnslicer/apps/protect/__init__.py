"""Selective model protection with NNSlicer slices, the simulated attackers and evaluation."""

from .evaluate import (
    DEFAULT_ATTACKERS,
    DEFAULT_BUDGETS,
    DEFAULT_RATIOS,
    ProtectEvaluation,
    evaluate_protection,
    log_budgets,
    recovery,
)
from .protection import (
    ATTACKERS,
    PROTECT_METHODS,
    ProtectReport,
    init_from_exposed_stats,
    protect,
    reinitialise_hidden,
    simulate_attack,
    train_hidden_only,
)
from .secret import load_hidden, pack_hidden, protection_cost, restore, save_hidden

__all__ = [
    "ATTACKERS", "DEFAULT_ATTACKERS", "DEFAULT_BUDGETS", "DEFAULT_RATIOS", "PROTECT_METHODS",
    "ProtectEvaluation", "ProtectReport", "evaluate_protection", "init_from_exposed_stats",
    "load_hidden", "log_budgets", "pack_hidden", "protect", "protection_cost", "recovery",
    "reinitialise_hidden", "restore", "save_hidden", "simulate_attack", "train_hidden_only",
]
