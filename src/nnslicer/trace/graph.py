"""Trace a model into an operator graph whose every live node has a slicing rule.

"Live" nodes depend on the model input; they carry relative activations and contributions.
Nodes computed from parameters and constants only are not live: their Δ is zero and they
receive nothing.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import TraceError

if TYPE_CHECKING:
    from ..rules.base import Rule

# In-place operators are rewritten out of place so that recorded values are never overwritten.
_INPLACE_FUNCTIONS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_INPLACE_METHODS = {"add_", "sub_", "mul_", "div_", "relu_", "sigmoid_", "tanh_", "clamp_"}


@dataclass
class OpNode:
    """One node of the traced graph, with the rule that slices through it."""

    name: str
    fx_node: fx.Node
    op: str
    target: Any
    live: bool
    module: nn.Module | None = None
    module_path: str | None = None
    rule: Rule | None = None
    live_inputs: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """Readable operator name: module class, function or method name."""
        if self.module is not None:
            return type(self.module).__name__
        if self.op == "placeholder":
            return "input"
        if self.op == "call_function":
            return getattr(self.target, "__name__", str(self.target))
        return str(self.target)

    @property
    def family(self) -> str:
        return self.rule.family if self.rule is not None else self.op


class _Tracer(fx.Tracer):
    """Keeps modules that have a registered rule as leaves, so their rule is used."""

    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self._leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, qualname)


class OperatorGraph:
    """A traced, in-place-free copy of a model plus the rule of every live node."""

    def __init__(self, model: nn.Module):
        from ..rules.registry import is_meta, leaf_module_types, resolve_rule

        if not isinstance(model, nn.Module):
            raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
        module = copy.deepcopy(model)
        module.eval()
        for sub in module.modules():
            if getattr(sub, "inplace", False) is True:
                sub.inplace = False
        try:
            graph = _Tracer(leaf_module_types()).trace(module)
        except Exception as exc:  # fx raises many types; all mean "not traceable"
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TraceError(
                f"cannot trace {type(model).__name__} with torch.fx ({msg}); remove data-dependent "
                "control flow from forward(), or make that part a leaf module and register a rule "
                "for it with nnslicer.register_rule"
            ) from exc
        _rewrite_inplace(graph)
        self.module = fx.GraphModule(module, graph)
        self.module.eval()
        modules = dict(self.module.named_modules())

        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise TraceError(
                f"the model's forward() takes {len(placeholders)} inputs; nnslicer slices models "
                "with exactly one input tensor: wrap the model so that forward(x) takes one"
            )
        outputs = [n for n in graph.nodes if n.op == "output"]
        out_arg = outputs[0].args[0]
        if not isinstance(out_arg, fx.Node):
            raise TraceError(
                "the model returns a tuple/dict; nnslicer needs forward(x) to return one tensor of "
                "class scores: wrap the model so it returns that tensor"
            )
        self.input_name = placeholders[0].name
        self.output_name = out_arg.name

        self.nodes: list[OpNode] = []
        live: set[str] = set()
        meta: set[str] = set()  # integers derived from the input's shape
        for n in graph.nodes:
            if n.op == "output":
                continue
            inputs = [a.name for a in n.all_input_nodes]
            module_obj = modules.get(n.target) if n.op == "call_module" else None
            node = OpNode(
                name=n.name,
                fx_node=n,
                op=n.op,
                target=n.target,
                live=False,
                module=module_obj,
                module_path=n.target if n.op == "call_module" else None,
                live_inputs=[a for a in inputs if a in live],
            )
            if n.op == "placeholder":
                node.live = True
            elif node.live_inputs and not is_meta(node):
                node.live = True
                node.rule = resolve_rule(node, self)
            elif node.live_inputs or any(a in meta for a in inputs):
                meta.add(n.name)
            if node.live:
                live.add(n.name)
            self.nodes.append(node)
        self.by_name = {n.name: n for n in self.nodes}

    def feeds_only_output(self, name: str) -> bool:
        """True when the node's value is what the model returns (e.g. a final softmax)."""
        return name == self.output_name

    def live_nodes(self) -> list[OpNode]:
        return [n for n in self.nodes if n.live]

    def synapse_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters that carry synapses: the weights used by weighted-sum rules."""
        params = dict(self.module.named_parameters())
        names: dict[str, torch.Tensor] = {}
        for node in self.nodes:
            if node.rule is not None:
                for pname in node.rule.synapse_names(node):
                    names[pname] = params[pname]
        return names

    def parameter_of(self, node: fx.Node) -> tuple[str, torch.Tensor] | None:
        """The named parameter a get_attr node reads, if it is one."""
        if node.op != "get_attr":
            return None
        params = dict(self.module.named_parameters())
        if node.target in params:
            return node.target, params[node.target]
        return None


def _rewrite_inplace(graph: fx.Graph) -> None:
    for n in graph.nodes:
        if n.op == "call_function" and n.target in _INPLACE_FUNCTIONS:
            n.target = _INPLACE_FUNCTIONS[n.target]
        elif n.op == "call_method" and n.target in _INPLACE_METHODS:
            n.target = n.target[:-1]
        if n.kwargs.get("inplace") is True:
            kwargs = dict(n.kwargs)
            kwargs["inplace"] = False
            n.kwargs = kwargs
    graph.lint()
