"""Scale rules: BatchNorm in eval mode, and multiplication/division by a constant.

One edge per point, gain a: s = sign(C)·sign(Δy)·sign(a·Δx) (docs/spec.md §4).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule, sum_to_shape, unsupported
from .ruleset import Entry, live_operands, ops

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


def broadcast_channels(v: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector shaped to broadcast over a (B, C, ...) tensor."""
    return v.view(1, -1, *([1] * (like.dim() - 2)))


class BatchNormRule(Rule):
    """BatchNorm1d/2d and ``F.batch_norm`` in eval mode with running statistics:
    a = γ / sqrt(var + ε), whose sign is γ's."""

    family = "scale"
    channels = "passes"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.module is not None:
            if node.module.running_var is None:
                raise unsupported(node, "BatchNorm without running statistics normalises per "
                                  "batch")
            return
        args, kwargs = node.fx_node.args, node.fx_node.kwargs
        training = args[5] if len(args) > 5 else kwargs.get("training", False)
        running_var = args[2] if len(args) > 2 else kwargs.get("running_var")
        if training is not False or running_var is None:
            raise unsupported(node, "batch_norm with batch statistics mixes the samples")

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        if step.module is not None:
            weight = step.module.weight
        else:
            weight = step.value(step.arg(3, "weight"))
        dx = step.delta(x_arg)
        gain = torch.ones((), dtype=torch.float64) if weight is None else broadcast_channels(
            weight.detach().double(), dx)
        signs = step.policy.pointwise(step.c_out, step.delta_out, gain, dx)
        step.send(x_arg, signs)


_DIVISIONS = {operator.truediv, torch.div, torch.true_divide, "div", "true_divide", "divide",
              torch.divide}
_NEGATIONS = {operator.neg, torch.neg, "neg", torch.negative, "negative"}


class ConstantScaleRule(Rule):
    """x · c, c · x, x / c and −x, with c a number or a tensor that does not depend on the input."""

    family = "scale"
    channels = "passes"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.target in _NEGATIONS:
            return
        args = node.fx_node.args
        if node.target in _DIVISIONS:
            if node.fx_node.kwargs.get("rounding_mode") is not None:
                raise unsupported(node, "rounded division is not linear")
            if len(args) > 1 and node.is_live_arg(args[1]):
                raise unsupported(node, "dividing by an input-dependent tensor is not linear")

    def backward(self, step: Step) -> None:
        if step.node.target in _NEGATIONS:
            x_arg, gain = step.arg(0), torch.tensor(-1.0, dtype=torch.float64)
        else:
            a, b = step.arg(0), step.arg(1, "other")
            x_arg, const = (a, b) if step.is_live(a) else (b, a)
            const = step.value(const)
            const = const.detach().double() if isinstance(const, Tensor) else torch.tensor(
                float(const), dtype=torch.float64
            )
            gain = 1.0 / const if step.node.target in _DIVISIONS else const
        shape = step.c_out.shape
        dx = step.delta(x_arg).expand(shape)
        signs = step.policy.pointwise(step.c_out, step.delta_out, gain.to(dx.device), dx)
        step.send(x_arg, sum_to_shape(signs, step.value(x_arg).shape))


_scale = ConstantScaleRule()

ENTRIES: list[Entry] = [
    (ops(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, F.batch_norm), BatchNormRule()),
    (ops(operator.mul, torch.mul, "mul", torch.multiply, "multiply") & live_operands(1), _scale),
    (ops(*_DIVISIONS), _scale),
    (ops(*_NEGATIONS), _scale),
]
