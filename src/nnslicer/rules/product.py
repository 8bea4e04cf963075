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

from .base import TERM_BUDGET, Rule, sum_to_shape, unsupported
from .ruleset import Entry, live_operands, ops

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
        db = step.delta(b).expand(b_shape).reshape(-1, K, J)
        ma = _midpoint(step, a, torch.Size(a_shape)).reshape(-1, I, K)
        mb_t = _midpoint(step, b, torch.Size(b_shape)).reshape(-1, K, J).transpose(1, 2)
        db_t = db.transpose(1, 2)
        c = step.c_out.reshape(-1, I, J)
        y = step.value_out.reshape(-1, I, J)
        # signs of a[m, i, :] and of bᵀ[m, j, :], one row per (matrix, row): whole rows are
        # added (index_add_), ~10x cheaper than index_put_ of every (m, i, k) on CPU
        ca = torch.zeros(da.shape, dtype=torch.int64, device=da.device)
        cb_t = torch.zeros(db_t.shape, dtype=torch.int64, device=da.device)
        ca_rows, cb_rows = ca.view(-1, K), cb_t.view(-1, K)
        nz = c.nonzero()
        chunk = max(1, TERM_BUDGET // (2 * K))
        for s in range(0, nz.shape[0], chunk):
            m, i, j = nz[s : s + chunk].unbind(1)
            terms = torch.cat([da[m, i] * mb_t[m, j], db_t[m, j] * ma[m, i]], dim=1)
            signs = step.policy.weighted_sum(terms, c[m, i, j].sign(),
                                             y[m, i, j].to(torch.float64)).to(torch.int64)
            ca_rows.index_add_(0, m * I + i, signs[:, :K])
            cb_rows.index_add_(0, m * J + j, signs[:, K:])
        for operand, contrib, shape in ((a, ca, a_shape), (b, cb_t.transpose(1, 2), b_shape)):
            step.send(operand, sum_to_shape(contrib.reshape(shape), step.value(operand).shape))


ENTRIES: list[Entry] = [
    (ops(operator.mul, torch.mul, "mul", torch.multiply, "multiply") & live_operands(2),
     ProductRule()),
    (ops(operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm") & live_operands(2),
     MatmulRule()),
]
