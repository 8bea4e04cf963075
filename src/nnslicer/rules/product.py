"""Products of two input-dependent tensors (docs/spec.md §4): ``a * b`` (gates,
squeeze-excitation) and ``a @ b`` (attention scores, attention × values).

The change of a product splits exactly into two terms with the operands' midpoints,
``a·b − ā·b̄ = Δa·(b + b̄)/2 + Δb·(a + ā)/2`` (ā, b̄ the reference values), so each output
point is a weighted sum over those terms: two for ``a * b``, 2K for a matrix product with inner
size K (all of a's terms, then all of b's). T is the sum of the terms (the pinned reading).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import Rule, sum_to_shape, unsupported
from .ruleset import Entry, live_operands, ops
from .weighted_sum import row_offsets, weighted_sum_windows

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


def _operands(step: Step) -> tuple[object, object]:
    args = step.node.operands
    return args[0], (args[1] if len(args) > 1 else step.kwargs["other"])


def _midpoint(step: Step, arg: object, shape: torch.Size) -> Tensor:
    """(value + reference) / 2 of an operand, float64, expanded to ``shape``."""
    value = step.value(arg).detach().to(torch.float64)
    return ((value + step.reference_value(arg)) / 2).expand(shape)


class ProductRule(Rule):
    """``a * b`` of two input-dependent tensors (broadcasting, in-place too)."""

    family = "weighted_sum"
    channels = "pins"

    def backward(self, step: Step) -> None:
        a, b = _operands(step)
        c = step.c_out
        shape = c.shape
        ta = step.delta(a).expand(shape) * _midpoint(step, b, shape)
        tb = step.delta(b).expand(shape) * _midpoint(step, a, shape)
        signs = step.policy.two_terms(c, ta, tb, step.value_out)
        for operand, part in zip((a, b), signs, strict=True):
            step.send(operand, sum_to_shape(part, step.value(operand).shape))


class MatmulRule(Rule):
    """``a @ b``, ``torch.matmul``, ``torch.bmm`` of two input-dependent tensors (batch dims
    broadcast): output (…, i, j) has the terms of a[…, i, k] and b[…, k, j] for every k."""

    family = "weighted_sum"
    channels = "pins"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if len(node.operands) < 2:
            raise unsupported(node, "expected two operands")

    def backward(self, step: Step) -> None:
        a, b = _operands(step)
        va, vb = step.value(a), step.value(b)
        if va.dim() < 2 or vb.dim() < 2:
            raise unsupported(step.node, "a matrix product with a vector operand")
        batch = torch.broadcast_shapes(va.shape[:-2], vb.shape[:-2])
        (I, K), J = va.shape[-2:], vb.shape[-1]
        a_shape, b_shape = (*batch, I, K), (*batch, K, J)
        da = step.delta(a).expand(a_shape).reshape(-1, I, K)
        db_t = step.delta(b).expand(b_shape).reshape(-1, K, J).transpose(1, 2)
        ma = _midpoint(step, a, torch.Size(a_shape)).reshape(-1, I, K)
        mb_t = _midpoint(step, b, torch.Size(b_shape)).reshape(-1, K, J).transpose(1, 2)
        M = da.shape[0]
        # A grouped weighted sum with one group per matrix m: output (m, i, j) reads row
        # (m, i) = [Δa[m, i, :], (a + ā)[m, i, :] / 2] against weight row (m, j) =
        # [(b + b̄)[m, :, j] / 2, Δb[m, :, j]], so its 2K terms are a's then b's, as the
        # reading pins them. Signs reaching the rows' first halves are a's; the "synapse"
        # counts of the weight rows' second halves are b's.
        rows = torch.cat([da, ma], dim=2).reshape(-1)
        weights = torch.cat([mb_t, db_t], dim=2).reshape(M * J, 2 * K)
        c = step.c_out.reshape(M, I, J).permute(1, 0, 2).reshape(1, I, M * J)
        y = step.value_out.reshape(M, I, J).permute(1, 0, 2).reshape(1, I, M * J)
        counts = step.synapse_scratch([], M * J, 2 * K)
        rowbase, koff = row_offsets(M * I, 2 * K, rows.device)
        signs = weighted_sum_windows(step, rows, rowbase, koff, weights, c, y, M, counts,
                                     lambda b, q, o: q * (M * J) + o, False)
        ca = signs.view(M, I, 2 * K)[:, :, :K]
        cb = counts.buffer.view(M, J, 2 * K)[:, :, K:].transpose(1, 2)
        for operand, contrib, shape in ((a, ca, a_shape), (b, cb, b_shape)):
            step.send(operand, sum_to_shape(contrib.reshape(shape), step.value(operand).shape))


ENTRIES: list[Entry] = [
    (ops(operator.mul, torch.mul, "mul", torch.multiply, "multiply") & live_operands(2),
     ProductRule()),
    (ops(operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm") & live_operands(2),
     MatmulRule()),
]
