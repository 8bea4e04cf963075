"""Independent, slow, float64 reference of SPEC.md v2 §2–§4 and §6 (no import of the engine).

``ReferenceSlicer(model, theta)`` mirrors ``nnslicer.Slicer``: ``profile(data)``,
``slice(x, target, reference, per_sample, theta, check)``, ``nodes()``, ``forward_values(x)``.
A target is any output form of docs/spec.md §6 or ``ReferenceNeurons(node, index)`` (intermediate
criterion). Modules: ``spec_reference`` (the slicer, and the list of choices where SPEC is
silent), ``selection`` (θ-selection), ``rules`` (edge tables), ``movement`` (NumPy mirrors of
data movement), ``recurrent`` (LSTM/GRU/RNN unrolled), ``attention`` (MultiheadAttention,
scaled_dot_product_attention and TransformerEncoderLayer decomposed), ``bags`` (EmbeddingBag),
``random_models`` (hypothesis models and helpers).
"""

from .spec_reference import (
    DEAD_OUTPUT_RATIO,
    ReferenceNeurons,
    ReferenceSlice,
    ReferenceSlicer,
    ReferenceUnsupported,
    theta_select,
)

__all__ = [
    "DEAD_OUTPUT_RATIO",
    "ReferenceNeurons",
    "ReferenceSlice",
    "ReferenceSlicer",
    "ReferenceUnsupported",
    "theta_select",
]
