"""Channel spaces of a model, read off the engine's operator graph (what pruning and export need).

Every live node's rule says how its operator treats the channels of a feature map
(``Rule.channels``, docs/rules.md): a conv or linear layer *produces* new channels from its
weight; BatchNorm, element-wise functions, constant scales, pools, dropout and interpolation
*pass* each channel on to the same channel; tensor ± tensor *joins* its operands' channels; any
other operator *pins* them. A *channel space* is what must lose a channel together: a layer's
output and what passes it on, up to the layers that read it; a join ties its operands' spaces
into one (a residual stream is one space with many producers). The channels of a space that
the model input writes, or that an operator pinning them reads or writes, are fixed.

The layers pruning works on are the producers whose synapses are a module's ``weight``, one
row per output channel, with a ``bias`` (or None) of one entry per channel: Conv1d/Conv2d and
Linear. Other producers (embeddings, functional forms, the gate sums of recurrent layers) are
not rewritten by pruning, so their channels are fixed like a pinned operator's.

With an example input the analysis also runs the model once and re-runs single operators on
probes, to learn what no rule declares:

* which rearrangement flattens a (C, *spatial) map into C blocks of positions, as in front of a
  linear layer: the operator moves an index tensor exactly as ``reshape(batch, -1)`` does;
* which channels each channel-passing operator maps from zeros to zeros (all of them for ReLU
  or a pool, none for a sigmoid, those whose shift is 0 for a BatchNorm): what dead-channel
  export and mean compensation rely on (``ChannelGraph.keeps_zero``).

Without one, rearrangements pin and no channel is known to stay zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.fx as fx
from torch import Tensor, nn

from nnslicer.errors import InputError
from nnslicer.forward.recorder import record_values
from nnslicer.slicer import Slicer
from nnslicer.trace.graph import OperatorGraph, OpNode
from nnslicer.trace.layout import example_batches

#: the channel-passing modules pruning rewrites with their channels: zeroed with a removed
#: neuron, given its mean shift, resized on export (their statistics and affine parameters
#: have one entry per channel)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class ChannelGroup:
    """One channel space: who writes it, who reads it, what passes it on."""

    channels: int | None
    producers: list[str] = field(default_factory=list)  # layer paths
    #: (layer path, positions per channel): 1 for a conv, H*W for a linear after flatten
    consumers: list[tuple[str, int]] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)  # BatchNorm module paths acting on it
    #: the channel-passing operators on it: node name -> module path (None for a function)
    passes: dict[str, str | None] = field(default_factory=dict)
    fixed_source: str | None = None  # something other than a layer writes it (model input...)
    fixed_use: str | None = None  # something other than a layer reads it (model output...)


@dataclass
class ChannelGraph:
    """Result of :func:`analyze_channels`."""

    layers: dict[str, nn.Module]  # conv/linear layers by module path, in execution order
    groups: list[ChannelGroup]
    output_group: dict[str, int]  # layer path -> group of its output channels
    input_group: dict[str, int]  # layer path -> group it reads
    input_positions: dict[str, int]  # layer path -> input features per channel
    #: layer path -> the node it reads: its profile mean is the layer's mean input
    input_node: dict[str, str]
    direct_norm: dict[str, str]  # layer path -> BatchNorm applied right after it
    classifier: str | None  # the layer whose output is the model output
    problems: list[str]  # why the graph cannot be exported (empty when it can)
    operators: OperatorGraph  # the engine's graph the analysis read
    #: channel-passing node -> per channel of its space, whether zeros in give zeros out;
    #: None when analysed without an example input (then no channel is known to stay zero)
    keeps_zero: dict[str, Tensor] | None = None

    @property
    def num_outputs(self) -> int:
        """Output channels of the classifier: the number of classes."""
        if self.classifier is None:
            raise InputError("the model has no conv or linear layer to prune")
        return int(self.layers[self.classifier].weight.shape[0])

    def stays_zero(self, name: str, channels: int) -> Tensor:
        """Per channel, whether the channel-passing node ``name`` maps zeros to zeros (False
        where that is not known)."""
        known = (self.keeps_zero or {}).get(name)
        return known if known is not None else torch.zeros(channels, dtype=torch.bool)


def quiet_slicer(model: nn.Module) -> Slicer:
    """A Slicer used for the model's structure or its means, not for slices: it reads an
    eval-mode copy, which is what pruning wants, so the training-mode warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the model is in training mode", UserWarning)
        return Slicer(model)


def analyze_channels(model: nn.Module, example: Tensor | None = None, *,
                     slicer: Slicer | None = None) -> ChannelGraph:
    """Group the model's tensors into channel spaces (see the module docstring).

    ``example``: a batch of real inputs (one sample is used) to run the probes on; ``slicer``:
    a Slicer of ``model`` whose traced graph to read instead of tracing it again.
    """
    slicer = slicer if slicer is not None else quiet_slicer(model)
    if example is None:
        try:
            operators = slicer.graph
        except InputError as exc:  # traced with the shapes of its first input: none yet
            raise InputError(f"{type(model).__name__} is traced with the shapes of an input "
                             "(its forward reads shapes or holds recurrent layers): give the "
                             "channel analysis an example input (pruning and protection: "
                             "data=...)") from exc
        return _Analysis(model, operators, None).result()
    operators = slicer.ready(example)
    values = record_values(operators, example_batches(example)[0])
    return _Analysis(model, operators, values).result()


class _Place(NamedTuple):
    """Where a tensor's channels are: its space, positions per channel (1: each channel is a
    dim entry, P: a flattened map's block of P features) and the channel dim (1 for a conv's
    (B, C, ...) map, -1 for a linear layer's features; None: not known)."""

    space: int
    positions: int
    dim: int | None


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, channels: int | None) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(channels))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def group(self, i: int) -> ChannelGroup:
        return self.groups[self.find(i)]

    def union(self, a: int, b: int) -> str | None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.channels is not None and gb.channels is not None and ga.channels != gb.channels:
            return f"an add joins {ga.channels} and {gb.channels} channels"
        self.parent[rb] = ra
        ga.channels = ga.channels if ga.channels is not None else gb.channels
        ga.producers += gb.producers
        ga.consumers += gb.consumers
        ga.norms += gb.norms
        ga.passes.update(gb.passes)
        ga.fixed_source = ga.fixed_source or gb.fixed_source
        ga.fixed_use = ga.fixed_use or gb.fixed_use
        return None


class _Analysis:
    """One walk over the live nodes in execution order, each handled by its rule's channels."""

    def __init__(self, model: nn.Module, operators: OperatorGraph,
                 values: Mapping[str, Any] | None):
        self.model = model
        self.operators = operators
        self.values = values  # every node's value for the example batch (None: no example)
        self.spaces = _Spaces()
        self.at: dict[str, _Place] = {}
        self.layers: dict[str, nn.Module] = {}
        self.output_group: dict[str, int] = {}
        self.input_group: dict[str, int] = {}
        self.input_positions: dict[str, int] = {}
        self.input_node: dict[str, str] = {}
        self.direct_norm: dict[str, str] = {}
        self.layer_of_node: dict[str, str] = {}
        self.problems: list[str] = []
        self.keeps_zero: dict[str, Tensor] | None = None if values is None else {}
        self._modules_called: set[str] = set()

    def result(self) -> ChannelGraph:
        handlers = {"produces": self.layer, "passes": self.passes, "joins": self.join,
                    "pins": self.flatten}
        for node in self.operators.live_nodes():
            if node.op == "placeholder":
                self.fixed_output(node, "model input")
                continue
            handler = handlers.get(node.rule.channels)
            if handler is None or not handler(node):
                self.pin(node)
        out = self.at.get(self.operators.output_name)
        if out is not None:
            self.spaces.group(out.space).fixed_use = "model output"
        roots: dict[int, int] = {}
        groups: list[ChannelGroup] = []
        for sid in range(len(self.spaces.parent)):
            if self.spaces.find(sid) == sid:
                roots[sid] = len(groups)
                groups.append(self.spaces.groups[sid])

        def index(sid: int) -> int:
            return roots[self.spaces.find(sid)]

        classifier = self.layer_of_node.get(self.operators.output_name)
        if classifier is None and self.layers:
            classifier = list(self.layers)[-1]
        return ChannelGraph(
            layers=self.layers,
            groups=groups,
            output_group={k: index(v) for k, v in self.output_group.items()},
            input_group={k: index(v) for k, v in self.input_group.items()},
            input_positions=self.input_positions,
            input_node=self.input_node,
            direct_norm=self.direct_norm,
            classifier=classifier,
            problems=self.problems,
            operators=self.operators,
            keeps_zero=self.keeps_zero,
        )

    # ------------------------------------------------------------------ one node each
    def fixed_output(self, node: OpNode, why: str) -> None:
        sid = self.spaces.new(None)
        self.spaces.groups[sid].fixed_source = why
        self.at[node.name] = _Place(sid, 1, None)

    def pin(self, node: OpNode) -> None:
        why = f"node '{node.name}'"
        for name in node.live_inputs:
            if name in self.at:
                self.spaces.group(self.at[name].space).fixed_use = why
        self.fixed_output(node, why)

    def single_input(self, node: OpNode) -> _Place | None:
        return self.at.get(node.live_inputs[0]) if len(node.live_inputs) == 1 else None

    def called_once(self, node: OpNode) -> None:
        if node.module_path in self._modules_called:
            self.problems.append(f"module '{node.module_path}' is called more than once")
        self._modules_called.add(node.module_path)

    def layer(self, node: OpNode) -> bool:
        """A conv/linear layer reads its input space and produces a new one."""
        m, path, place = node.module, node.module_path, self.single_input(node)
        if m is None or place is None or not hasattr(m, "bias") or \
                node.rule.synapse_names(node) != [f"{path}.weight"]:
            return False  # a producer pruning does not rewrite: its channels are fixed
        self.called_once(node)
        w = m.weight
        dense = w.dim() == 2  # a linear layer reads the last dim, a conv dim 1
        groups = 1 if dense else getattr(m, "groups", 1)
        in_ch = w.shape[1] * groups
        g = self.spaces.group(place.space)
        positions = place.positions
        if positions != 1 and not dense:
            self.problems.append(f"conv '{path}' reads a flattened tensor")
        elif positions != 1 and g.channels and positions * g.channels != in_ch:
            self.problems.append(f"'{path}' reads {in_ch} features from a flattened map of "
                                 f"{g.channels} channels")
        if positions == 1 and g.channels and (g.channels != in_ch or not self.reads_channels(
                node, place, -1 if dense else 1)):
            self.problems.append(f"'{path}' reads {in_ch} features from a tensor of "
                                 f"{g.channels} channels (not along the channel dim)")
        if groups != 1:
            self.problems.append(f"conv '{path}' has groups={groups} (only groups=1)")
        if g.channels is None and g.fixed_source:
            g.channels = in_ch if positions == 1 else None
        g.consumers.append((path, positions))
        sid = self.spaces.new(int(w.shape[0]))
        self.spaces.groups[sid].producers.append(path)
        self.at[node.name] = _Place(sid, 1, -1 if dense else 1)
        self.layers[path] = self.model.get_submodule(path)
        self.layer_of_node[node.name] = path
        self.output_group[path] = sid
        self.input_group[path] = place.space
        self.input_positions[path] = positions
        self.input_node[path] = node.live_inputs[0]
        return True

    def passes(self, node: OpNode) -> bool:
        """Each channel goes on to the same channel: the output stays in the input's space."""
        place = self.single_input(node)
        if place is None or not self.keeps_layout(node, place):
            return False
        g = self.spaces.group(place.space)
        g.passes[node.name] = node.module_path if node.op == "call_module" else None
        if isinstance(node.module, BATCH_NORMS):
            self.called_once(node)
            g.norms.append(node.module_path)
            if g.channels and node.module.num_features != g.channels:
                self.problems.append(f"BatchNorm '{node.module_path}' normalises "
                                     f"{node.module.num_features} features of a space of "
                                     f"{g.channels} channels")
            source = self.operators.by_name[node.live_inputs[0]].fx_node
            if source.name in self.layer_of_node and len(source.users) == 1:
                self.direct_norm[self.layer_of_node[source.name]] = node.module_path
        elif self.values is not None and self.holds_tensors(node):
            self.problems.append(f"'{node.name}' ({node.kind}) holds per-channel values that "
                                 "export cannot shrink")
        if self.keeps_zero is not None and g.channels:
            kept = self.zero_channels(node, place, g.channels)
            if kept is not None:
                self.keeps_zero[node.name] = kept
        self.at[node.name] = place
        return True

    def join(self, node: OpNode) -> bool:
        """tensor ± tensor: one space for both operands (x ± constant pins)."""
        if len(node.live_inputs) != 2:
            return False
        a, b = (self.at.get(name) for name in node.live_inputs)
        if a is None or b is None or (a.positions, a.dim) != (b.positions, b.dim) or \
                not self.keeps_layout(node, a):
            return False
        error = self.spaces.union(a.space, b.space)
        if error:
            self.problems.append(f"'{node.name}': {error}")
        self.at[node.name] = a
        return True

    def flatten(self, node: OpNode) -> bool:
        """A rearrangement that flattens a (B, C, *spatial) map into (B, C·positions)."""
        place = self.single_input(node)
        if self.values is None or place is None or place.positions != 1 or place.dim == -1:
            return False
        name = node.live_inputs[0]
        x, y = self.values[name], self.values[node.name]
        if not (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dim() >= 3
                and self.standard(name) and self.standard(node.name)
                and tuple(y.shape) == (x.shape[0], x[0].numel())):
            return False
        index = torch.arange(x.numel(), dtype=torch.float64).view(x.shape)
        try:
            moved = _rerun(node, self.values, {name: index})
        except Exception:  # an operator that cannot move the probe does not flatten
            return False
        if not isinstance(moved, Tensor) or not torch.equal(moved, index.reshape(x.shape[0], -1)):
            return False
        self.at[node.name] = _Place(place.space, x[0, 0].numel(), -1)
        return True

    # ------------------------------------------------------- what the example tells
    def standard(self, name: str) -> bool:
        """The node's samples are along dim 0 (the layout the channel dims assume)."""
        layouts = self.operators.layouts
        return layouts is None or name not in layouts or layouts[name].standard

    def keeps_layout(self, node: OpNode, place: _Place) -> bool:
        """With an example: the output has the input's rank and channel-dim size, and both
        keep their samples along dim 0 (a pool over a linear layer's features does not)."""
        if self.values is None or place.dim is None:
            return True
        x, y = self.values[node.live_inputs[0]], self.values[node.name]
        return (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dim() == y.dim()
                and x.shape[place.dim] == y.shape[place.dim]
                and self.standard(node.live_inputs[0]) and self.standard(node.name))

    def reads_channels(self, node: OpNode, place: _Place, dim: int) -> bool:
        """With an example: a layer reading along ``dim`` reads its input's channel dim."""
        if self.values is None or place.dim is None:
            return True
        x = self.values[node.live_inputs[0]]
        return place.dim == dim or x.dim() == 2

    def zero_channels(self, node: OpNode, place: _Place, channels: int) -> Tensor | None:
        """Per channel, whether the operator maps a zero input to zeros there."""
        zeros = {name: torch.zeros_like(self.values[name]) for name in node.live_inputs}
        try:
            out = _rerun(node, self.values, zeros)
        except Exception:  # an operator that refuses the probe is not known to keep zeros
            return None
        if not isinstance(out, Tensor) or place.dim is None:
            return None
        v = out.movedim(place.dim, -1)
        if v.shape[-1] != channels * place.positions:
            return None
        return (v.reshape(-1, channels, place.positions) == 0).all(2).all(0)

    def holds_tensors(self, node: OpNode) -> bool:
        """The operator holds tensors of more than one value besides its input (a PReLU's
        per-channel slopes, ``x * scale`` with a per-channel scale)."""
        held = list(node.module.parameters()) + list(node.module.buffers()) \
            if node.module is not None else []
        held += [self.values[a.name] for a in node.fx_node.all_input_nodes
                 if a.name not in node.live_inputs]
        return any(isinstance(t, Tensor) and t.numel() > 1 for t in held)


def _rerun(node: OpNode, values: Mapping[str, Any], replace: Mapping[str, Tensor]) -> Any:
    """The node's operator on the recorded values, some inputs replaced (like ``Step.call``)."""

    def value(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return replace[a.name] if a.name in replace else values[a.name]
        return a

    args = fx.node.map_aggregate(node.fx_node.args, value)
    kwargs = fx.node.map_aggregate(node.fx_node.kwargs, value)
    with torch.no_grad():
        if node.op == "call_module":
            return node.module(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

