"""``block_linear``: one weighted sum over several inputs, each with its own weight.

The gate pre-activation of a recurrent cell, ``W_i·x_t + b_i + W_h·h_{t−1} + b_h``, is one
weighted sum over the features of x_t and h_{t−1} together (docs/spec.md §4), and a gate is a
row block of ``weight_ih`` / ``weight_hh``; the q, k and v projections of attention are row
blocks of ``in_proj_weight``. ``block_linear`` computes exactly that and stays one node of the
traced graph, with the original parameters as its weights, so synapses keep their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F

if TYPE_CHECKING:  # only public callables may live here: the tracer keeps them as one node
    from torch import Tensor


def block_linear(inputs: tuple[Tensor, ...], weights: tuple[Tensor, ...],
                 bias: Tensor | None = None, rows: tuple[int, int] | None = None) -> Tensor:
    """``Σ_i inputs[i] @ weights[i][rows].T + bias`` (rows ``lo:hi`` of every weight)."""
    lo, hi = rows if rows is not None else (0, weights[0].shape[0])
    out = F.linear(inputs[0], weights[0][lo:hi])
    for x, w in zip(inputs[1:], weights[1:], strict=True):
        out = out + F.linear(x, w[lo:hi])
    return out if bias is None else out + bias
