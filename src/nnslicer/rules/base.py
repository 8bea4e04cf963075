"""What a slicing rule is, and the helpers rules share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from ..errors import UnsupportedOperation

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode

#: Most float64 terms materialised at once by a weighted-sum rule (bounds memory per chunk).
TERM_BUDGET = 1 << 22


class Rule:
    """Passes contributions from a node's output points to its inputs (and synapses).

    Subclasses set ``family`` and implement ``backward``; ``check`` rejects configurations the
    rule cannot slice exactly, at trace time, so a bad model fails before any work is done.
    ``channels`` says how the operator treats the channels of a feature map (what pruning needs
    to know): ``"produces"`` new ones from its weight, ``"passes"`` each channel to the same
    channel, ``"joins"`` its operands' channels into one space, or ``"pins"`` them (anything
    else: the channels cannot be dropped through it).
    """

    family: ClassVar[str] = "rule"
    channels: ClassVar[str] = "pins"
    #: the node's value carries no activation (shape queries, ``zeros_like``, indices)
    constant: ClassVar[bool] = False

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        """Raise UnsupportedOperation if this node's configuration is outside the rule."""

    def several_outputs(self, node: OpNode) -> bool:
        """Whether the node returns several tensors (their items become nodes of their own)."""
        return False

    def synapse_names(self, node: OpNode) -> list[str]:
        """Parameter names whose elements are synapses of this node."""
        return []

    def backward(self, step: Step) -> None:
        raise NotImplementedError


def unsupported(node: OpNode, reason: str) -> UnsupportedOperation:
    """The one-line refusal: the node, its module, its operator, where and what to do."""
    where = f" in module '{node.module_path}'" if node.module_path else ""
    line = _user_line(node)
    return UnsupportedOperation(
        f"node '{node.name}' ({node.kind}){where}{line} cannot be sliced: {reason}; give it a "
        "rule: nnslicer.register_rule(<module class | function | method name>, rule), or "
        "Slicer(model, rules=nnslicer.default_rules().with_rule(...)) (docs/rules.md)"
    )


def _user_line(node: OpNode) -> str:
    from ..trace.tracer import location_in_stack_trace

    where = location_in_stack_trace(node.fx_node.stack_trace)
    return f" (at {where})" if where else ""


def live_point_chunks(c3: Tensor, width: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Yield (b, i, j, sign of C) for the points of a (B, I, J) contribution map with C != 0.

    Chunks hold at most TERM_BUDGET terms of ``width`` edges each.
    """
    nz = c3.nonzero()
    step = max(1, TERM_BUDGET // max(width, 1))
    for start in range(0, nz.shape[0], step):
        b, i, j = nz[start : start + step].unbind(1)
        yield b, i, j, c3[b, i, j].sign()


def sum_to_shape(t: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum a tensor down to ``shape`` (the vjp of expand)."""
    if t.shape == shape:
        return t
    return t.sum_to_size(shape)


def pool_dims(step: Step) -> int:
    """How many trailing dims a pooling node pools over: 1 for the *1d forms, else 2 (any
    leading dims — samples, channels, or none for an unbatched 3-D input — are rows)."""
    if step.module is not None:
        return 1 if type(step.module).__name__.endswith("1d") else 2
    return 1 if step.node.target.__name__.endswith("1d") else 2


#: operators that only rearrange a parameter's elements (a weight used transposed or sliced)
_VIEW_METHODS = {"t", "transpose", "permute", "view", "reshape", "contiguous", "flatten",
                 "unflatten", "squeeze", "unsqueeze", "expand", "detach", "float", "double",
                 "chunk", "split", "unbind", "tensor_split", "narrow", "select", "repeat",
                 "tile", "expand_as", "flip", "roll"}
# cat / stack of one parameter with itself (its only input node): each element used k times,
# so the vector-Jacobian product adds the k counts up (docs/spec.md §8 "repeats add up")
_VIEW_FUNCTIONS = {torch.t, torch.transpose, torch.permute, torch.reshape, torch.flatten,
                   torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind,
                   torch.tensor_split, torch.narrow, torch.select, torch.cat, torch.stack,
                   torch.tile, torch.flip, torch.roll}


def parameter_view(arg: object) -> list[object] | None:
    """The chain [get_attr, op, op, …, arg] when ``arg`` is a parameter (or buffer) seen
    through operators that only rearrange or repeat its elements (``W.t()``, ``W.T``,
    ``W[:k]``, ``W.view(...)``, ``W.repeat(2, 1)``, ``torch.cat([W, W])``); None otherwise."""
    import operator

    import torch.fx as fx

    chain = []
    node = arg
    while isinstance(node, fx.Node):
        chain.append(node)
        if node.op == "get_attr":
            return chain[::-1]
        inputs = node.all_input_nodes
        viewing = (
            (node.op == "call_method" and node.target in _VIEW_METHODS)
            or (node.op == "call_function" and node.target in _VIEW_FUNCTIONS)
            or (node.op == "call_function" and node.target is operator.getitem)
            or (node.op == "call_function" and node.target is getattr
                and node.args[1] in ("T", "mT"))
        )
        if not viewing or len(inputs) != 1:
            return None
        node = inputs[0]
    return None
