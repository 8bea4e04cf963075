"""Class-targeted pruning with NNSlicer slices, its baselines, evaluation and export."""

from nnslicer.apps.importance import ClassContributions, sample_class_sets

from .channels import ChannelGraph, analyze_channels
from .evaluate import DEFAULT_RATIOS, PruneEvaluation, evaluate_pruning
from .export import (
    ExportError,
    ExportReport,
    count_parameters,
    export_pruned,
    load_exported,
    measure_latency,
    save_exported,
)
from .pruning import (
    PRUNE_METHODS,
    LayerPruneStats,
    PruneReport,
    PruneWarning,
    apply_masks,
    input_profile,
    layer_input_means,
    masked_finetune,
    prune,
)

__all__ = [
    "DEFAULT_RATIOS", "PRUNE_METHODS", "ChannelGraph", "ClassContributions", "ExportError",
    "ExportReport", "LayerPruneStats", "PruneEvaluation", "PruneReport", "PruneWarning",
    "analyze_channels", "apply_masks", "count_parameters", "evaluate_pruning", "export_pruned",
    "input_profile", "layer_input_means", "load_exported", "masked_finetune", "measure_latency",
    "prune", "sample_class_sets", "save_exported",
]
