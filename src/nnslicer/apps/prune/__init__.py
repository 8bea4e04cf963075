"""Class-targeted pruning with NNSlicer slices, its baselines, evaluation and export."""

from .evaluate import DEFAULT_RATIOS, PruneEvaluation, evaluate_pruning, sample_class_sets
from .export import (
    ExportError,
    ExportReport,
    analyze_channels,
    count_parameters,
    export_pruned,
    load_exported,
    measure_latency,
    save_exported,
)
from .pruning import (
    PRUNE_METHODS,
    ClassContributions,
    LayerPruneStats,
    PruneReport,
    PruneWarning,
    apply_masks,
    layer_input_means,
    masked_finetune,
    prune,
)

__all__ = [
    "DEFAULT_RATIOS", "PRUNE_METHODS", "ClassContributions", "ExportError", "ExportReport",
    "LayerPruneStats", "PruneEvaluation", "PruneReport", "PruneWarning", "analyze_channels",
    "apply_masks", "count_parameters", "evaluate_pruning", "export_pruned", "layer_input_means",
    "load_exported", "masked_finetune", "measure_latency", "prune", "sample_class_sets",
    "save_exported",
]
