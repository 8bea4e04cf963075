"""The view of the engine's state that one rule gets while it processes one node."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import Tensor

if TYPE_CHECKING:
    from ..trace.graph import OpNode
    from .engine import BackwardState
    from .policy import SelectionPolicy


class SynapseTarget:
    """Where a weighted sum adds its synapse signs: a (rows, K) int64 buffer; its rows are
    weight rows, times the number of samples when synapses are kept per sample (then
    ``sample_of`` maps flat indices of output points to samples)."""

    def __init__(self, buffer: Tensor, row_count: int,
                 sample_of: Callable[[Tensor], Tensor] | None):
        self.buffer = buffer
        self.row_count = row_count
        self.sample_of = sample_of

    def rows(self, weight_row: Tensor, out_flat: Callable[[], Tensor]) -> Tensor:
        """Buffer rows of points with these weight rows (``out_flat``: their flat indices)."""
        if self.sample_of is None:
            return weight_row
        return self.sample_of(out_flat()) * self.row_count + weight_row


class Step:
    """Everything a rule may read or write for one node of one batch chunk."""

    def __init__(self, state: BackwardState, node: OpNode, c_out: Tensor):
        self._state = state
        self.node = node
        self.module = node.module
        self.c_out = c_out

    # live operands stay graph nodes (rules ask for their Δ and send to them); everything else
    # — sizes read from shapes, constants, parameters — is its recorded value. Built on first
    # use: many rules read only their operands.
    @functools.cached_property
    def args(self) -> tuple[Any, ...]:
        return fx.node.map_aggregate(self.node.fx_node.args, self._setting)

    @functools.cached_property
    def kwargs(self) -> dict[str, Any]:
        return fx.node.map_aggregate(self.node.fx_node.kwargs, self._setting)

    def _setting(self, a: Any) -> Any:
        if isinstance(a, fx.Node) and a.name not in self._state.live:
            return self._state.values[a.name]
        return a

    @property
    def policy(self) -> SelectionPolicy:
        return self._state.policy

    @property
    def batch(self) -> int:
        """Number of samples in this chunk (not necessarily the size of dim 0)."""
        return self._state.batch

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

    def reference_value(self, arg: Any) -> Tensor:
        """The reference value (profile mean, class mean or 0) of a node argument, in its
        layout, float64; a constant is its own reference."""
        if self.is_live(arg):
            return self._state.reference_value(arg.name)
        value = self.value(arg)
        if isinstance(value, Tensor):
            return value.detach().to(torch.float64)
        return torch.tensor(float(value), dtype=torch.float64)

    @property
    def value_out(self) -> Tensor:
        return self._state.values[self.node.name]

    @property
    def output_name(self) -> str:
        """The node whose value the model returns."""
        return self._state.graph.output_name

    @property
    def delta_out(self) -> Tensor:
        return self._state.delta(self.node.name)

    def send(self, arg: Any, contrib: Tensor) -> None:
        """Add contributions (integers, shape of the argument's value) to a live argument."""
        if self.is_live(arg):
            self._state.add_contrib(arg.name, contrib)

    # --- synapses ----------------------------------------------------------------------------
    def per_sample_synapses(self, name: str) -> bool:
        return self._state.per_sample_synapses(name)

    def _sample_of_output(self) -> Callable[[Tensor], Tensor]:
        layout = self._state.layout(self.node.name)
        shape = self.value_out.shape
        return lambda flat: layout.sample_of(flat, shape)

    def synapse_target(self, name: str, shape: torch.Size) -> SynapseTarget:
        """The weight's synapse buffer as (rows, K), K = elements per weight row."""
        buffer = self._state.synapse_buffer(name, shape, self.batch)
        per_sample = self.per_sample_synapses(name)
        return SynapseTarget(buffer.view(-1, math.prod(shape[1:])), shape[0],
                             self._sample_of_output() if per_sample else None)

    def synapse_scratch(self, names: list[str], rows: int, cols: int) -> SynapseTarget:
        """A zero (samples × rows, cols) buffer for synapse signs that ``add_synapses`` moves
        into the weights ``names`` afterwards (for weights used transposed or in blocks)."""
        per_sample = any(self.per_sample_synapses(n) for n in names)
        count = self.batch if per_sample else 1
        buffer = torch.zeros(count * rows, cols, dtype=torch.int64,
                             device=self.c_out.device)
        return SynapseTarget(buffer, rows, self._sample_of_output() if per_sample else None)

    def add_synapses(self, names: list[str], shape: torch.Size, counts: Tensor,
                     rows: tuple[int, int] | None = None) -> None:
        """Add scratch ``counts`` ((samples ×) rows, cols, weight-shaped) to the weights
        ``names`` (rows ``lo:hi`` of them when ``rows`` is given)."""
        lo, hi = rows if rows is not None else (0, shape[0])
        for name in names:
            per_sample = self.per_sample_synapses(name)
            buffer = self._state.synapse_buffer(name, shape, self.batch)
            part = counts.reshape(-1, hi - lo, *shape[1:])
            if per_sample:
                buffer[:, lo:hi] += part
            else:
                buffer[lo:hi] += part.sum(0)

    def add_view_synapses(self, chain: list[fx.Node], counts: Tensor) -> None:
        """Add synapse counts given on a view of a parameter (``W.t()``, ``W[:k]``: ``chain``
        from ``rules.base.parameter_view``), shaped like the view, with a leading samples dim,
        to the parameter's own elements: each view element is one parameter element, so the
        view's vector-Jacobian product moves every count to its element."""
        name = chain[0].target
        parameter = self.value(chain[0])
        buffer = self._state.synapse_buffer(name, parameter.shape, self.batch)
        per_sample = self.per_sample_synapses(name)
        rows = counts if per_sample else counts.sum(0, keepdim=True)
        for i, row in enumerate(rows):
            leaf = parameter.detach().to(torch.float64).requires_grad_(True)
            with torch.enable_grad():
                value: Any = leaf
                for node in chain[1:]:
                    value = self.evaluate(node, {node.all_input_nodes[0].name: value})
                (grad,) = torch.autograd.grad(value, leaf, row.to(torch.float64))
            moved = grad.round().to(torch.int64)
            if per_sample:
                buffer[i] += moved
            else:
                buffer += moved

    def transposed(self) -> Step:
        """This step with the output's last two dims swapped (``W @ x`` is a Linear of
        ``x.T``)."""
        return _TransposedStep(self)

    def call(self, replace: dict[str, Tensor]) -> Any:
        """Re-run this node's operator with some live arguments replaced by other tensors."""
        return self.evaluate(self.node.fx_node, replace)

    def evaluate(self, node: fx.Node, replace: dict[str, Any]) -> Any:
        """Run one graph node's operator on recorded values, some replaced by others."""

        def sub(a: Any) -> Any:
            if isinstance(a, fx.Node):
                return replace[a.name] if a.name in replace else self._state.values[a.name]
            return a

        args = fx.node.map_aggregate(node.args, sub)
        kwargs = fx.node.map_aggregate(node.kwargs, sub)
        if node.op == "call_module":
            return self._state.graph.module.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)


class _TransposedStep(Step):
    """The step of ``W @ x`` seen as a Linear of ``x.T``: the output's last two dims
    swapped (the batch dim is not one of them, so samples map the same)."""

    def __init__(self, step: Step):
        super().__init__(step._state, step.node, step.c_out.transpose(-1, -2).contiguous())
        self._value_out = step.value_out.transpose(-1, -2).contiguous()

    @property
    def value_out(self) -> Tensor:
        return self._value_out
