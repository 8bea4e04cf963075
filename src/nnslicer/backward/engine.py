"""Backward analysis (docs/spec.md §4): propagate contributions from the criterion to the
input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..criterion import Outputs
from ..trace.graph import OperatorGraph
from ..trace.layout import STANDARD, BatchLayout
from . import kernels
from .policy import SelectionPolicy
from .step import Step

#: node name -> its reference value per point as (1 or batch, *one sample's shape); None: 0.
ReferenceFn = Callable[[str], Tensor | None]


class BackwardState:
    """Contributions of one batch chunk while the backward pass runs."""

    def __init__(self, graph: OperatorGraph, values: dict[str, Any], reference: ReferenceFn,
                 policy: SelectionPolicy, per_sample: bool, batch: int,
                 wanted: frozenset[str] | None = None):
        self.graph = graph
        self.values = values
        self.reference = reference
        self.policy = policy
        self.per_sample = per_sample
        self.batch = batch
        self.wanted = wanted  # synapse tensors to return; None: all
        self.live = {n.name for n in graph.live_nodes()}
        self.layouts = graph.layouts or {}
        self.contribs: dict[str, Tensor] = {}
        self.synapses: dict[str, Tensor] = {}
        self._references: dict[str, Tensor] = {}
        self._deltas: dict[str, Tensor] = {}
        self._summed: set[str] = set()  # nodes whose held contribution the engine allocated

    def layout(self, name: str) -> BatchLayout:
        return self.layouts.get(name, STANDARD)

    def reference_value(self, name: str) -> Tensor:
        if name not in self._references:
            value = self.values[name]
            ref = self.reference(name)
            if ref is None:
                ref = torch.zeros((), dtype=torch.float64, device=value.device)
            else:
                ref = self.layout(name).broadcast(ref.to(value.device), self.batch)
            self._references[name] = ref
        return self._references[name]

    def delta(self, name: str) -> Tensor:
        if name not in self._deltas:
            value = self.values[name].detach()
            ref = self.reference_value(name)
            if _fused_delta(value, ref):
                d = torch.from_numpy(kernels.delta(
                    value.contiguous().view(value.shape[0], -1).numpy(),
                    ref.contiguous().view(ref.shape[0], -1).numpy())).view(value.shape)
            else:
                value = value.to(torch.float64)
                d = value - ref
                if d.isnan().any():  # -inf - (-inf) where a mask fills the same points always
                    d = torch.where(value == ref, 0.0, d)
            self._deltas[name] = d
        return self._deltas[name]

    def add_contrib(self, name: str, contrib: Tensor) -> None:
        """Add a rule's contribution to a node. The first one is kept as it is (no copy: rules
        send tensors they do not touch again, and may send one tensor to several operands), so
        only a sum the engine made itself is ever added to in place."""
        held = self.contribs.get(name)
        if held is None:
            self.contribs[name] = contrib
        elif name in self._summed:
            held += contrib
        else:
            self.contribs[name] = held + contrib
            self._summed.add(name)

    def per_sample_synapses(self, name: str) -> bool:
        """Whether this weight's synapses are kept per sample (only the wanted ones are: a
        per-sample buffer holds batch × weight-size counters)."""
        return self.per_sample and (self.wanted is None or name in self.wanted)

    def synapse_buffer(self, name: str, shape: torch.Size, batch: int) -> Tensor:
        if name not in self.synapses:
            full = (batch, *shape) if self.per_sample_synapses(name) else tuple(shape)
            device = self.values[self.graph.output_name].device
            self.synapses[name] = torch.zeros(full, dtype=torch.int64, device=device)
        return self.synapses[name]

    def forget(self, name: str) -> None:
        self._deltas.pop(name, None)
        self._references.pop(name, None)


def _any_nonzero(c: Tensor) -> bool:
    if kernels.ENABLED and c.device.type == "cpu" and c.dim() > 0:
        return kernels.any_nonzero(c.numpy())
    return bool(c.any())


def _fused_delta(value: Tensor, ref: Tensor) -> bool:
    """Whether Δ = value − ref runs in one numba pass (CPU, ref of one sample or per sample);
    torch makes four (convert, subtract, NaN test, any)."""
    return (kernels.ENABLED and value.device.type == "cpu" and value.dim() > 0
            and value.dtype in (torch.float32, torch.float64) and ref.dtype == torch.float64
            and ref.dim() == value.dim() and ref.shape[0] in (1, value.shape[0])
            and ref.shape[1:] == value.shape[1:] and value.numel() > 0)


def run_backward(graph: OperatorGraph, values: dict[str, Any], seeds: dict[str, Tensor],
                 reference: ReferenceFn, policy: SelectionPolicy, per_sample: bool,
                 batch: int, outputs: Outputs = Outputs()
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Contributions of every live node and every synapse (``outputs`` says which) for one
    batch chunk of ``batch`` samples. ``seeds``: C of the criterion's node(s), in their layout.

    Returns point-level neuron contributions, (batch, *sample shape) when per_sample, else
    summed over the batch (without ``outputs.neurons``, only of the nodes at or downstream of
    a wanted weight, which are complete), and synapse contributions (same convention).
    """
    wanted = outputs.synapses
    state = BackwardState(graph, values, reference, policy, per_sample, batch, wanted)
    needed = None if outputs.neurons else _below_wanted(graph, wanted)
    for name, seed in seeds.items():
        state.contribs[name] = seed.to(torch.int64)
    neurons: dict[str, Tensor] = {}
    for node in reversed(graph.nodes):
        value = values.get(node.name)
        if not node.live or not isinstance(value, Tensor):
            continue
        # every consumer is done, so C of this node is final
        c = state.contribs.pop(node.name, None)
        if needed is not None and node.name not in needed:
            state.forget(node.name)
            continue
        if c is None:
            c = torch.zeros(value.shape, dtype=torch.int64, device=value.device)
        elif node.rule is not None and _any_nonzero(c):
            node.rule.backward(Step(state, node, c))
        c = state.layout(node.name).samples_first(c, batch)
        neurons[node.name] = c if per_sample else c.sum(0)
        state.forget(node.name)
    neurons = {n.name: neurons[n.name] for n in graph.nodes if n.name in neurons}
    synapses = {
        name: state.synapse_buffer(name, param.shape, batch)  # zeros if never reached
        for name, param in graph.synapse_parameters().items()
        if wanted is None or name in wanted
    }
    return neurons, synapses


def _below_wanted(graph: OperatorGraph, wanted: frozenset[str] | None) -> set[str]:
    """Nodes whose rule must run for the wanted synapses: those with a wanted weight at or
    upstream of them (contributions reach a weight only through the nodes downstream of it)."""
    needed: set[str] = set()
    for node in graph.nodes:
        names = node.rule.synapse_names(node) if node.rule is not None else []
        if any(wanted is None or n in wanted for n in names) or any(
                a.name in needed for a in node.fx_node.all_input_nodes):
            needed.add(node.name)
    return needed
