"""Scale rules: BatchNorm in eval mode and multiplication/division by a constant.

One edge per point, gain a: s = sign(C)·sign(Δy)·sign(a·Δx) (SPEC §4).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .base import Rule, sum_to_shape, unsupported

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


def _broadcast_channels(v: Tensor, like: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (like.dim() - 2)))


class BatchNormRule(Rule):
    """BatchNorm1d/2d in eval mode with running statistics: a = γ / sqrt(var + ε)."""

    family = "scale"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.module.running_var is None:
            raise unsupported(node, "BatchNorm without running statistics normalises per batch")

    def backward(self, step: Step) -> None:
        m: nn.modules.batchnorm._BatchNorm = step.module
        x_arg = step.arg(0)
        gain = torch.rsqrt(m.running_var.detach().double() + m.eps)
        if m.weight is not None:
            gain = gain * m.weight.detach().double()
        dx = step.delta(x_arg)
        signs = step.policy.pointwise(
            step.c_out.sign(), step.delta_out, _broadcast_channels(gain, dx), dx
        )
        step.send(x_arg, signs)


_DIVISIONS = {operator.truediv, torch.div, torch.true_divide, "div", "true_divide"}
_NEGATIONS = {operator.neg, torch.neg, "neg"}


class ConstantScaleRule(Rule):
    """x · c, c · x, x / c and −x, with c a number or a tensor that does not depend on the input."""

    family = "scale"

    def _operands(self, node: OpNode) -> list[object]:
        return list(node.fx_node.args[:2])

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.target in _NEGATIONS:
            return
        live = [a for a in self._operands(node) if getattr(a, "name", None) in node.live_inputs]
        if len(live) != 1:
            raise unsupported(
                node, "a product of two input-dependent tensors is not a weighted sum"
            )
        if node.target in _DIVISIONS:
            if node.fx_node.kwargs.get("rounding_mode") is not None:
                raise unsupported(node, "rounded division is not linear")
            if node.fx_node.args[0] is not live[0]:
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
        signs = step.policy.pointwise(step.c_out.sign(), step.delta_out, gain.to(dx.device), dx)
        step.send(x_arg, sum_to_shape(signs, step.value(x_arg).shape))
