"""Forward analysis: run the traced model and hand out every node's value.

Both entry points run generated code (an fx.GraphModule derived from the traced graph), not an
``fx.Interpreter``: per-node Python overhead is most of the cost of recording a small model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..trace.graph import OperatorGraph
from ..trace.layout import example_batches

Visit = Callable[[str, torch.Tensor], None]

_RECORDERS: weakref.WeakKeyDictionary[OperatorGraph, fx.GraphModule] = (
    weakref.WeakKeyDictionary()
)
_STREAMERS: weakref.WeakKeyDictionary[OperatorGraph, fx.GraphModule] = (
    weakref.WeakKeyDictionary()
)


def _emit(visit: Visit, name: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        visit(name, value)


def _copy_graph(graph: OperatorGraph, visit_live: bool = False
                ) -> tuple[fx.Graph, dict[fx.Node, fx.Node], Any]:
    """A copy of the traced graph without its output node, and the output's argument.

    With ``visit_live`` the copy takes a second input ``visit`` and calls it on each live value.
    """
    new = fx.Graph()
    copies: dict[fx.Node, fx.Node] = {}
    live = {n.name for n in graph.live_nodes()} if visit_live else set()
    visit = None
    for n in graph.module.graph.nodes:
        if n.op == "output":
            return new, copies, fx.map_arg(n.args[0], lambda a: copies[a])
        if visit_live and visit is None and n.op != "placeholder":
            visit = new.placeholder("visit")
            for p in copies.values():  # the model input is live too
                if p.name in live:
                    new.call_function(_emit, (visit, p.name, p))
        copies[n] = new.node_copy(n, lambda a: copies[a])
        if visit is not None and n.name in live:
            new.call_function(_emit, (visit, n.name, copies[n]))
    raise AssertionError("a traced graph always has an output node")


def _recorder(graph: OperatorGraph) -> fx.GraphModule:
    """The traced model, changed to return a dict of every node's value."""
    module = _RECORDERS.get(graph)
    if module is None:
        recording, copies, _ = _copy_graph(graph)
        recording.output({n.name: c for n, c in copies.items()})
        module = _RECORDERS[graph] = fx.GraphModule(graph.module, recording)
    return module


def _streamer(graph: OperatorGraph) -> fx.GraphModule:
    """The traced model with a second input ``visit``, called on each live node's value."""
    module = _STREAMERS.get(graph)
    if module is None:
        streaming, _, output = _copy_graph(graph, visit_live=True)
        streaming.output(output)
        module = _STREAMERS[graph] = fx.GraphModule(graph.module, streaming)
    return module


def record_values(graph: OperatorGraph, x: torch.Tensor) -> dict[str, Any]:
    """Values of all nodes (tensors and shape integers) for the batch ``x``."""
    with torch.no_grad():
        return _recorder(graph)(x)


def stream_values(graph: OperatorGraph, x: torch.Tensor, visit: Visit) -> Any:
    """Run the model once, calling ``visit(name, value)`` as each live node's tensor is computed.

    Values are freed as soon as no later node needs them, so memory stays at inference level.
    Returns the model output.
    """
    with torch.no_grad():
        return _streamer(graph)(x, visit)


def learn_layouts(graph: OperatorGraph, example: torch.Tensor) -> None:
    """Find where each node keeps its samples (trace.layout) from two small runs."""
    if graph.layouts is None:
        graph.set_layouts(*(record_values(graph, x) for x in example_batches(example)))
