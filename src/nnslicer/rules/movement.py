"""Data-movement rules: every output point has one source point, s = sign(C) (SPEC §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from torch import Tensor

from .base import Rule, unsupported

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


class IdentityMovementRule(Rule):
    """Same shape in and out, point i comes from point i (Dropout, Identity, contiguous...)."""

    family = "movement"

    def __init__(self, output_only: bool = False):
        # softmax/log-softmax mix points, so they are only accepted as the model's last step
        self.output_only = output_only

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if self.output_only and not graph.feeds_only_output(node.name):
            raise unsupported(node, "softmax/log-softmax is only supported as the model's output")

    def backward(self, step: Step) -> None:
        step.send(step.arg(0, "input"), step.policy.movement(step.c_out.sign()))


class RearrangeRule(Rule):
    """flatten, view, reshape, permute, transpose, squeeze, unsqueeze, cat, indexing...

    Each output element is a copy of one input element, so the backward of the operator
    (its vector-Jacobian product) applied to sign(C) adds exactly sign(C) to each source point.
    """

    family = "movement"

    def backward(self, step: Step) -> None:
        signs = step.policy.movement(step.c_out.sign()).to(torch.float64)
        leaves: dict[str, Tensor] = {}
        for arg in step.node.fx_node.all_input_nodes:
            value = step.value(arg)
            if step.is_live(arg) and isinstance(value, Tensor) and value.is_floating_point():
                leaves[arg.name] = value.detach().to(torch.float64).requires_grad_(True)
        with torch.enable_grad():
            out = step.call(leaves)
            grads = torch.autograd.grad(out, list(leaves.values()), signs, allow_unused=True)
        for name, grad in zip(leaves, grads, strict=True):
            if grad is not None:
                step.send(_node(step, name), grad.round().to(torch.int64))


def _node(step: Step, name: str) -> fx.Node:
    return next(a for a in step.node.fx_node.all_input_nodes if a.name == name)
