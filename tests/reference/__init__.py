"""Independent, slow, float64 reference of SPEC.md §2–§4 (no import of the engine)."""

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
