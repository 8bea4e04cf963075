"""Values that read the input but carry no activation: Δ = 0, no points of their own
(docs/spec.md §4, "tensors made without the input").

Shape queries (``x.size(0)``, ``x.shape``), tensors made like the input (``zeros_like``,
``x.new_zeros``), and index data: comparisons, masks, ``argmax``, integer casts, the indices
``torch.max(x, dim)`` returns. A node computed only from such values is a constant too.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch

from .base import Rule
from .ruleset import AttributeOf, Entry, ItemOf, Where, ops

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OpNode


class ConstantRule(Rule):
    """The node is not live: nothing reaches it, so it has no backward."""

    family = "constant"
    constant = True

    def backward(self, step: Step) -> None:  # pragma: no cover - constants are never live
        raise AssertionError("a constant node has no backward")


_SHAPE_METHODS = ("size", "dim", "ndimension", "numel", "nelement", "stride", "element_size",
                  "is_floating_point", "is_contiguous", "get_device")
_SHAPE_ATTRIBUTES = ("shape", "ndim", "dtype", "device", "is_cuda", "layout", "requires_grad")
_LIKE = (torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like,
         torch.randn_like, torch.randint_like, "new_zeros", "new_ones", "new_full", "new_empty",
         "new_tensor", "zero_")
_INDEX_DATA = (
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.not_,
    operator.invert, operator.and_, operator.or_, operator.xor, operator.floordiv, operator.mod,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.logical_and,
    torch.logical_or, torch.logical_not, torch.logical_xor, torch.isnan, torch.isinf,
    torch.isfinite, torch.argmax, torch.argmin, torch.argsort, torch.nonzero, torch.bucketize,
    torch.searchsorted, torch.floor_divide, torch.remainder, torch.sign, torch.signbit,
    torch.floor, torch.ceil, torch.round, torch.trunc,
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "isnan",
    "isinf", "isfinite", "argmax", "argmin", "argsort", "nonzero", "long", "int", "short", "bool",
    "byte", "char", "floor_divide", "remainder", "sign", "signbit", "floor", "ceil", "round",
    "trunc", "any", "all",
)


def _integer_cast(node: OpNode) -> bool:
    """``x.to(torch.long)``, ``x.type(torch.bool)``: the result is index data."""
    dtypes = [a for a in (*node.operands[1:], *node.fx_node.kwargs.values())
              if isinstance(a, torch.dtype)]
    return any(not d.is_floating_point for d in dtypes)


_constant = ConstantRule()

ENTRIES: list[Entry] = [
    (ops(*_SHAPE_METHODS, len), _constant),
    (AttributeOf(_SHAPE_ATTRIBUTES), _constant),
    (ops(*_LIKE, *_INDEX_DATA), _constant),
    (ops("to", "type") & Where(_integer_cast, "integer cast"), _constant),
    (ItemOf((torch.max, "max", torch.min, "min", torch.sort, "sort", torch.topk, "topk"), 1),
     _constant),
]
