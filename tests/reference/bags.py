"""nn.EmbeddingBag over fixed-size bags (docs/spec.md §8, docs/composite.md), in docs/spec.md §4
rules.

A (batch, bag) token tensor: the layer is an embedding lookup (``{module}.lookup``, per sample
(bag, D): the Embedding rule, ``contrib(weight[token, d]) += sign(C)``) followed by the bag's
reduction over the bag dim, the fx node itself, by its own rule with the padding entries
(``token == padding_idx``) left out, as PyTorch leaves them out of the reduction:

* ``sum``: a weighted sum over the bag's non-padding entries, ``t = Δe_j`` or, with constant
  ``per_sample_weights`` w, ``t = w_j·Δe_j`` (the product of a looked-up row and a constant
  weight is written into the sum's coefficient: a scale by a constant in between would hand on
  sign(C) and change no selection);
* ``mean``: the same sum divided by the number of non-padding entries (``t = Δe_j / n``);
* ``max``: per feature d, the selected entry: the non-padding entry with the largest value,
  among equal values the first in bag order (what ``torch.max`` over the bag dim returns; the
  layer's output cannot tell equal entries apart, a repeated token being the common case),
  ``s = sign(C)·sign(Δy)·sign(Δx)``.

A bag with no non-padding entry has output 0, a constant: no edge. The edges depend on the
sample's tokens, so they are made per sample. Bags given by ``offsets`` are not supported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn as nn

from .rules import Expansion, ReferenceUnsupported, Rule, WSumEdges, make_wsum


def _valid(tokens: np.ndarray, padding_idx: int | None) -> np.ndarray:
    return np.ones(len(tokens), dtype=bool) if padding_idx is None else tokens != padding_idx


def bag_edges(
    tokens: np.ndarray, weights: np.ndarray | None, mode: str, padding_idx: int | None, dim: int
) -> list[WSumEdges]:
    """One sample's sum/mean edges: per output feature d, the non-padding entries j (flat
    source ``j·D + d`` of the lookup)."""
    keep = np.flatnonzero(_valid(tokens, padding_idx))
    coef = np.ones(len(keep)) if weights is None else weights[keep]
    div = float(len(keep)) if mode == "mean" else 1.0
    return [make_wsum(0, keep * dim + d, -1, coef, div) for d in range(dim)]


def bag_max_sources(lookup: np.ndarray, tokens: np.ndarray, padding_idx: int | None) -> np.ndarray:
    """One sample's max selection: per feature d, the flat lookup point of the first
    non-padding entry with the largest value (-1: the bag has none)."""
    bag, dim = lookup.shape
    keep = _valid(tokens, padding_idx)
    out = np.full(dim, -1, dtype=np.int64)
    if not keep.any():
        return out
    for d in range(dim):
        best = None
        for j in range(bag):
            if keep[j] and (best is None or lookup[j, d] > lookup[best, d]):
                best = j
        out[d] = best * dim + d
    return out


def bag_forward(lookup, tokens, weights, mode, padding_idx) -> np.ndarray:
    """The reduction of one sample in float64 (for the self-check)."""
    keep = _valid(tokens, padding_idx)
    rows = lookup[keep]
    if not keep.any():
        return np.zeros(lookup.shape[1])
    if mode == "max":
        return rows.max(axis=0)
    if weights is not None:
        rows = rows * weights[keep][:, None]
    return rows.sum(axis=0) / (len(rows) if mode == "mean" else 1.0)


def embedding_bag_expansion(
    name: str,
    m: nn.EmbeddingBag,
    tokens: str,
    ps_shape: tuple[int, ...],
    weights: Any,
    params: dict[str, np.ndarray],
) -> Expansion:
    if len(ps_shape) != 1:
        raise ReferenceUnsupported(f"reference: {name!r}: needs a 2-D (batch, bag) token tensor")
    if m.max_norm is not None:
        raise ReferenceUnsupported(f"reference: {name!r}: max_norm")
    if weights is not None and m.mode != "sum":
        raise ReferenceUnsupported(f"reference: {name!r}: per_sample_weights need mode='sum'")
    lookup = f"{name}.lookup"
    table = params[f"{name}.weight"]
    nodes = [(lookup, Rule("embed", [tokens], [f"{name}.weight"]))]
    final = Rule(
        "maxsel" if m.mode == "max" else "wsum",
        [lookup],
        attrs={
            "op": "bag",
            "mode": m.mode,
            "padding_idx": m.padding_idx,
            "tokens": tokens,
            "weights": weights,
            "dim": table.shape[1],
        },
    )

    def compute(values: list[np.ndarray]) -> dict[str, np.ndarray]:
        (tok,) = values
        ids = tok.astype(np.int64)
        assert np.array_equal(ids, tok), "EmbeddingBag indices must be integers"
        return {lookup: table[ids]}

    return Expansion(nodes, compute, {}, final, key=None)
