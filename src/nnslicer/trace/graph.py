"""Trace a model into an operator graph and tell which nodes depend on the model input.

"Live" nodes depend on the input and carry relative activations and contributions. Nodes
computed from parameters and constants only are not live (Δ = 0, they receive nothing), and so
are nodes whose value carries no activation although they read the input: shape queries,
``zeros_like(x)``, integer indices (the rule set says which, ``GraphHooks.is_constant``).

Operators that return several tensors (``chunk``, ``split``, ``max(x, dim)``…) are rewritten
so that each tensor a model uses is a node of its own: ``a, b = x.chunk(2)`` becomes two nodes
``select_output(torch.chunk, i, x, 2)``, each a single tensor with one rule.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.fx as fx
from torch import nn

from ..errors import InputError, NNSlicerError, TraceError
from .layout import BatchLayout, layouts_from_values
from .tracer import ModelTracer, NeedsConcreteShapes, TracingHooks, user_location

if TYPE_CHECKING:
    from ..rules.base import Rule
    from .tracer import Composites

# In-place operators are rewritten out of place so that recorded values are never overwritten.
_INPLACE_FUNCTIONS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_INPLACE_METHODS = {"add_", "sub_", "mul_", "div_", "relu_", "sigmoid_", "tanh_", "clamp_",
                    "masked_fill_", "clamp_min_", "clamp_max_", "exp_", "pow_", "sqrt_",
                    "neg_", "abs_", "square_"}


def select_output(fn: Any, index: int, *args: Any, **kwargs: Any) -> Any:
    """Item ``index`` of what ``fn(*args, **kwargs)`` returns (``fn`` a function or a method
    name): one tensor of an operator that returns several."""
    if isinstance(fn, str):
        return getattr(args[0], fn)(*args[1:], **kwargs)[index]
    return fn(*args, **kwargs)[index]


class GraphHooks(TracingHooks, Protocol):
    """What the graph asks the rule set (``rules.ruleset.RuleSet`` implements it)."""

    def is_constant(self, node: OpNode) -> bool: ...

    def several_outputs(self, node: OpNode) -> bool: ...


@dataclass
class OpNode:
    """One node of the traced graph, with the rule that slices through it."""

    name: str
    fx_node: fx.Node
    op: str
    target: Any
    live: bool
    module: nn.Module | None = None
    #: qualified name of the module this node is (call_module) or sits in (e.g. layer2.0.se)
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
            if self.target is select_output:
                fn = self.fx_node.args[0]
                return f"{fn if isinstance(fn, str) else fn.__name__}[{self.fx_node.args[1]}]"
            return getattr(self.target, "__name__", str(self.target))
        return str(self.target)

    @property
    def family(self) -> str:
        return self.rule.family if self.rule is not None else self.op

    def is_live_arg(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.live_inputs

    def live_operand_count(self, first: int) -> int:
        """How many of the first ``first`` positional operands depend on the input."""
        args = self.fx_node.args
        if self.target is select_output:
            args = args[2:]
        return sum(self.is_live_arg(a) for a in args[:first])

    @property
    def operands(self) -> tuple[Any, ...]:
        """Positional operands as the operator sees them (select_output's own two dropped)."""
        args = self.fx_node.args
        return tuple(args[2:]) if self.target is select_output else tuple(args)


class OperatorGraph:
    """A traced, in-place-free copy of a model, with each node's liveness.

    ``example`` (a batch of inputs) traces with concrete shapes (see ``trace.tracer``); without
    one, the model is traced symbolically and ``NeedsConcreteShapes`` says when that is not
    enough. Rules are given to the live nodes afterwards by a rule set (``RuleSet.bind``).
    """

    def __init__(self, model: nn.Module, hooks: GraphHooks, composites: Composites,
                 example: torch.Tensor | None = None):
        if not isinstance(model, nn.Module):
            raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
        module = copy.deepcopy(model)
        module.eval()
        for sub in module.modules():
            if getattr(sub, "inplace", False) is True:
                sub.inplace = False
        tracer = ModelTracer(hooks, composites, example)
        graph = _trace(tracer, module, type(model).__name__)
        _rewrite_inplace(graph)
        self.concrete = example is not None
        self.module = fx.GraphModule(module, graph)
        self.module.eval()
        self.module_outputs = tracer.module_outputs
        self._modules = dict(self.module.named_modules())
        self._synapses: tuple[tuple[Any, ...], dict[str, torch.Tensor]] | None = None
        self._check_signature()
        self._build(hooks)
        if self._split_several_outputs(hooks):
            self.module.recompile()
            self._build(hooks)
        #: where each live node's samples are, and one sample's shape (known when tracing
        #: with concrete shapes, else from the first input: forward.recorder.learn_layouts)
        self.layouts: dict[str, BatchLayout] | None = None
        self.sample_shapes: dict[str, tuple[int, ...]] = {}
        if self.concrete:
            self.set_layouts(*({n.name: v[w] for n, v in tracer.values.items()} for w in (0, 1)))

    def set_layouts(self, two: dict[str, Any], three: dict[str, Any]) -> None:
        """Layouts from every node's values in runs with 2 and 3 samples."""
        self.layouts, self.sample_shapes = layouts_from_values(self, two, three)

    def _check_signature(self) -> None:
        graph = self.module.graph
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise TraceError(
                f"the model's forward() takes {len(placeholders)} inputs; nnslicer slices models "
                "with exactly one input tensor: wrap the model so that forward(x) takes one"
            )
        out_arg = next(n for n in graph.nodes if n.op == "output").args[0]
        if not isinstance(out_arg, fx.Node):
            raise TraceError(
                "the model returns a tuple/dict; nnslicer needs forward(x) to return one tensor of "
                "class scores: wrap the model so it returns that tensor"
            )
        self.input_name = placeholders[0].name
        self.output_name = out_arg.name

    def _build(self, hooks: GraphHooks) -> None:
        self.nodes: list[OpNode] = []
        live: set[str] = set()
        for n in self.module.graph.nodes:
            if n.op == "output":
                continue
            is_module = n.op == "call_module"
            node = OpNode(
                name=n.name, fx_node=n, op=n.op, target=n.target, live=False,
                module=self._modules.get(n.target) if is_module else None,
                module_path=n.target if is_module else _scope(n),
                live_inputs=[a.name for a in n.all_input_nodes if a.name in live],
            )
            if n.op == "placeholder":
                node.live = True
            elif node.live_inputs and not hooks.is_constant(node):
                node.live = True
            if node.live:
                live.add(n.name)
            self.nodes.append(node)
        self.by_name = {n.name: n for n in self.nodes}

    def _split_several_outputs(self, hooks: GraphHooks) -> bool:
        """Rewrite each used item of a multi-tensor operator into its own node."""
        changed = False
        graph = self.module.graph
        for node in self.nodes:
            if not node.live or node.op not in ("call_function", "call_method"):
                continue
            if not hooks.several_outputs(node):
                continue
            users = list(node.fx_node.users)
            items = [_item_index(u) for u in users]
            if not users or any(i is None for i in items):
                continue  # used as a whole: the rule set refuses it when binding
            fn = _as_method(node.target)
            for user, index in zip(users, items, strict=True):
                user.target = select_output
                user.args = (fn, index, *node.fx_node.args)
                user.kwargs = dict(node.fx_node.kwargs)
            graph.erase_node(node.fx_node)
            changed = True
        return changed

    def feeds_only_output(self, name: str) -> bool:
        """True when the node's value is what the model returns (e.g. a final softmax)."""
        return name == self.output_name

    def live_nodes(self) -> list[OpNode]:
        return [n for n in self.nodes if n.live]

    def synapse_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters that carry synapses: the weights used by weighted-sum rules (kept while
        the nodes keep their rules: every slice asks, and walking the modules took longer
        than a small model's inference). Do not modify the dict."""
        rules = tuple(node.rule for node in self.nodes)
        if self._synapses is not None and self._synapses[0] == rules:
            return self._synapses[1]
        params = dict(self.module.named_parameters())
        names: dict[str, torch.Tensor] = {}
        for node in self.nodes:
            if node.rule is not None:
                for pname in node.rule.synapse_names(node):
                    if pname in params:  # a constant operand may be a buffer: no synapses
                        names[pname] = params[pname]
        self._synapses = rules, names
        return names

    def parameter_of(self, node: Any) -> tuple[str, torch.Tensor] | None:
        """The named parameter a get_attr node reads, if it is one."""
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return None
        params = dict(self.module.named_parameters())
        if node.target in params:
            return node.target, params[node.target]
        return None

    def resolve(self, name: str) -> OpNode:
        """The live node named ``name``, or the one the module of that qualified name returns.

        InputError when it names no live node, or a module that produced several (a module
        used more than once)."""
        node = self.by_name.get(name)
        if node is not None and node.live:
            return node
        produced = [n for n in self.module_outputs.get(name, ())
                    if n in self.by_name and self.by_name[n].live]
        if len(produced) == 1:
            return self.by_name[produced[0]]
        if len(produced) > 1:
            raise InputError(
                f"module '{name}' produced several nodes {produced} (it is used more than once);"
                " name one of them"
            )
        live = [n.name for n in self.nodes if n.live]
        raise InputError(
            f"no live node or module named '{name}'; slicer.nodes() lists them (e.g. "
            f"{live[:6]})"
        )


def _as_method(fn: Any) -> Any:
    """``torch.chunk`` -> ``"chunk"``: the generated code of a graph can name a method in a
    node's arguments, not a function object."""
    name = getattr(fn, "__name__", None)
    if isinstance(fn, str) or name is None or not hasattr(torch.Tensor, name):
        return fn
    return name


def _scope(n: fx.Node) -> str | None:
    stack = n.meta.get("nn_module_stack")
    if not stack:
        return None
    return list(stack.values())[-1][0] or None


def _item_index(user: fx.Node) -> int | None:
    if user.op != "call_function" or len(user.args) != 2:
        return None
    key = user.args[1]
    if user.target is operator.getitem and isinstance(key, int) and key >= 0:
        return key
    if user.target is getattr and key in ("values", "indices"):
        return 0 if key == "values" else 1
    return None


def _trace(tracer: ModelTracer, module: nn.Module, model_name: str) -> fx.Graph:
    try:
        return tracer.trace_model(module)
    except NNSlicerError as exc:
        where = user_location(exc)
        if isinstance(exc, NeedsConcreteShapes):
            raise NeedsConcreteShapes(f"{exc} at {where or 'an unknown place'}") from exc
        if where and where not in str(exc):
            raise type(exc)(f"{exc} (at {where})") from exc
        raise
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = user_location(exc)
        if not tracer.concrete:  # e.g. a traced size used as a slice bound or by math.ceil
            raise NeedsConcreteShapes(f"{msg} at {where or 'an unknown place'}") from exc
        raise TraceError(
            f"cannot trace {model_name} with torch.fx ({msg})"
            + (f" at {where}" if where else "")
            + "; remove data-dependent control flow from forward(), or make that part a leaf "
            "module and register a rule for it (docs/rules.md)"
        ) from exc


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
