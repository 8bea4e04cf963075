"""The view of the engine's state that one rule gets while it processes one node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import Tensor

if TYPE_CHECKING:
    from ..trace.graph import OpNode
    from .engine import BackwardState
    from .policy import SelectionPolicy


class Step:
    """Everything a rule may read or write for one node of one batch chunk."""

    def __init__(self, state: BackwardState, node: OpNode, c_out: Tensor):
        self._state = state
        self.node = node
        self.module = node.module
        self.c_out = c_out
        self.args = node.fx_node.args
        self.kwargs = node.fx_node.kwargs

    @property
    def policy(self) -> SelectionPolicy:
        return self._state.policy

    @property
    def batch(self) -> int:
        return self.c_out.shape[0]

    def arg(self, position: int, keyword: str | None = None, default: Any = None) -> Any:
        """The fx argument at ``position`` or under ``keyword`` (as written in the model)."""
        if position < len(self.args):
            return self.args[position]
        if keyword is not None and keyword in self.kwargs:
            return self.kwargs[keyword]
        return default

    def is_live(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self._state.live

    def value(self, arg: Any) -> Any:
        """Recorded value of a node argument, or the constant itself."""
        if isinstance(arg, fx.Node):
            return self._state.values[arg.name]
        return arg

    def delta(self, arg: Any) -> Tensor:
        """Relative activation Δ (float64) of a node argument; zero for constants."""
        if self.is_live(arg):
            return self._state.delta(arg.name)
        value = self.value(arg)
        if isinstance(value, Tensor):
            return torch.zeros_like(value, dtype=torch.float64)
        return torch.zeros((), dtype=torch.float64)

    @property
    def value_out(self) -> Tensor:
        return self._state.values[self.node.name]

    @property
    def delta_out(self) -> Tensor:
        return self._state.delta(self.node.name)

    def send(self, arg: Any, contrib: Tensor) -> None:
        """Add contributions (integers, shape of the argument's value) to a live argument."""
        if self.is_live(arg):
            self._state.add_contrib(arg.name, contrib)

    def synapse_buffer(self, param_name: str, shape: torch.Size) -> Tensor:
        """Accumulator for one weight: shape (B, *shape) per sample, else ``shape``."""
        return self._state.synapse_buffer(param_name, shape, self.batch)

    def synapse_rows(self, param_name: str, b: Tensor, row: Tensor, rows: int) -> Tensor:
        """Row index into ``synapse_buffer(...).view(-1, cols)`` for sample b and weight row."""
        return b * rows + row if self._state.per_sample_synapses(param_name) else row

    def call(self, replace: dict[str, Tensor]) -> Any:
        """Re-run this node's operator with some live arguments replaced by other tensors."""

        def sub(a: Any) -> Any:
            if isinstance(a, fx.Node):
                return replace[a.name] if a.name in replace else self._state.values[a.name]
            return a

        args = fx.node.map_aggregate(self.args, sub)
        kwargs = fx.node.map_aggregate(self.kwargs, sub)
        node = self.node
        if node.op == "call_module":
            return node.module(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)
