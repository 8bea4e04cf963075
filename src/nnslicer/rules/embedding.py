"""Embedding lookups (docs/spec.md §4): the output points are sources, like the model input.

The edge to output point (…, d) is carried by the looked-up weight entry E[token, d]:
``contrib(E[token, d]) += sign(C)``; nothing passes to the token indices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import nn

from .base import Rule, unsupported
from .ruleset import Entry, ops

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


class EmbeddingRule(Rule):
    """``nn.Embedding`` and ``F.embedding`` with a parameter weight."""

    family = "embedding"
    channels = "produces"

    def _weight_name(self, node: OpNode) -> str:
        if node.module is not None:
            return f"{node.module_path}.weight"
        w = node.fx_node.args[1] if len(node.fx_node.args) > 1 else node.fx_node.kwargs["weight"]
        return w.target

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.module is not None:
            if node.module.max_norm is not None:
                raise unsupported(node, "max_norm renormalises the weight during the lookup")
            return
        w = node.fx_node.args[1] if len(node.fx_node.args) > 1 else node.fx_node.kwargs.get(
            "weight")
        if graph.parameter_of(w) is None:
            raise unsupported(node, "its weight is not a parameter of the model")
        if node.fx_node.kwargs.get("max_norm") is not None:
            raise unsupported(node, "max_norm renormalises the weight during the lookup")

    def synapse_names(self, node: OpNode) -> list[str]:
        return [self._weight_name(node)]

    def backward(self, step: Step) -> None:
        tokens = step.value(step.arg(0, "input")).long()
        c = step.c_out
        D = c.shape[-1]
        name = self._weight_name(step.node)
        weight_shape = (step.module.weight if step.module is not None
                        else step.value(step.arg(1, "weight"))).shape
        target = step.synapse_target(name, weight_shape)
        flat = c.reshape(-1).nonzero().squeeze(1)
        token = tokens.reshape(-1)[flat // D]
        signs = step.policy.movement(c.reshape(-1)[flat].sign())
        rows = target.rows(token, lambda: flat)
        target.buffer.index_put_((rows, flat % D), signs, accumulate=True)


ENTRIES: list[Entry] = [(ops(nn.Embedding, F.embedding), EmbeddingRule())]
