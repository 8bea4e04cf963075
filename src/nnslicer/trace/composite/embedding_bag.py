"""``nn.EmbeddingBag`` over fixed-size bags: an embedding lookup, then the bag's sum, mean or
max over the bag dim (padding entries left out), so the lookup and the reduction are sliced by
their own rules (an nnslicer extension of docs/spec.md §4)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn


def embedding_bag(m: nn.EmbeddingBag, input: Any, offsets: Any = None,
                  per_sample_weights: Any = None) -> Any:
    """``nn.EmbeddingBag.forward`` for a 2-D (batch, bag) token tensor."""
    if offsets is not None or input.dim() != 2:
        raise NotImplementedError(
            "EmbeddingBag with offsets (bags of different lengths) has no fixed graph; pass a "
            "2-D (batch, bag) token tensor")
    if m.max_norm is not None:
        raise NotImplementedError("EmbeddingBag with max_norm renormalises its weight")
    vectors = F.embedding(input, m.weight, m.padding_idx)
    if per_sample_weights is not None:
        vectors = vectors * per_sample_weights.unsqueeze(-1)
    if m.padding_idx is None:
        if m.mode == "max":
            return vectors.amax(1)
        return vectors.sum(1) if m.mode == "sum" else vectors.mean(1)
    keep = (input != m.padding_idx).unsqueeze(-1)
    if m.mode == "max":
        # padding entries never win the max; a bag of padding only gives zeros, as PyTorch's
        best = vectors.masked_fill(~keep, float("-inf")).amax(1)
        return best.where(keep.any(1), 0.0)
    total = (vectors * keep).sum(1)
    return total if m.mode == "sum" else total / keep.sum(1).clamp(min=1)
