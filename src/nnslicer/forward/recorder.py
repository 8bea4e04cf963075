"""Forward analysis: run the traced model and hand out every node's value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..trace.graph import OperatorGraph


def record_values(graph: OperatorGraph, x: torch.Tensor) -> dict[str, Any]:
    """Values of all nodes (tensors and shape integers) for the batch ``x``."""
    interpreter = fx.Interpreter(graph.module, garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(x)
    return {node.name: value for node, value in interpreter.env.items()}


class _Streaming(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, visit: Callable[[str, Any], None]):
        super().__init__(module, garbage_collect_values=True)
        self._visit = visit

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self._visit(n.name, value)
        return value


def stream_values(graph: OperatorGraph, x: torch.Tensor, visit: Callable[[str, Any], None]) -> Any:
    """Run the model once, calling ``visit(name, value)`` as each node is computed.

    Values are freed as soon as no later node needs them, so memory stays at inference level.
    Returns the model output.
    """
    with torch.no_grad():
        return _Streaming(graph.module, visit).run(x)
