"""Forward analysis: run the traced model once and keep every node's value."""

from __future__ import annotations

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
