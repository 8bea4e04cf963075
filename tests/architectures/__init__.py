"""Architecture suite: small, faithful re-implementations of public-zoo models.

``SUITE`` maps an entry name to an :class:`Entry` (builder, input shape and dtype, origin,
SPEC v2 features). Each module mirrors one zoo; ``tests/engine/test_architectures.py`` slices every
entry and ``benchmarks/architectures.py`` times them.
"""

from . import (  # noqa: F401  (importing registers the entries)
    pytorchcv_models,
    sequence_models,
    timm_models,
    torchvision_cnn,
    torchvision_mobile,
    torchvision_transformers,
)
from ._registry import SUITE, Entry, entry

__all__ = ["SUITE", "Entry", "entry"]
